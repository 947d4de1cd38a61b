"""The noise floor of a target on free-text multi-document QA.

For each multi-document QA item (SQuAD passages, see ``benchmarks/bigbench/multidoc.py``) the
target answers the prompt as is and two meaning-preserving variants of it: the documents in
another order, and every document's prose re-wrapped (``promptsieve.fidelity.noise.reflow``).
The share of variant answers that agree with the original one (SQuAD-style answer match,
``promptsieve.fidelity.answer_match``) is the floor no compression can beat; it is reported
with its Wilson 95 % interval (``promptsieve.fidelity.noise_floor``), with the accuracy of the
original answers against gold for context. Calls go through the benchmark's call cache.

    python -m benchmarks.noise_floor --model gemma-3-270m --n 30 \
        --out benchmarks/results/noise_floor-gemma-3-270m.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptsieve.fidelity import TargetOutput, answer_match, noise_floor
from promptsieve.fidelity.noise import reflow

from .bigbench.multidoc import multidoc_raw
from .target import CallCache, CompletionTarget, local_identity, local_target

MAX_TOKENS = 24  # the multidoc suites' answer budget


def _reordered(docs: Sequence[str], rng: random.Random) -> list[str]:
    order = list(range(len(docs)))
    while len(docs) > 1 and order == sorted(order):
        rng.shuffle(order)
    return [docs[i] for i in order]


def measure(target: CompletionTarget, n: int, size: int, seed: int) -> dict[str, Any]:
    """Answers to original / reordered / reflowed prompts of ``n`` items, and the floors."""
    match = answer_match()
    rows: list[dict[str, Any]] = []
    for item in multidoc_raw("test", size, n, seed):
        rng = random.Random(f"noise:{item.id}")
        prompts = {
            "original": item.render().prompt,
            "reorder": item.render(_reordered(item.docs, rng)).prompt,
            "reflow": item.render(
                [reflow(d, width=rng.choice((60, 72, 88))) for d in item.docs]
            ).prompt,
        }
        answers = {
            k: target.complete(p, max_tokens=MAX_TOKENS).text.strip() for k, p in prompts.items()
        }
        orig = TargetOutput(answers["original"])
        gold = TargetOutput(item.answer)
        rows.append(
            {
                "id": item.id,
                "answers": answers,
                "gold": item.answer,
                "correct": {k: match(gold, TargetOutput(a)) for k, a in answers.items()},
                "agree": {k: match(orig, TargetOutput(answers[k])) for k in ("reorder", "reflow")},
            }
        )
    out: dict[str, Any] = {"n": len(rows), "size": size, "seed": seed, "rows": rows}
    for kind in ("reorder", "reflow", "either"):
        if kind == "either":
            agree = sum(r["agree"]["reorder"] and r["agree"]["reflow"] for r in rows)
        else:
            agree = sum(r["agree"][kind] for r in rows)
        f = noise_floor(agree, len(rows), tau=0.9)
        out[f"floor_{kind}"] = {"agree": agree, "n": f.n, "low": f.lower, "high": f.upper}
    for kind in ("original", "reorder", "reflow"):
        k = sum(r["correct"][kind] for r in rows)
        f = noise_floor(k, len(rows))
        out[f"accuracy_{kind}"] = {"correct": k, "n": len(rows), "low": f.lower, "high": f.upper}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gemma-3-270m", help="embedded target (promptsieve.local)")
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--size", type=int, default=1000, help="prompt size in tokens")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    chat = args.model != "gemma-3-270m"  # the Qwen models are instruct models
    with local_target(model=args.model) as (url, model):
        target = CompletionTarget(
            url, model, cache=CallCache(), identity=local_identity(args.model), chat=chat
        )
        res = measure(target, args.n, args.size, args.seed)
        res["new_calls"] = target.calls
    res["model"] = args.model
    res["seconds"] = round(time.perf_counter() - t0, 1)
    for key in ("floor_reorder", "floor_reflow", "floor_either"):
        f = res[key]
        print(f"{key}: {f['agree']}/{f['n']} [{f['low']:.2f}, {f['high']:.2f}]")
    for key in ("accuracy_original", "accuracy_reorder", "accuracy_reflow"):
        a = res[key]
        print(f"{key}: {a['correct']}/{a['n']} [{a['low']:.2f}, {a['high']:.2f}]")
    print(f"{res['new_calls']} new target calls, {res['seconds']} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
