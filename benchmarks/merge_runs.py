"""Merge suite runs of one target into one report: e.g. ratios 0.5/0.25 and 0.8/0.33.

    python -m benchmarks.merge_runs benchmarks/results/headline \\
        benchmarks/results/headline-ratios --suite multidoc_1k \\
        --drop-differing --out benchmarks/results/headline-ladder

Two runs measure the same thing only when the target answered the same: the merge refuses
runs of different models, and runs whose rows for the same (method, ratio, item) differ in
answer (a different target build or sampling), unless ``--drop-differing`` leaves those
items out (and names them). The uncompressed rows then come from either run alike. Rows are
kept for the items that have a row in every (method, ratio) cell of the runs together
(``--suite`` keeps one suite, ``--ratios`` the uncompressed rows and these ratios,
``--methods`` the uncompressed rows and these methods: e.g. one method run on more items
than the others), so each cell's paired tests compare the same items. Runs join (the same
items, other methods or ratios) and stack (other items, e.g. a run continued on another
machine with ``promptsieve bench --skip-items``) alike. The noise floor is the union of the
runs' noise rows (one per item). Screening records are kept with the run they came from (each
screened its own ladder). The report is :func:`benchmarks.suite_report.write_suite_report`'s, so the
statistics are the single runs' (Wilson intervals, McNemar).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .bigbench.multidoc import data_read
from .suite_report import write_suite_report

__all__ = ["merge"]

Row = dict[str, Any]


class MergeError(ValueError):
    """The runs cannot be merged (different targets, or different answers to one call)."""


def merge(
    runs: Sequence[Mapping[str, Any]],
    *,
    suite: str | None = None,
    drop_differing: bool = False,
    ratios: Sequence[float] | None = None,
    methods: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One results mapping from several ``results.json`` mappings of the same target.

    ``ratios``: keep only the uncompressed rows and the rows at these ratios; ``methods``:
    the uncompressed rows and these methods' rows. Raises
    :class:`MergeError` when the models differ, when no item has a row in every (method,
    ratio) cell, or when a (method, ratio, item) has two different answers. With
    ``drop_differing`` such items are left out instead, and listed in
    ``meta["dropped_items"]``.
    """
    models = {run["meta"].get("model") for run in runs}
    if len(models) != 1:
        raise MergeError(f"runs of different targets: {sorted(map(str, models))}")
    sources = {data_read(run["meta"]) for run in runs}
    if len(sources) != 1:
        raise MergeError(f"runs on different BIG-bench data: {sorted(sources)}")
    keep = [_rows(run, suite, ratios, methods) for run in runs]
    cells: dict[tuple[str, float], set[str]] = {}
    for rows in keep:
        for r in rows:
            cells.setdefault((r["method"], r["ratio"]), set()).add(r["item"])
    if ratios is not None and not any(r != 1.0 for _, r in cells):
        raise MergeError(f"no run has rows at ratios {list(ratios)}")
    common = set.intersection(*cells.values()) if cells else set()
    if not common:
        raise MergeError(
            "no item has a row in every (method, ratio) cell of the runs"
            + (f" in suite {suite!r}" if suite else "")
        )
    incomplete = set.union(*cells.values()) - common
    merged: dict[tuple[str, float, str], Row] = {}
    dropped: set[str] = set()
    for rows in keep:
        for r in rows:
            if r["item"] not in common:
                continue
            key = (r["method"], r["ratio"], r["item"])
            seen = merged.setdefault(key, r)
            if seen.get("answer") != r.get("answer"):
                if not drop_differing:
                    raise MergeError(
                        f"{key}: answers differ between runs ({seen['answer']!r} vs "
                        f"{r['answer']!r}); --drop-differing leaves such items out"
                    )
                dropped.add(r["item"])
    common -= dropped
    merged = {k: r for k, r in merged.items() if k[2] in common}
    noise: dict[str, Row] = {}
    for run in runs:
        for n in run.get("noise", []):
            if n["item"] in common:
                noise.setdefault(n["item"], n)
    suites: dict[str, Any] = {}
    for run in runs:  # every run's suites, whatever the order of the runs
        for name, info in run["suites"].items():
            if suite is None or name == suite:
                suites.setdefault(name, info)
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
        dropped_items=sorted(dropped),
        incomplete_items=sorted(incomplete),
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


def _rows(
    run: Mapping[str, Any],
    suite: str | None,
    ratios: Sequence[float] | None,
    methods: Sequence[str] | None,
) -> list[Row]:
    return [
        r
        for r in run["rows"]
        if (suite is None or r["suite"] == suite)
        and (ratios is None or r["method"] == "none" or float(r["ratio"]) in ratios)
        and (methods is None or r["method"] == "none" or r["method"] in methods)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="folders holding a results.json")
    ap.add_argument("--suite", default=None, help="keep only this suite")
    ap.add_argument("--ratios", default=None, help="comma list: keep only these ratios")
    ap.add_argument(
        "--methods", default=None, help="comma list: keep only these methods (and none)"
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for the merged report")
    ap.add_argument(
        "--drop-differing",
        action="store_true",
        help="leave out items whose answer to the same call differs between runs",
    )
    args = ap.parse_args(argv)
    try:
        ratios = [float(r) for r in args.ratios.split(",")] if args.ratios else None
        runs = [json.loads((d / "results.json").read_text(encoding="utf-8")) for d in args.runs]
        methods = args.methods.split(",") if args.methods else None
        results = merge(
            runs,
            suite=args.suite,
            drop_differing=args.drop_differing,
            ratios=ratios,
            methods=methods,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    # MergeError and a bad --ratios included; TypeError/KeyError: not a results.json
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(write_suite_report(results, args.out))
    if results["meta"]["dropped_items"]:
        print(f"left out (answers differ): {', '.join(results['meta']['dropped_items'])}")
    if results["meta"]["incomplete_items"]:
        print(
            f"left out (a row missing in some cell): {len(results['meta']['incomplete_items'])}"
            " items",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
