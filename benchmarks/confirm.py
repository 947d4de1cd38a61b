"""The readout of a pre-registered confirmatory comparison (``benchmarks/preregistered/``).

A registration fixes, before any of its items is run: the suite and the item range of its
seeded draw, the two arms (a method at one ratio against the uncompressed prompt), the
non-inferiority margin and the tests. This module computes exactly the registered analysis
from a (merged) bench results file, and nothing else, so that the readout cannot drift after
the data are in:

- **primary**: the accuracy difference method − baseline with its 95 % paired percentile
  bootstrap interval (:func:`benchmarks.stats.paired_difference`); non-inferior at margin ε iff
  the lower bound is above −ε (one-sided α = 0.025), claimed only on the full registered n;
- **secondary**: the SDK's anytime-valid labelled test
  (:class:`promptsieve.fidelity.labelled.NonInferiorityTest`, Waudby-Smith & Ramdas-style
  betting e-process) on the pairs in item order, valid at any sample size; McNemar's exact
  test; agreement with the baseline's answer (Wilson interval); tokens kept.

A registered item that is missing from the results, or whose call errored, counts as wrong
for that arm (no exclusions); missing items also make the study incomplete.

    python -m benchmarks.confirm 2k-coarse-reorder-2x benchmarks/results/confirm-2k-reorder-0.5
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.stats import mcnemar, paired_difference, wilson
from promptsieve.fidelity.labelled import NonInferiorityTest
from promptsieve.fidelity.stats import Outcome

__all__ = ["REGISTERED", "Registration", "markdown", "readout"]


@dataclass(frozen=True)
class Registration:
    """One pre-registered comparison; ``doc`` is its registration text in the repository."""

    name: str
    doc: str
    suite: str  # e.g. "multidoc_2k"
    split: str
    seed: int
    first_item: int  # 1-based position in the prefix-stable draw
    n: int
    method: str
    ratio: float
    baseline: str = "none"
    epsilon: float = 0.05  # accuracy points, as a proportion
    delta: float = 0.05
    resamples: int = 10_000
    bootstrap_seed: int = 0

    def item_ids(self) -> list[str]:
        """The registered items' ids, in draw order (``multidoc_raw``'s id scheme)."""
        start = self.first_item - 1
        return [f"{self.suite}#{self.split}:{self.seed}:{j}" for j in range(start, start + self.n)]


REGISTERED: dict[str, Registration] = {
    r.name: r
    for r in (
        Registration(
            name="2k-coarse-reorder-2x",
            doc="benchmarks/preregistered/2k-coarse-reorder-2x.md",
            suite="multidoc_2k",
            split="test",
            seed=0,
            first_item=201,
            n=400,
            method="coarse-reorder",
            ratio=0.5,
        ),
    )
}


def _cell(rows: Sequence[dict[str, Any]], reg: Registration, method: str) -> dict[str, Any]:
    ratio = 1.0 if method == reg.baseline else reg.ratio
    return {
        r["item"]: r
        for r in rows
        if r.get("suite") == reg.suite and r["method"] == method and abs(r["ratio"] - ratio) < 1e-9
    }


def _ok(row: dict[str, Any] | None, key: str) -> bool:
    return bool(row is not None and not row.get("error") and row.get(key))


def readout(reg: Registration, results: dict[str, Any]) -> dict[str, Any]:
    """The registered analysis of ``results`` (a bench ``results.json``) as a dict.

    Keys: ``collected`` (items with both arms answered without error), ``complete``,
    ``primary`` (difference, low, high as proportions; ``verdict``), ``sequential`` (the
    labelled test's decision, pairs used, e-value), ``mcnemar``, ``accuracy`` and
    ``agreement`` per arm (rate, Wilson low, high), ``tokens_kept`` (mean share of the
    baseline's tokens). Rows of other suites, methods or items are ignored.
    """
    ids = reg.item_ids()
    rows = results["rows"]
    base, meth = _cell(rows, reg, reg.baseline), _cell(rows, reg, reg.method)
    both = [
        i
        for i in ids
        if i in base and i in meth and not base[i].get("error") and not meth[i].get("error")
    ]
    complete = len(both) == reg.n
    b = [_ok(base.get(i), "correct") for i in ids]
    m = [_ok(meth.get(i), "correct") for i in ids]
    agree = [_ok(meth.get(i), "agree") for i in ids]
    d, lo, hi = paired_difference(m, b, resamples=reg.resamples, seed=reg.bootstrap_seed)
    if not complete:
        verdict = f"incomplete ({len(both)} of {reg.n} pairs): no claim"
    elif lo > -reg.epsilon:
        verdict = f"non-inferior at epsilon = {reg.epsilon:g}"
    elif hi < 0:
        verdict = "inferior"
    else:
        verdict = f"not shown non-inferior at epsilon = {reg.epsilon:g}"
    # the anytime-valid test sees only collected pairs, in item order
    test = NonInferiorityTest(reg.delta, reg.n, epsilon=reg.epsilon)
    state = test.state
    for i in (i for i in ids if i in both):
        state = test.update(_ok(base[i], "correct"), _ok(meth[i], "correct"))
        if state.decision is not Outcome.CONTINUE:
            break
    kept = [
        meth[i]["tokens_after"] / base[i]["tokens_after"]
        for i in both
        if base[i].get("tokens_after")
    ]
    return {
        "registration": asdict(reg),
        "collected": len(both),
        "complete": complete,
        "primary": {"difference": d, "low": lo, "high": hi, "verdict": verdict},
        "sequential": {
            "decision": state.decision.value,
            "pairs": state.n,
            "e_value": state.e_value,
            "low": state.lower,
            "high": state.upper,
        },
        "mcnemar": mcnemar(m, b),
        "accuracy": {
            reg.baseline: (sum(b) / reg.n, *wilson(sum(b), reg.n)),
            reg.method: (sum(m) / reg.n, *wilson(sum(m), reg.n)),
        },
        "agreement": (sum(agree) / reg.n, *wilson(sum(agree), reg.n)),
        "tokens_kept": sum(kept) / len(kept) if kept else float("nan"),
    }


def _pct(x: tuple[float, float, float]) -> str:
    return f"{x[0]:.0%} [{x[1]:.0%}, {x[2]:.0%}]"


def markdown(out: dict[str, Any]) -> str:
    """The readout as a short Markdown report."""
    reg = out["registration"]
    p, s, mc = out["primary"], out["sequential"], out["mcnemar"]
    acc = out["accuracy"]
    return "\n".join(
        [
            f"# Pre-registered readout: {reg['name']}",
            "",
            f"Registration: `{reg['doc']}`. Items {reg['first_item']}–"
            f"{reg['first_item'] + reg['n'] - 1} of `{reg['suite']}` ({reg['split']}, seed "
            f"{reg['seed']}); `{reg['method']}` at ratio {reg['ratio']:g} vs `{reg['baseline']}`. "
            f"Pairs collected: {out['collected']} of {reg['n']}.",
            "",
            f"- **Primary**: accuracy difference {p['difference'] * 100:+.1f} points, 95 % paired "
            f"bootstrap [{p['low'] * 100:+.1f}, {p['high'] * 100:+.1f}] ({reg['resamples']:,} "
            f"resamples, seed {reg['bootstrap_seed']}): **{p['verdict']}**.",
            f"- Sequential labelled test (delta {reg['delta']:g}, epsilon {reg['epsilon']:g}, "
            f"budget {reg['n']}): **{s['decision']}** after {s['pairs']} pairs (e-value "
            f"{s['e_value']:.3g}; anytime-valid bound [{s['low'] * 100:+.1f}, "
            f"{s['high'] * 100:+.1f}] points).",
            f"- McNemar: {reg['method']} only correct {mc['a_only']}, {reg['baseline']} only "
            f"correct {mc['b_only']} (exact p = {mc['p']:.3f}).",
            f"- Accuracy: {reg['baseline']} {_pct(acc[reg['baseline']])}, {reg['method']} "
            f"{_pct(acc[reg['method']])}; agreement {_pct(out['agreement'])}; tokens kept "
            f"{out['tokens_kept']:.0%} of the uncompressed prompt's.",
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.confirm", description=__doc__)
    ap.add_argument("registration", choices=sorted(REGISTERED))
    ap.add_argument("results", type=Path, help="a bench results folder or its results.json")
    args = ap.parse_args(argv)
    path = args.results / "results.json" if args.results.is_dir() else args.results
    if not path.is_file():
        ap.error(f"{path} is not a bench results file")
    out = readout(REGISTERED[args.registration], json.loads(path.read_text()))
    sys.stdout.write(markdown(out))
    (path.parent / f"confirm-{args.registration}.json").write_text(json.dumps(out, indent=2))
    (path.parent / f"confirm-{args.registration}.md").write_text(markdown(out))
    return out


if __name__ == "__main__":
    main()
