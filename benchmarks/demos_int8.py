"""int8 vs float32 LM proxy: attribution fidelity and cost on the same draws.

For each (task, repeat) draw of :mod:`benchmarks.demos_tasks` (the draws of
``demos_bench``), the demonstrations are attributed twice with :func:`attribute_demos`,
once on the float32 ONNX LM proxy and once on its dynamic-int8 export
(``LMProxyConfig(int8=True)``), with the same method, coalitions (Kernel SHAP: same seed,
so the same coalitions) and validation requests, cache off. Recorded per draw:

- Spearman and Kendall rank correlation of the two Shapley value vectors
  (``scipy.stats.spearmanr`` / ``kendalltau``), whether the least useful demonstration is
  the same, and the overlap of the least-useful halves (what a 50 % removal would drop);
- the largest absolute difference of the values, and of the full-prompt value (nats);
- process CPU seconds (``time.process_time``, all threads) and wall seconds of each run.
  Wall time depends on what else the machine runs; CPU seconds much less.

    python -m benchmarks.demos_int8 --tasks sports_understanding,navigate --method exact
    python -m benchmarks.demos_int8 --method kernel --samples 64

Results: ``results/demos/int8_fidelity.jsonl`` (one line per draw, appended).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from promptsieve.demos import DemoAttributionConfig, LMDemoScorer, attribute_demos

from .demos_tasks import TASKS, draw, fmt_for

RESULTS = Path(__file__).resolve().parent / "results" / "demos"
log = logging.getLogger("benchmarks.demos_int8")


def _timed(scorer: LMDemoScorer, d: Any, cfg: DemoAttributionConfig) -> dict[str, Any]:
    c0, t0 = time.process_time(), time.perf_counter()
    a = attribute_demos(d.demos, d.validation, fmt=fmt_for(TASKS[d.task]), config=cfg,
                        scorer=scorer)  # fmt: skip
    return {
        "values": list(a.values), "full_value": a.full_value, "empty_value": a.empty_value,
        "method": a.method, "coalitions": a.evaluations, "proxy": a.proxy,
        "ranking": a.ranking(),
        "cpu_s": time.process_time() - c0, "seconds": time.perf_counter() - t0,
        "proxy_tokens": a.tokens,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    from scipy.stats import kendalltau, spearmanr

    from promptsieve.proxy.lm import LMProxyConfig

    ap = argparse.ArgumentParser(prog="python -m benchmarks.demos_int8")
    ap.add_argument("--tasks", default="sports_understanding,navigate,snarks,"
                    "logical_deduction_three_objects,causal_judgment")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--demos", type=int, default=8)
    ap.add_argument("--val", type=int, default=3)
    ap.add_argument("--method", default="kernel", choices=("exact", "kernel"))
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "int8_fidelity.jsonl")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    scorers = {
        name: LMDemoScorer(
            config=LMProxyConfig(intra_op_threads=args.threads, int8=int8, batch_size=4)
        )
        for name, int8 in (("fp32", False), ("int8", True))
    }
    cfg = DemoAttributionConfig(
        cache=False, max_validation=args.val, method=args.method, samples=args.samples
    )
    for task in [t for t in args.tasks.split(",") if t]:
        d = draw(task, args.repeat, args.demos, args.val, 1)
        runs = {name: _timed(s, d, cfg) for name, s in scorers.items()}
        p, q = np.asarray(runs["fp32"]["values"]), np.asarray(runs["int8"]["values"])
        half = len(p) // 2
        r32, r8 = runs["fp32"]["ranking"], runs["int8"]["ranking"]
        low_p, low_q = set(r32[:half]), set(r8[:half])
        rec = {
            "task": task, "repeat": args.repeat, "n_demos": len(d.demos),
            "n_val": len(d.validation), "method": args.method,
            "samples": args.samples if args.method == "kernel" else None,
            "threads": args.threads,
            "spearman": float(spearmanr(p, q)[0]), "kendall": float(kendalltau(p, q)[0]),
            "same_least_useful": r32[0] == r8[0],
            "same_ranking": r32 == r8,
            "least_useful_half_overlap": len(low_p & low_q) / half,
            "max_abs_diff": float(np.max(np.abs(p - q))),
            "value_range_fp32": float(p.max() - p.min()),
            "full_value_diff": runs["int8"]["full_value"] - runs["fp32"]["full_value"],
            "runs": runs, "time": time.strftime("%Y-%m-%d %H:%M"),
            "note": "wall seconds measured while other benchmarks shared the 2 cores",
        }  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        log.info(
            "%s: spearman %.3f kendall %.3f same least useful %s; cpu fp32 %.0f s int8 %.0f s",
            task, rec["spearman"], rec["kendall"], rec["same_least_useful"],
            runs["fp32"]["cpu_s"], runs["int8"]["cpu_s"],
        )  # fmt: skip


if __name__ == "__main__":
    main()
