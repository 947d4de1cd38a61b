"""The readout of a pre-registered confirmatory comparison (``benchmarks/preregistered/``).

A registration fixes, before any of its items is run: the suite and the item range of its
seeded draw, the two arms (a method at one ratio against the uncompressed prompt), the
non-inferiority margin and the tests. This module computes exactly the registered analysis
from the chunks' bench results, and nothing else, so that the readout cannot drift after
the data are in:

- **primary**: the accuracy difference method − baseline with its 95 % paired percentile
  bootstrap interval (:func:`benchmarks.stats.paired_difference`); non-inferior at margin ε iff
  the lower bound is above −ε (one-sided α = 0.025), claimed only on the full registered n;
- **secondary**: the SDK's anytime-valid labelled test
  (:class:`promptsieve.fidelity.labelled.NonInferiorityTest`, Waudby-Smith & Ramdas-style
  betting e-process) on the pairs in item order, valid at any sample size; McNemar's exact
  test; agreement with the baseline's answer (Wilson interval); tokens kept; and, as a
  sensitivity check, the interval that resamples gold passages instead of items.

Gaps count against the claim (no exclusions): see :func:`readout`.

    python -m benchmarks.confirm 2k-coarse-reorder-2x benchmarks/results/confirm-2k-reorder-0.5-* \\
        --out benchmarks/results/confirm-2k-reorder-0.5
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from promptsieve.fidelity.labelled import NonInferiorityTest
from promptsieve.fidelity.stats import Outcome

from .bigbench.multidoc import data_read
from .stats import mcnemar, paired_difference, wilson

__all__ = [
    "REGISTERED",
    "Registration",
    "cluster_difference",
    "gold_passages",
    "markdown",
    "pooled",
    "readout",
]


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


def gold_passages(reg: Registration) -> list[str]:
    """The gold passage id of each registered item, in draw order (the clusters of the
    sensitivity bootstrap: questions on one passage are not independent)."""
    from .bigbench.multidoc import multidoc_raw

    size = int(reg.suite.removeprefix("multidoc_").removesuffix("k")) * 1000
    draw = multidoc_raw(reg.split, size, reg.first_item - 1 + reg.n, reg.seed)  # type: ignore[arg-type]
    return [m.doc_ids[m.gold_index] for m in draw[reg.first_item - 1 :]]


def cluster_difference(
    d: Sequence[float], clusters: Sequence[str], *, resamples: int, seed: int
) -> tuple[float, float]:
    """95 % percentile bootstrap interval of mean(``d``), resampling whole clusters with
    replacement (``scipy.stats.bootstrap`` on the clusters' sums and sizes, paired, the
    statistic their ratio): ``(low, high)`` as proportions."""
    sums: dict[str, float] = {}
    sizes: dict[str, int] = {}
    for x, c in zip(d, clusters, strict=True):
        sums[c] = sums.get(c, 0.0) + x
        sizes[c] = sizes.get(c, 0) + 1
    s = np.array([sums[c] for c in sums])
    k = np.array([sizes[c] for c in sums], dtype=np.float64)
    if len(s) == 0:
        return float("nan"), float("nan")
    if np.all(s / k == s[0] / k[0]):
        return float(s[0] / k[0]), float(s[0] / k[0])
    res = bootstrap(
        (s, k),
        lambda a, b, axis=-1: a.sum(axis=axis) / b.sum(axis=axis),
        paired=True,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _rate(k: int, n: int) -> tuple[float, float, float]:
    return (k / n if n else float("nan"), *wilson(k, n))


def readout(
    reg: Registration, results: dict[str, Any], *, count_missing: bool = False
) -> dict[str, Any]:
    """The registered analysis of ``results`` (bench ``results.json`` rows, pooled) as a dict.

    Gaps count against the claim: an errored or missing compressed answer is wrong, an
    errored uncompressed answer (or an item the bench skipped because its uncompressed call
    failed) is right, and either disagrees. An item with no row at all is *missing*: the
    study is complete only without missing items, or with ``count_missing`` (the registered
    rule once every chunk has been re-run), which counts them under the same rule.

    Before the study is complete the figures cover the items run so far (an interim look:
    only the sequential test's verdict is valid then).

    Keys: ``collected`` (items with both arms answered without error), ``missing`` (ids),
    ``errors`` per arm, ``complete``, ``primary`` (difference, low, high as proportions;
    ``verdict``; ``borderline`` when the lower bound is within one step, 1/n, of the
    margin), ``clustered`` (the interval resampling gold passages; ``agrees`` with the
    verdict), ``sequential`` (the labelled test's decision, reason, pairs used, e-value,
    bounds), ``mcnemar``, ``accuracy`` and ``agreement`` per arm (rate, Wilson low, high),
    ``tokens_kept`` (mean over items of compressed / uncompressed prompt tokens).
    """
    ids = reg.item_ids()
    rows = results["rows"]
    base, meth = _cell(rows, reg, reg.baseline), _cell(rows, reg, reg.method)
    missing = [i for i in ids if i not in base and i not in meth]
    # an item present in one arm only is not missing: the bench skips a compressed call
    # only when the uncompressed one failed, and writes a row for a failed compressed call
    errors = {
        reg.baseline: sum(1 for i in ids if i in meth and (i not in base or base[i].get("error"))),
        reg.method: sum(1 for i in ids if i in base and (i not in meth or meth[i].get("error"))),
    }
    both = [i for i in ids if _ok(base.get(i), "item") and _ok(meth.get(i), "item")]
    complete = not missing or count_missing
    # an interim readout covers the items run so far; the final one every registered item
    ids = ids if count_missing else [i for i in ids if i not in missing]
    n = len(ids)

    def base_right(i: str) -> bool:
        row = base.get(i)
        return True if row is None or row.get("error") else bool(row.get("correct"))

    b = [base_right(i) for i in ids]
    m = [_ok(meth.get(i), "correct") for i in ids]
    agree = [_ok(base.get(i), "item") and _ok(meth.get(i), "agree") for i in ids]
    d, lo, hi = paired_difference(m, b, resamples=reg.resamples, seed=reg.bootstrap_seed)
    if not complete:
        verdict = f"incomplete ({n} of {reg.n} items): no claim"
    elif lo > -reg.epsilon:
        verdict = f"non-inferior at epsilon = {reg.epsilon:g}"
    elif hi < 0:
        verdict = "inferior"
    else:
        verdict = f"not shown non-inferior at epsilon = {reg.epsilon:g}"
    diffs = [float(x) - float(y) for x, y in zip(m, b, strict=True)]
    gold = dict(zip(reg.item_ids(), gold_passages(reg), strict=True))
    clusters = [gold[i] for i in ids]
    clo, chi = cluster_difference(diffs, clusters, resamples=reg.resamples, seed=reg.bootstrap_seed)
    # the anytime-valid test sees the pairs in item order, under the same gap rule
    test = NonInferiorityTest(reg.delta, reg.n, epsilon=reg.epsilon)
    state = test.state
    for x, y in zip(b, m, strict=True):
        state = test.update(x, y)
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
        "missing": missing,
        "errors": errors,
        "complete": complete,
        "primary": {
            "difference": d,
            "low": lo,
            "high": hi,
            "verdict": verdict,
            "borderline": complete and abs(lo + reg.epsilon) <= 1.0 / max(n, 1) + 1e-12,
        },
        "clustered": {
            "low": clo,
            "high": chi,
            "clusters": len(set(clusters)),
            "agrees": None if clo != clo else (clo > -reg.epsilon) == (lo > -reg.epsilon),
        },
        "sequential": {
            "decision": state.decision.value,
            "reason": state.reason,
            "pairs": state.n,
            "e_value": state.e_value,
            "low": state.lower,
            "high": state.upper,
        },
        "mcnemar": mcnemar(m, b),
        "accuracy": {
            reg.baseline: _rate(sum(b), n),
            reg.method: _rate(sum(m), n),
        },
        "agreement": _rate(sum(agree), n),
        "tokens_kept": sum(kept) / len(kept) if kept else float("nan"),
    }


def _pct(x: tuple[float, float, float]) -> str:
    return "n/a" if x[0] != x[0] else f"{x[0]:.0%} [{x[1]:.0%}, {x[2]:.0%}]"


def _pts(x: float) -> str:
    return "n/a" if x != x else f"{x * 100:+.1f}"


def markdown(out: dict[str, Any]) -> str:
    """The readout as a short Markdown report."""
    reg = out["registration"]
    p, c, s, mc = out["primary"], out["clustered"], out["sequential"], out["mcnemar"]
    acc, err = out["accuracy"], out["errors"]
    border = " (borderline: within one item of the margin)" if p["borderline"] else ""
    robust = {True: "agrees", False: "**disagrees**", None: "cannot be compared"}[c["agrees"]]
    return "\n".join(
        [
            f"# Pre-registered readout: {reg['name']}",
            "",
            f"Registration: `{reg['doc']}`. Items {reg['first_item']}–"
            f"{reg['first_item'] + reg['n'] - 1} of `{reg['suite']}` ({reg['split']}, seed "
            f"{reg['seed']}); `{reg['method']}` at ratio {reg['ratio']:g} vs `{reg['baseline']}`. "
            f"Pairs collected: {out['collected']} of {reg['n']} answered without error; missing: "
            f"{len(out['missing'])}; errored or skipped: {reg['baseline']} {err[reg['baseline']]}, "
            f"{reg['method']} {err[reg['method']]} (counted against the claim).",
            "",
            f"- **Primary**: accuracy difference {_pts(p['difference'])} points, 95 % paired "
            f"bootstrap [{_pts(p['low'])}, {_pts(p['high'])}] ({reg['resamples']:,} "
            f"resamples, seed {reg['bootstrap_seed']}): **{p['verdict']}**{border}.",
            f"- Sensitivity, resampling the {c['clusters']} gold passages: "
            f"[{_pts(c['low'])}, {_pts(c['high'])}], which {robust} with the primary "
            f"verdict.",
            f"- Sequential labelled test (delta {reg['delta']:g}, epsilon {reg['epsilon']:g}, "
            f"budget {reg['n']}): **{s['decision']}** after {s['pairs']} pairs"
            f"{' (' + s['reason'] + ')' if s['reason'] else ''} (e-value {s['e_value']:.3g}; "
            f"anytime-valid bound [{_pts(s['low'])}, {_pts(s['high'])}] points).",
            f"- McNemar: {reg['method']} only correct {mc['a_only']}, {reg['baseline']} only "
            f"correct {mc['b_only']} (exact p = {mc['p']:.3f}).",
            f"- Accuracy: {reg['baseline']} {_pct(acc[reg['baseline']])}, {reg['method']} "
            f"{_pct(acc[reg['method']])}; agreement {_pct(out['agreement'])}; tokens kept "
            f"{_pct((out['tokens_kept'], 0.0, 0.0)).split(' ')[0]} of the uncompressed prompt's "
            "(mean over items).",
            "",
        ]
    )


def pooled(paths: Sequence[Path]) -> dict[str, Any]:
    """The rows of several bench results (folders or ``results.json``), pooled. Raises
    ``ValueError`` naming the file when one is not a bench results file or was run on other
    BIG-bench data than the verified 1.0.0 sdist (``meta["bigbench_data"]``), or when one
    (item, method, ratio) has two different answers."""
    seen: dict[tuple[str, str, float], dict[str, Any]] = {}
    for path in paths:
        f = path / "results.json" if path.is_dir() else path
        try:
            run = json.loads(f.read_text(encoding="utf-8"))
            rows = run["rows"]
            keyed = [((r["item"], r["method"], float(r["ratio"])), r) for r in rows]
            data = data_read(run.get("meta", {}))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{f}: cannot read it as JSON ({exc})") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{f} is not a bench results file (rows of item, method, ratio)"
            ) from exc
        if data != "sdist":
            raise ValueError(
                f"{f} was run on {data}: a registered readout takes runs on the verified "
                "bigbench==1.0.0 sdist only"
            )
        for key, r in keyed:
            if key in seen and seen[key].get("answer") != r.get("answer"):
                raise ValueError(f"{key} has two different answers in {[str(p) for p in paths]}")
            seen.setdefault(key, r)
    return {"rows": list(seen.values())}


def _finite(x: Any) -> Any:
    """``x`` with every NaN as None (JSON has no NaN)."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.confirm", description=__doc__)
    ap.add_argument("registration", choices=sorted(REGISTERED))
    ap.add_argument(
        "results", type=Path, nargs="+", help="bench results folders or results.json files"
    )
    ap.add_argument(
        "--count-missing",
        action="store_true",
        help="count items with no row against the claim (once every chunk has been re-run)",
    )
    ap.add_argument("--out", type=Path, help="folder for the readout (default: the first's)")
    args = ap.parse_args(argv)
    for path in args.results:
        if not (path / "results.json" if path.is_dir() else path).is_file():
            ap.error(f"{path} is not a bench results folder or file")
    try:
        results = pooled(args.results)
    except ValueError as exc:
        ap.error(str(exc))
    out = readout(REGISTERED[args.registration], results, count_missing=args.count_missing)
    sys.stdout.write(markdown(out))
    first = args.results[0]
    folder = args.out or (first if first.is_dir() else first.parent)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"confirm-{args.registration}.json").write_text(
            json.dumps(_finite(out), indent=2, allow_nan=False)
        )
        (folder / f"confirm-{args.registration}.md").write_text(markdown(out))
    except OSError as exc:
        ap.error(f"cannot write the readout into {folder}: {exc.strerror or exc}")
    return out


if __name__ == "__main__":
    main()
