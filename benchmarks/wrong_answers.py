"""Where a method's wrong answers come from, on the items two methods split (multi-document QA).

    python -m benchmarks.wrong_answers benchmarks/results/headline-2k --a coarse --b default \\
        --ratio 0.25 [--suite multidoc_2k]

For every item of a committed suite run (``results.json``) where exactly one of methods A and B
answered correctly at ``ratio``, the item is rebuilt (``benchmarks.bigbench.multidoc_raw``, the
same seeded draw the run used), both compressions are recomputed — or read from the call
cache, where the run stored them under the method's fingerprint — and each method's answer is
located, SQuAD-normalised, as a substring of: the compressed prompt it was given, the gold
passage, the distractor passages. It tells a lost answer (gold not in the compressed prompt)
from a target that read the kept text differently (gold kept, another span of the gold passage
answered) and from a distractor taking over (the answer is in another passage only).
Target-free; no prompt text is written, only the classes and the item ids. Writes
``<run>/wrong-<a>-<b>-<ratio>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from .stats import squad_normalize

__all__ = ["locate", "run"]


def locate(answer: str, kept: str, gold_doc: str, others: list[str]) -> str:
    """Where a (wrong or right) answer is found: ``empty``, ``gold passage`` (and kept),
    ``other passage`` (and kept), ``kept, elsewhere`` (e.g. the question), ``not in prompt``."""
    a = squad_normalize(answer)
    if not a:
        return "empty"
    if a not in squad_normalize(kept):
        return "not in prompt"
    if a in squad_normalize(gold_doc):
        return "gold passage"
    if any(a in squad_normalize(d) for d in others):
        return "other passage"
    return "kept, elsewhere"


def run(path: Path, a: str, b: str, ratio: float, suite: str | None) -> dict[str, Any]:
    from .baselines import build_methods
    from .bigbench.multidoc import multidoc_raw
    from .target import CallCache

    results = json.loads((path / "results.json").read_text())
    rows = [r for r in results["rows"] if suite is None or r["suite"] == suite]
    suites = {r["suite"] for r in rows}
    if len(suites) != 1 or not next(iter(suites)).startswith("multidoc"):
        raise SystemExit(f"give one multi-document suite with --suite (found {sorted(suites)})")
    name = next(iter(suites))
    size = 1000 * int(re.fullmatch(r"multidoc_(\d+)k", name).group(1))  # type: ignore[union-attr]
    by = {(r["method"], r["ratio"], r["item"]): r for r in rows}
    items = sorted({r["item"] for r in rows}, key=lambda i: int(i.rsplit(":", 1)[1]))
    n = 1 + max(int(i.rsplit(":", 1)[1]) for i in items)
    raws = {raw.id: raw for raw in multidoc_raw("test", size, n, 0)}
    built = build_methods([a, b], None, cache=CallCache(None))  # type: ignore[arg-type]
    methods = dict(zip((a, b), built, strict=True))
    split: list[dict[str, Any]] = []
    for item in items:
        ra, rb = by.get((a, ratio, item)), by.get((b, ratio, item))
        if ra is None or rb is None or ra["correct"] == rb["correct"]:
            continue
        raw = raws[item]
        bench_item = raw.render()
        gold_doc = raw.docs[raw.gold_index]
        others = [d for j, d in enumerate(raw.docs) if j != raw.gold_index]
        rec: dict[str, Any] = {"item": item, "right": a if ra["correct"] else b}
        for m, r in ((a, ra), (b, rb)):
            kept = methods[m].timed(bench_item, ratio).prompt
            rec[m] = {
                "correct": bool(r["correct"]),
                "gold kept": squad_normalize(raw.answer) in squad_normalize(kept),
                "answer found in": locate(r["answer"], kept, gold_doc, others),
            }
        split.append(rec)
    out = {"run": str(path), "suite": name, "ratio": ratio, "a": a, "b": b, "items": split}
    stem = f"wrong-{a}-{b}-{ratio}"
    (path / f"{stem}.json").write_text(json.dumps(out, indent=1) + "\n")
    (path / f"{stem}.md").write_text(_markdown(out, len(items)))
    return out


def _markdown(out: dict[str, Any], n_items: int) -> str:
    a, b = out["a"], out["b"]
    lines = [
        f"# Wrong answers on the items {a} and {b} split ({out['suite']}, ratio {out['ratio']})",
        "",
        f"`python -m benchmarks.wrong_answers {out['run']} --a {a} --b {b} --ratio "
        f"{out['ratio']} --suite {out['suite']}` — {len(out['items'])} of {n_items} items "
        "where exactly one method was right.",
        "",
        "| the wrong method | items | gold answer kept | its wrong answer found in |",
        "|---|---:|---:|---|",
    ]
    for wrong, right in ((b, a), (a, b)):
        recs = [r[wrong] for r in out["items"] if r["right"] == right]
        where = Counter(r["answer found in"] for r in recs)
        shown = ", ".join(f"{k} {v}" for k, v in where.most_common()) or "—"
        kept = sum(r["gold kept"] for r in recs)
        lines.append(f"| {wrong} | {len(recs)} | {kept} | {shown} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="a committed bench folder holding results.json")
    ap.add_argument("--a", required=True, help="first method, e.g. coarse")
    ap.add_argument("--b", required=True, help="second method, e.g. default")
    ap.add_argument("--ratio", type=float, required=True)
    ap.add_argument("--suite", default=None)
    args = ap.parse_args(argv)
    if not (args.run / "results.json").is_file():
        print(f"error: no results.json in {args.run}", file=sys.stderr)
        return 2
    run(args.run, args.a, args.b, args.ratio, args.suite)
    print((args.run / f"wrong-{args.a}-{args.b}-{args.ratio}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
