"""Merge suite runs of one target into one report: e.g. ratios 0.5/0.25 and 0.8/0.33.

    python -m benchmarks.merge_runs benchmarks/results/headline \\
        benchmarks/results/headline-ratios --suite multidoc_1k \\
        --out benchmarks/results/headline-ladder

Two runs measure the same thing only when the target answered the same: the merge refuses
runs of different models, and runs whose rows for the same (method, ratio, item) differ in
answer (a different target build or sampling). The uncompressed rows then come from either
run alike. Rows are kept for the items every run covers (``--suite`` restricts to one
suite), so each cell's paired tests compare the same items. The noise floor is the union
of the runs' noise rows (one per item). Screening records are kept with the run they came
from (each screened its own ladder). The report is :func:`benchmarks.suite_report.
write_suite_report`'s, so the statistics are the single runs' (Wilson intervals, McNemar).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .suite_report import write_suite_report

__all__ = ["merge"]

Row = dict[str, Any]


class MergeError(ValueError):
    """The runs cannot be merged (different targets, or different answers to one call)."""


def merge(runs: Sequence[Mapping[str, Any]], *, suite: str | None = None) -> dict[str, Any]:
    """One results mapping from several ``results.json`` mappings of the same target.

    Raises :class:`MergeError` when the models differ, when a (method, ratio, item) has two
    different answers, or when no item is common to all runs.
    """
    models = {run["meta"].get("model") for run in runs}
    if len(models) != 1:
        raise MergeError(f"runs of different targets: {sorted(map(str, models))}")
    keep = [_rows(run, suite) for run in runs]
    common = set.intersection(*({r["item"] for r in rows} for rows in keep))
    if not common:
        raise MergeError("no item is common to all runs")
    merged: dict[tuple[str, float, str], Row] = {}
    for rows in keep:
        for r in rows:
            if r["item"] not in common:
                continue
            key = (r["method"], r["ratio"], r["item"])
            seen = merged.setdefault(key, r)
            if seen.get("answer") != r.get("answer"):
                raise MergeError(
                    f"{key}: answers differ between runs ({seen['answer']!r} vs {r['answer']!r})"
                )
    noise: dict[str, Row] = {}
    for run in runs:
        for n in run.get("noise", []):
            if n["item"] in common:
                noise.setdefault(n["item"], n)
    suites = {
        name: info for name, info in runs[0]["suites"].items() if suite is None or name == suite
    }
    methods: dict[str, Any] = {}
    for run in runs:
        methods.update({m: st for m, st in run.get("methods", {}).items() if st.get("ok")})
    screening = [
        {**rec, "run": run["meta"].get("command", "")}
        for run in runs
        for rec in run.get("screening", [])
        if suite is None or rec.get("suite") == suite
    ]
    meta = dict(runs[0]["meta"])
    meta.update(
        command=" ; ".join(run["meta"].get("command", "") for run in runs),
        merged_from=[run["meta"].get("command", "") for run in runs],
        target_calls=sum(run["meta"].get("target_calls", 0) for run in runs),
        runtime_s=sum(run["meta"].get("runtime_s", 0) for run in runs),
        finished=max(str(run["meta"].get("finished", "")) for run in runs),
        items=len(common),
    )
    return {
        "meta": meta,
        "methods": methods,
        "suites": suites,
        "rows": list(merged.values()),
        "noise": list(noise.values()),
        "screening": screening,
        "screen_plan": runs[0].get("screen_plan", {}),
        "prices": runs[0].get("prices", {}),
    }


def _rows(run: Mapping[str, Any], suite: str | None) -> list[Row]:
    return [r for r in run["rows"] if suite is None or r["suite"] == suite]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="folders holding a results.json")
    ap.add_argument("--suite", default=None, help="keep only this suite")
    ap.add_argument("--out", type=Path, required=True, help="folder for the merged report")
    args = ap.parse_args(argv)
    try:
        runs = [json.loads((d / "results.json").read_text(encoding="utf-8")) for d in args.runs]
        results = merge(runs, suite=args.suite)
    except (OSError, json.JSONDecodeError, KeyError, MergeError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(write_suite_report(results, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
