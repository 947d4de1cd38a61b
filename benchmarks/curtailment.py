"""What curtailment saves on the committed screening records, at the same verdicts.

Since session 19 a rung's sequential test stops as soon as no pass is left within its
budget, even if every remaining comparison went the compressed prompt's way
(``SequentialTest.can_pass``, ``NonInferiorityTest.can_pass``). The committed benchmark runs
were screened before that. This replays each of their screening records on the run's own
items in order (``benchmarks.screening_power.replay``), once as they were made and once
curtailed, checks that both apply the same ratio and that the uncurtailed replay spends
exactly the recorded calls, and totals the compressed target calls per run and mode. No
target call is made.

    python -m benchmarks.curtailment benchmarks/results/headline benchmarks/results/headline-bbh \\
        --out benchmarks/results/curtailment
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .screening_power import load_outcomes, replay

__all__ = ["savings"]


def savings(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per screening record of a ``promptsieve bench`` results.json: suite, method,
    mode, applied ratio, and the compressed calls spent as recorded and when curtailed.
    Raises ValueError when a replay does not reproduce its record (another procedure)."""
    procedure = results["screen_plan"].get("ladder_test", "fixed_sequence")
    order = [r["item"] for r in results["rows"] if r["method"] == "none"]
    rows = []
    for rec in results.get("screening", []):
        out = load_outcomes(results, rec["method"], rec["suite"])
        if [r["ratio"] for r in rec["rungs"]] != list(out.ratios[: len(rec["rungs"])]):
            raise ValueError(f"{rec['suite']}/{rec['method']}: rungs are not the run's ratios")
        where = {item: i for i, item in enumerate(out.items)}
        idx = np.array([where[i] for i in order if i in where], dtype=np.intp)
        applied, calls = replay(out, idx, procedure, rec["mode"], curtail=False)
        recorded = sum(int(r["n"]) for r in rec["rungs"])
        if applied != rec["ratio"] or calls != recorded:
            raise ValueError(f"replay does not reproduce {rec['suite']}/{rec['method']}")
        cut_applied, cut_calls = replay(out, idx, procedure, rec["mode"])
        if cut_applied != applied:  # curtailment stops only rungs that cannot pass
            raise AssertionError(f"curtailment changed a verdict: {rec['method']}")
        rows.append(
            {
                "suite": rec["suite"],
                "method": rec["method"],
                "mode": rec["mode"],
                "applied": applied,
                "calls": recorded,
                "curtailed": cut_calls,
            }
        )
    return rows


def markdown(table: dict[str, list[dict[str, Any]]]) -> str:
    lines = [
        "# Curtailment on the committed screening records (same verdicts, compressed calls)",
        "",
        "| run | mode | records | passed | calls as recorded | curtailed | saved |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    every = [r for rows in table.values() for r in rows]
    for run, rows in [*table.items(), ("**all runs**", every)]:
        for mode in ("agreement", "labelled"):
            mine = [r for r in rows if r["mode"] == mode]
            if not mine:
                continue
            before = sum(r["calls"] for r in mine)
            after = sum(r["curtailed"] for r in mine)
            passed = sum(r["applied"] is not None for r in mine)
            lines.append(
                f"| {run} | {mode} | {len(mine)} | {passed} | {before} | {after} | "
                f"{100 * (before - after) / max(before, 1):.0f} % |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="promptsieve bench output folders")
    ap.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    table: dict[str, list[dict[str, Any]]] = {}
    for run in args.runs:
        try:
            results = json.loads((run / "results.json").read_text(encoding="utf-8"))
            table[run.name] = savings(results)
        except (OSError, ValueError, KeyError) as exc:
            ap.error(f"{run}: {exc}")
    text = markdown(table)
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(table, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text)
    return table


if __name__ == "__main__":
    main()
