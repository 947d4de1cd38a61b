"""Pool several suites of one target into one table: e.g. the headline's 14 BBH tasks.

    python -m benchmarks.pool_suites benchmarks/results/headline-bbh \\
        benchmarks/results/headline-bbh-more/* --prefix bbh_ --against truncate

Each suite alone holds 60 questions, too few to separate methods; pooled, every (method,
ratio) cell holds every task's questions. Per cell: accuracy and agreement with the
uncompressed answer, with Wilson 95 % intervals (``benchmarks.stats.wilson``), and McNemar's
exact test (``benchmarks.stats.mcnemar``) against ``--against`` and against the uncompressed
prompt on the same questions. A question counts in a cell only when both sides of each
comparison have a row for it (answer errors are not rows). The runs must share one target:
pooling two targets' answers measures neither. Prints a Markdown table; ``--out`` also
writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .stats import mcnemar, wilson

__all__ = ["PoolError", "pool"]

Row = dict[str, Any]


class PoolError(ValueError):
    """The runs cannot be pooled (different targets, or no suite matches)."""


def _rows(runs: Sequence[Path], prefix: str) -> tuple[str, list[Row]]:
    models: set[str] = set()
    rows: dict[tuple[str, str, float], Row] = {}
    for run in runs:
        data = json.loads((run / "results.json").read_text())
        models.add(data["meta"]["model"])
        for row in data["rows"]:
            if row["suite"].startswith(prefix) and row.get("error") is None:
                rows.setdefault((row["item"], row["method"], float(row["ratio"])), row)
    if len(models) != 1:
        raise PoolError(f"the runs have different targets: {sorted(models)}; pool one target")
    if not rows:
        raise PoolError(f"no suite of these runs starts with {prefix!r}")
    return models.pop(), list(rows.values())


def _pct(k: int, n: int) -> dict[str, float]:
    low, high = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else float("nan"), "low": low, "high": high}


def _paired(a: dict[str, Row], b: dict[str, Row]) -> dict[str, Any]:
    items = sorted(a.keys() & b.keys())
    test = mcnemar([bool(a[i]["correct"]) for i in items], [bool(b[i]["correct"]) for i in items])
    return {"n": len(items), **test}


def pool(runs: Sequence[Path], prefix: str = "", against: str = "truncate") -> dict[str, Any]:
    """Pooled figures per (method, ratio) over every suite whose name starts with ``prefix``.

    Returns ``{"model", "suites", "cells": [...]}``; each cell has ``method``, ``ratio``,
    ``accuracy`` and ``agreement`` (``k``, ``n``, ``rate``, Wilson ``low``/``high``),
    ``vs_none`` and ``vs_<against>`` (``n`` paired questions, discordant ``a_only`` for this
    method, ``b_only`` for the other, exact McNemar ``p``). Raises :class:`PoolError` when
    the runs have different targets or no suite matches.
    """
    model, rows = _rows(runs, prefix)
    by_cell: dict[tuple[str, float], dict[str, Row]] = {}
    for row in rows:
        by_cell.setdefault((row["method"], float(row["ratio"])), {})[row["item"]] = row
    none = by_cell.get(("none", 1.0), {})
    cells = []
    for (method, ratio), cell in sorted(by_cell.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        acc = sum(bool(r["correct"]) for r in cell.values())
        agreed = [bool(r["agree"]) for r in cell.values() if r.get("agree") is not None]
        entry: dict[str, Any] = {
            "method": method,
            "ratio": ratio,
            "accuracy": _pct(acc, len(cell)),
            "agreement": _pct(sum(agreed), len(agreed)) if method != "none" else None,
        }
        if method != "none":
            entry["vs_none"] = _paired(cell, none)
            other = by_cell.get((against, ratio))
            if other is not None and method != against:
                entry[f"vs_{against}"] = _paired(cell, other)
        cells.append(entry)
    suites = sorted({r["suite"] for r in rows})
    return {"model": model, "suites": suites, "against": against, "cells": cells}


def _fmt_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _ci(x: dict[str, float] | None) -> str:
    if x is None:
        return "–"
    return f"{100 * x['rate']:.0f} [{100 * x['low']:.0f}, {100 * x['high']:.0f}]"


def markdown(result: dict[str, Any]) -> str:
    """The pooled figures as a Markdown table (percentages, Wilson 95 % intervals)."""
    against, suites = result["against"], result["suites"]
    lines = [
        f"{len(suites)} suites pooled on {result['model']}: {', '.join(suites)}",
        "",
        f"| method | ratio | n | accuracy % [95 % CI] | agreement % [95 % CI] "
        f"| vs none (wins/losses, p) | vs {against} (wins/losses, p) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result["cells"]:
        a, g = c["accuracy"], c["agreement"]
        acc = f"{100 * a['rate']:.0f} [{100 * a['low']:.0f}, {100 * a['high']:.0f}]"
        agr = (
            "–"
            if g is None
            else f"{100 * g['rate']:.0f} [{100 * g['low']:.0f}, {100 * g['high']:.0f}]"
        )
        cmp = []
        for key in ("vs_none", f"vs_{against}"):
            t = c.get(key)
            cmp.append("" if t is None else f"{t['a_only']}/{t['b_only']}, p {_fmt_p(t['p'])}")
        lines.append(
            f"| {c['method']} | {c['ratio']:g} | {a['n']} | {acc} | {agr} | {cmp[0]} | {cmp[1]} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders holding results.json")
    ap.add_argument("--prefix", default="", help="pool the suites whose name starts with this")
    ap.add_argument("--against", default="truncate", help="the baseline to test against")
    ap.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "results.json").is_file()]
    if missing:
        print(f"no results.json in: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        result = pool(args.runs, args.prefix, args.against)
    except PoolError as exc:
        print(exc, file=sys.stderr)
        return 2
    sys.stdout.write(markdown(result))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
