"""How often screening passes, and at which rung, on a benchmark's own paired outcomes.

Screening on the headline multi-document QA task stops at the conservative 0.8 rung: there
compression neither helps nor hurts accuracy, so 100 pairs cannot bound the difference above
-ε, while the aggressive rungs, where coarse-to-fine compression *raises* accuracy, are never
tried. One run on one sample order is a coin flip, so this estimates each ladder procedure's
pass probability by the bootstrap: draw ``--n`` items with replacement from a results file
(each item keeps its outcomes at every ratio together, as one request does), run the
procedure, repeat ``--runs`` times. Procedures (see ``promptsieve.fidelity.ScreenConfig``):

* ``fixed_sequence``: the rungs in order, each at δ, stopping at the first that does not pass
  (the SDK default, and the live Gate's procedure);
* ``fixed_sequence from R``: the same, starting at rung R;
* ``bonferroni``: every rung at δ/K on the same samples, the most aggressive pass applied.

Each rung's decision is the SDK's own test (``NonInferiorityTest`` in labelled mode,
``SequentialTest`` in agreement mode), evaluated on the running cell counts exactly as
``screen()`` updates it: pass, fail, or fail at the budget. Pass rates carry Wilson 95 %
intervals; "saved" is the mean share of compressible tokens dropped (1 - the applied ratio,
0 when nothing passed); "calls" is the mean number of compressed target calls spent.

    python -m benchmarks.screening_power benchmarks/results/headline-ladder/results.json \\
        --methods default,coarse --out benchmarks/results/screening_power.json
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from promptsieve.fidelity.labelled import NonInferiorityTest
from promptsieve.fidelity.stats import SequentialTest

from .screening_sim import wilson

__all__ = ["Outcomes", "load_outcomes", "procedure_runs", "replay", "rung_decision"]

TAU, DELTA, BUDGET = 0.9, 0.05, 100


@dataclass(frozen=True)
class Outcomes:
    """Per item: (original correct, compressed correct, agreed) at each ratio of one method."""

    method: str
    ratios: tuple[float, ...]  # conservative first
    items: tuple[str, ...]
    #: cells[ratio] is an (items, 3) bool array: original correct, compressed correct, agree
    cells: dict[float, NDArray[np.bool_]]


def load_outcomes(results: dict[str, Any], method: str, suite: str | None = None) -> Outcomes:
    """The paired outcomes of ``method`` in a ``promptsieve bench`` results.json; only items
    with an uncompressed row and a row at every ratio count. Raises ValueError when none do."""
    rows = [r for r in results["rows"] if suite is None or r["suite"] == suite]
    base = {r["item"]: r for r in rows if r["method"] == "none"}
    mine = [r for r in rows if r["method"] == method and r.get("error") is None]
    ratios = tuple(sorted({float(r["ratio"]) for r in mine}, reverse=True))
    at = {(r["item"], float(r["ratio"])): r for r in mine}
    items = tuple(sorted(i for i in base if all((i, q) in at for q in ratios)))
    if not items or not ratios:
        raise ValueError(f"no item has method {method!r} at every ratio and uncompressed")
    cells = {
        q: np.array(
            [
                (bool(base[i]["correct"]), bool(at[i, q]["correct"]), bool(at[i, q]["agree"]))
                for i in items
            ],
            dtype=bool,
        )
        for q in ratios
    }
    return Outcomes(method, ratios, items, cells)


def rung_decision(
    cells: NDArray[np.bool_],
    mode: str,
    delta: float,
    *,
    curtail: bool = True,
    budget: int = BUDGET,
) -> tuple[bool, int]:
    """(passed, pairs used) of one rung on ``cells`` (n, 3) taken in order, as ``screen()``
    decides it: the first pass or fail, else a failure at the budget (``budget`` pairs per
    rung, ``GateConfig.budget``). ``curtail=False`` leaves out the stop when no pass is left
    within the budget (the procedure before session 19, which the committed runs' screening
    records were made with)."""
    cells = cells[:budget]
    budget = len(cells)  # screen() tests min(budget, samples) attempts
    o, c, a = cells[:, 0], cells[:, 1], cells[:, 2]
    test: NonInferiorityTest | SequentialTest
    if mode == "labelled":
        per = np.stack([o & c, o & ~c, ~o & c, ~o & ~c], axis=1).astype(np.float64)
        counts = np.cumsum(per, axis=0)
        test = NonInferiorityTest(delta, budget)
        passes, fails = test.passes(counts), test.fails(counts)
        if curtail:
            fails = fails | ~test.can_pass(counts)
    else:
        agree = np.cumsum(a.astype(np.float64))
        disagree = np.arange(1, len(a) + 1) - agree
        seq = SequentialTest(TAU, delta, budget)
        passes, fails = seq.passes(agree, disagree), seq.fails(agree, disagree)
        if curtail:
            fails = fails | ~seq.can_pass(agree, disagree)
    decided = np.nonzero(passes | fails)[0]
    if len(decided) == 0:
        return False, len(cells)
    first = int(decided[0])
    return bool(passes[first]), first + 1


def replay(
    out: Outcomes,
    idx: NDArray[np.intp],
    procedure: str,
    mode: str,
    start: float | None = None,
    *,
    curtail: bool = True,
    budget: int = BUDGET,
) -> tuple[float | None, int]:
    """One screening of the items ``out.items[idx]``, in that order, under ``procedure``
    (``fixed_sequence`` or ``bonferroni``; ``start``: drop the rungs above it): (the applied
    ratio or None, compressed calls spent). On a benchmark's own item order this is what
    ``screen()`` decided (``tests/test_screening_power.py`` checks it on the committed runs,
    with ``curtail=False`` as they were made; see :func:`rung_decision`, also for ``budget``)."""
    ladder = [q for q in out.ratios if start is None or q <= start]
    if procedure == "bonferroni":
        results = [
            (
                q,
                *rung_decision(
                    out.cells[q][idx], mode, DELTA / len(ladder), curtail=curtail, budget=budget
                ),
            )
            for q in ladder
        ]
        passed = [q for q, ok, _ in results if ok]
        return (min(passed) if passed else None), sum(n for _, _, n in results)
    best, calls = None, 0
    for q in ladder:
        ok, n = rung_decision(out.cells[q][idx], mode, DELTA, curtail=curtail, budget=budget)
        calls += n
        if not ok:
            break
        best = q
    return best, calls


def procedure_runs(
    out: Outcomes,
    procedure: str,
    mode: str,
    *,
    start: float | None = None,
    n: int = BUDGET,
    runs: int = 1000,
    seed: int = 0,
    curtail: bool = True,
    budget: int = BUDGET,
) -> dict[str, Any]:
    """Bootstrap ``runs`` screenings of ``n`` items under ``procedure`` (``fixed_sequence``
    or ``bonferroni``; ``start``: drop the rungs above it; ``curtail`` and ``budget``: see
    :func:`rung_decision`). Returns pass rate, rate of
    passing at 2x or better (ratio <= 0.5), mean saved share and calls, and the applied
    ratios' counts (``None``: failed)."""
    rng = random.Random(seed)
    applied: Counter[float | None] = Counter()
    calls = 0
    for _ in range(runs):
        idx = np.array([rng.randrange(len(out.items)) for _ in range(n)], dtype=np.intp)
        ratio, spent = replay(out, idx, procedure, mode, start, curtail=curtail, budget=budget)
        applied[ratio] += 1
        calls += spent
    passed = runs - applied[None]
    at_2x = sum(v for q, v in applied.items() if q is not None and q <= 0.5)
    return {
        "method": out.method,
        "mode": mode,
        "procedure": procedure if start is None else f"{procedure} from {start:g}",
        "runs": runs,
        "pass": wilson(passed, runs),
        "pass_at_2x": wilson(at_2x, runs),
        "saved": sum(v * (1 - q) for q, v in applied.items() if q is not None) / runs,
        "calls": calls / runs,
        "applied": {("failed" if q is None else f"{q:g}"): v for q, v in sorted(
            applied.items(), key=lambda kv: (kv[0] is None, -(kv[0] or 0)))},
    }  # fmt: skip


def _pct(rate: Sequence[float]) -> str:
    return f"{100 * rate[0]:.0f} % [{100 * rate[1]:.0f}, {100 * rate[2]:.0f}]"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"# Screening power on {meta['source']} ({meta['items']} items; bootstrap: "
        f"{meta['runs']} runs of {meta['n']} items, seed {meta['seed']}; τ {TAU}, δ {DELTA}, "
        f"ε 0.05, budget {meta.get('budget', BUDGET)} per rung"
        + ("; no curtailment)" if not meta.get("curtail", True) else "; curtailed)"),
        "",
        "| method | mode | procedure | passes | passes at ≤ 0.5 | saved share | compressed "
        "calls | applied ratio (runs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        applied = ", ".join(f"{k}: {v}" for k, v in r["applied"].items())
        lines.append(
            f"| {r['method']} | {r['mode']} | {r['procedure']} | {_pct(r['pass'])} | "
            f"{_pct(r['pass_at_2x'])} | {r['saved']:.2f} | {r['calls']:.0f} | {applied} |"
        )
    lines += ["", f"    {meta['command']}", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a promptsieve bench results.json")
    ap.add_argument("--methods", default="default,coarse")
    ap.add_argument("--modes", default="labelled,agreement")
    ap.add_argument("--suite", default=None)
    ap.add_argument("--start", type=float, default=0.5, help="also try fixed sequence from here")
    ap.add_argument(
        "--budget",
        type=int,
        default=BUDGET,
        help="paired comparisons per rung before it fails (GateConfig.budget, default 100)",
    )
    ap.add_argument(
        "--n", type=int, default=None, help="items per bootstrap run (default: the budget)"
    )
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-curtail",
        action="store_true",
        help="run every rung to a pass, a fail or the budget (the procedure before session 19)",
    )
    ap.add_argument("--out", type=Path, default=None, help="write .json and .md here")
    args = ap.parse_args(argv)
    if args.budget < 1:
        ap.error(f"--budget must be 1 or more, got {args.budget}")
    if args.n is None:
        args.n = args.budget
    if args.n < 1:
        ap.error(f"--n must be 1 or more, got {args.n}")
    try:
        results = json.loads(args.results.read_text())
        outcomes = [load_outcomes(results, m, args.suite) for m in args.methods.split(",")]
    except (OSError, ValueError, KeyError) as exc:
        ap.error(f"cannot read {args.results}: {exc}")
    rows = []
    for out in outcomes:
        for mode in args.modes.split(","):
            for procedure, start in (
                ("fixed_sequence", None),
                ("fixed_sequence", args.start),
                ("bonferroni", None),
            ):
                row = procedure_runs(
                    out,
                    procedure,
                    mode,
                    start=start,
                    n=args.n,
                    runs=args.runs,
                    seed=args.seed,
                    curtail=not args.no_curtail,
                    budget=args.budget,
                )
                rows.append(row)
                print(markdown([row], _meta(args, outcomes)).splitlines()[-3], flush=True)
    meta = _meta(args, outcomes)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(markdown(rows, meta))
    return rows


def _meta(args: argparse.Namespace, outcomes: list[Outcomes]) -> dict[str, Any]:
    return {
        "source": str(args.results),
        "items": len(outcomes[0].items),
        "ratios": list(outcomes[0].ratios),
        "runs": args.runs,
        "n": args.n,
        "budget": args.budget,
        "seed": args.seed,
        "curtail": not args.no_curtail,
        "command": "python -m benchmarks.screening_power " + " ".join(
            str(a) for a in (args.results, "--methods", args.methods, "--modes", args.modes,
                             "--start", args.start, "--budget", args.budget, "--n", args.n,
                             "--runs", args.runs,
                             "--seed", args.seed)
            + (("--suite", args.suite) if args.suite else ())
            + (("--no-curtail",) if args.no_curtail else ())
        ),
    }  # fmt: skip


if __name__ == "__main__":
    main()
