"""Screening statistics by simulation: error rates at the boundary, calls to pass, e-BH.

Everything is seeded and exact up to Monte-Carlo error (every rate comes with a Wilson 95 %
interval from ``scipy.stats.binomtest``). Four experiments:

1. **The seed paper's procedure** (Liu et al., ACL 2026, arXiv 2505.12509): a fixed-sample
   95 % t-interval on the agreement indicators, recomputed after every new pair, stopping at
   the first look whose interval clears τ (pass) or falls below it (fail), N ≤ 50. Against
   promptsieve's mixture test at the same settings (τ = 0.9, δ = 0.05, N = 50) and at its
   default budget (100): false-pass rate at the boundary (true agreement = τ) and the calls
   each needs to pass at true agreement 0.95 and 0.98.
2. **Every mode at its boundary**: agreement (τ = 0.9), labelled non-inferiority with the
   difference margin (ε = 0.05) and the ratio margin (ρ = 0.9), each under several joint
   laws of (original correct, compressed correct) on the null boundary. The "ever" column
   ignores budgets and fail stops (any crossing of the pass boundary within the horizon),
   an upper bound on every procedure's false-pass rate.
3. **Calls to pass** in labelled mode when compression helps (the issue's measured
   multi-document QA cells) and when it changes nothing.
4. **e-BH across 100 tasks, 30 truly below τ**: the share of wrongly passed tasks with
   per-task tests at δ and with e-BH at q, on stopped-at-pass e-values and on e-values
   screened on to K/q or the budget.

    python -m benchmarks.screening_sim                  # >= 5,000 runs per row (~2 min)
    python -m benchmarks.screening_sim --runs 20000 --out benchmarks/results/screening_sim.json
    python -m benchmarks.screening_sim --only-ebh --out benchmarks/results/screening_sim.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import binomtest
from scipy.stats import t as student_t

from promptsieve.fidelity.ebh import e_bh
from promptsieve.fidelity.labelled import NonInferiorityTest
from promptsieve.fidelity.stats import SequentialTest

from .screening_calls import exact_pass_cdf

__all__ = [
    "agreement_times",
    "ebh_simulation",
    "labelled_times",
    "sample_cells",
    "t_interval_times",
    "wilson",
]

TAU, DELTA, PAPER_N = 0.9, 0.05, 50


def wilson(k: int, n: int) -> tuple[float, float, float]:
    """(rate, low, high): the share k/n with its Wilson 95 % interval."""
    if n == 0:
        return float("nan"), 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(method="wilson")
    return k / n, float(ci.low), float(ci.high)


def _first(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """1-based index of the first True per row; horizon + 1 when none."""
    horizon = mask.shape[1]
    return np.where(mask.any(axis=1), mask.argmax(axis=1) + 1, horizon + 1).astype(np.int64)


# -- agreement ------------------------------------------------------------------------------


def t_interval_times(
    agreed: NDArray[np.bool_], tau: float = TAU, confidence: float = 0.95, n_min: int = 2
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The paper's procedure: pass/fail look per run (horizon + 1 = never).

    After pair n >= n_min: mean ± t_{(1+conf)/2, n-1} · s / sqrt(n) with s the sample
    standard deviation of the 0/1 agreements; pass when the interval lies above tau, fail
    when it lies below. (When every pair so far agreed, s = 0 and the interval is [1, 1].)
    """
    horizon = agreed.shape[1]
    n = np.arange(1, horizon + 1, dtype=np.float64)[None, :]
    s = np.cumsum(agreed, axis=1)
    mean = s / n
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(n > 1, n / (n - 1) * mean * (1 - mean), np.inf)
        crit = student_t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1))
        half = crit * np.sqrt(var / n)
    look = n >= n_min
    return _first(look & (mean - half > tau)), _first(look & (mean + half < tau))


def agreement_times(
    test: SequentialTest, agreed: NDArray[np.bool_]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """promptsieve's mixture test: first pass and first fail look per run."""
    s = np.cumsum(agreed, axis=1)
    f = np.arange(1, agreed.shape[1] + 1)[None, :] - s
    return _first(test.passes(s, f)), _first(test.fails(s, f))


# -- labelled -------------------------------------------------------------------------------


def sample_cells(
    rng: np.random.Generator, probs: Sequence[float], runs: int, horizon: int
) -> NDArray[np.int8]:
    """Cells per pair in Pairs order (0 both right, 1 original only, 2 compressed only,
    3 neither), i.i.d. with ``probs``."""
    p = np.asarray(probs, dtype=np.float64)
    return np.asarray(
        np.searchsorted(np.cumsum(p / p.sum()), rng.random((runs, horizon))), dtype=np.int8
    ).clip(0, 3)


def labelled_times(
    test: NonInferiorityTest, cells: NDArray[np.int8]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """First pass and first fail look per run of the non-inferiority test."""
    runs, horizon = cells.shape
    counts = np.stack([np.cumsum(cells == c, axis=1) for c in range(4)], axis=-1)
    flat = counts.reshape(-1, 4).astype(np.int64)
    uniq, inverse = np.unique(flat, axis=0, return_inverse=True)
    passes = test.passes(uniq.astype(np.float64))[inverse.ravel()].reshape(runs, horizon)
    fails = test.fails(uniq.astype(np.float64))[inverse.ravel()].reshape(runs, horizon)
    return _first(passes), _first(fails)


def _false_pass(t_pass: NDArray[np.int64], t_fail: NDArray[np.int64], budget: int) -> int:
    """Runs that pass within ``budget`` looks before any fail look."""
    return int(np.sum((t_pass <= budget) & (t_pass < t_fail)))


# -- e-BH -------------------------------------------------------------------------------------


def ebh_simulation(
    reps: int,
    seed: int,
    *,
    tasks: int = 100,
    nulls: int = 30,
    p_null: float = TAU,
    p_alt: tuple[float, float] = (0.95, 1.0),
    q: float = DELTA,
    budget: int = 100,
    tau: float = TAU,
    curtail: bool = True,
) -> dict[str, Any]:
    """FDR and discoveries across ``tasks`` tasks, ``nulls`` of them at agreement ``p_null``.

    Non-null tasks draw their agreement uniformly from ``p_alt``. Policies: "per-task" (pass
    at e >= 1/δ, δ = q); "e-BH, stopped at pass" (the same e-values, then e-BH at q); "e-BH,
    screened on" (each task screened until e >= K/q, a fail, or ``budget``; its e-value is the
    stopped one; then e-BH at q). Every policy also stops a task once it cannot pass within
    ``budget`` (curtailment, as the gate does: ``SequentialTest.can_pass``); that saves calls
    and changes no decision, since such a task's e-value stays below 1/δ ≤ K/(q·k). Returns
    rates with Wilson intervals and mean calls per task.
    """
    rng = np.random.default_rng(seed)
    test = SequentialTest(tau, q, budget=None)
    horizon = budget
    log_stop = math.log(tasks / q)
    out: dict[str, dict[str, float]] = {}
    names = ("per-task", "e-BH, stopped at pass", "e-BH, screened on")
    fdp: dict[str, list[float]] = {k: [] for k in names}
    found: dict[str, list[int]] = {k: [] for k in fdp}
    false: dict[str, list[int]] = {k: [] for k in fdp}
    calls: dict[str, list[int]] = {k: [] for k in fdp}
    is_null = np.zeros(tasks, dtype=bool)
    is_null[:nulls] = True
    grid_s, grid_f = np.meshgrid(np.arange(horizon + 1), np.arange(horizon + 1), indexing="ij")
    log_table = test.log_evidence_pass(grid_s, grid_f)  # (s, f) -> log e, computed once
    fail_table = test.fails(grid_s, grid_f)
    cut_table = ~SequentialTest(tau, q, budget=budget).can_pass(grid_s, grid_f)
    log_pass = math.log(1 / q)
    for _ in range(reps):
        p = np.where(is_null, p_null, rng.uniform(*p_alt, size=tasks))
        agreed = rng.random((tasks, horizon)) < p[:, None]
        s = np.cumsum(agreed, axis=1)
        f = np.arange(1, horizon + 1)[None, :] - s
        log_e = log_table[s, f]
        t_pass, t_fail = _first(log_e >= log_pass), _first(fail_table[s, f])
        if curtail:  # failed, or cannot pass
            t_fail = np.minimum(t_fail, _first(cut_table[s, f]))
        passed = (t_pass <= horizon) & (t_pass < t_fail)
        # per-task: discoveries are the passes; e-value at the pass look
        idx = np.clip(t_pass - 1, 0, horizon - 1)
        e_at_pass = np.where(passed, np.exp(log_e[np.arange(tasks), idx]), 0.0)
        t_on = _first(log_e >= log_stop)
        stop = np.minimum(np.minimum(t_on, t_fail), horizon)
        e_on = np.exp(np.minimum(log_e[np.arange(tasks), stop - 1], 700.0))
        policies = {
            "per-task": set(np.flatnonzero(passed).tolist()),
            "e-BH, stopped at pass": e_bh(dict(enumerate(e_at_pass.tolist())), q),
            "e-BH, screened on": e_bh(dict(enumerate(e_on.tolist())), q),
        }
        spent = {
            "per-task": np.minimum(np.minimum(t_pass, t_fail), horizon),
            "e-BH, stopped at pass": np.minimum(np.minimum(t_pass, t_fail), horizon),
            "e-BH, screened on": stop,
        }
        for name, disc in policies.items():
            wrong = sum(1 for i in disc if is_null[i])
            fdp[name].append(wrong / max(len(disc), 1))
            found[name].append(len(disc))
            false[name].append(wrong)
            calls[name].append(int(np.sum(spent[name])))
    for name in fdp:
        arr = np.asarray(fdp[name])
        sem = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else float("nan")
        out[name] = {
            "fdr": float(arr.mean()),
            "fdr_low": float(arr.mean() - 1.96 * sem),
            "fdr_high": float(arr.mean() + 1.96 * sem),
            "discoveries": float(np.mean(found[name])),
            "false_discoveries": float(np.mean(false[name])),
            "true_discoveries": float(np.mean(found[name]) - np.mean(false[name])),
            "calls_per_task": float(np.mean(calls[name]) / tasks),
        }
    return {"tasks": tasks, "nulls": nulls, "q": q, "budget": budget, "reps": reps, **out}


# -- the report -----------------------------------------------------------------------------

#: Joint laws (both right, original only, compressed only, neither) on each null boundary.
BOUNDARY_LAWS: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "difference eps=0.05": {
        "losses only (5 %)": (0.65, 0.05, 0.00, 0.30),
        "losses 15 %, gains 10 %": (0.50, 0.15, 0.10, 0.25),
        "losses 30 %, gains 25 %": (0.30, 0.30, 0.25, 0.15),
    },
    "ratio rho=0.9": {
        "acc 0.6 -> 0.54, losses only": (0.54, 0.06, 0.00, 0.40),
        "acc 0.9 -> 0.81, losses only": (0.81, 0.09, 0.00, 0.10),
        "acc 0.5 -> 0.45, swaps": (0.30, 0.20, 0.15, 0.35),
    },
}


def run_all(runs: int, seed: int, ebh_reps: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    res: dict[str, Any] = {"runs": runs, "seed": seed, "tau": TAU, "delta": DELTA}
    test = SequentialTest(TAU, DELTA, budget=None)
    horizon = 300
    # 1. paper vs promptsieve
    paper: dict[str, Any] = {}
    for p in (TAU, 0.95, 0.98):
        agreed = rng.random((runs, horizon)) < p
        row: dict[str, Any] = {}
        for n_min in (2, 10):
            tp, tf = t_interval_times(agreed[:, :PAPER_N], n_min=n_min)
            passed = (tp <= PAPER_N) & (tp < tf)
            row[f"t-interval (n>={n_min}), N=50"] = _summary(passed, tp)
        tp, tf = agreement_times(test, agreed)
        for budget in (PAPER_N, 100, horizon):
            passed = (tp <= budget) & (tp < tf)
            row[f"promptsieve mixture, N={budget}"] = _summary(passed, tp)
        row["promptsieve mixture, ever (no budget, no fail stop)"] = _summary(tp <= horizon, tp)
        paper[f"p={p:g}"] = row
    res["paper_vs_promptsieve"] = paper
    # 2. every mode at its boundary
    boundary: dict[str, Any] = {}
    at_tau = rng.random((runs, horizon)) < TAU
    tp, tf = agreement_times(test, at_tau)
    boundary["agreement tau=0.9"] = {
        "p = tau": {
            "budget 100": _rate(_false_pass(tp, tf, 100), runs),
            "ever (300)": _rate(int(np.sum(tp <= horizon)), runs),
        }
    }
    for mode, laws in BOUNDARY_LAWS.items():
        kw = {"epsilon": 0.05} if mode.startswith("difference") else {"rho": 0.9}
        lt = NonInferiorityTest(DELTA, None, **kw)
        rows = {}
        for name, law in laws.items():
            cells = sample_cells(rng, law, runs, horizon)
            tp, tf = labelled_times(lt, cells)
            rows[name] = {
                "budget 100": _rate(_false_pass(tp, tf, 100), runs),
                "ever (300)": _rate(int(np.sum(tp <= horizon)), runs),
            }
        boundary[f"labelled {mode}"] = rows
    res["boundary"] = boundary
    res["exact_agreement_boundary"] = exact_boundary()
    # 3. labelled calls to pass
    helps = (6 / 16, 2 / 16, 4 / 16, 4 / 16)  # the 16 multi-document QA questions
    same = (0.6, 0.0, 0.0, 0.4)
    labelled: dict[str, Any] = {}
    for label, law in (("compression helps (issue's QA cells)", helps), ("no change", same)):
        cells = sample_cells(rng, law, runs, horizon)
        for kw in ({"epsilon": 0.05}, {"rho": 0.9}):
            lt = NonInferiorityTest(DELTA, None, **kw)
            tp, tf = labelled_times(lt, cells)
            name = f"{label}, " + ", ".join(f"{k}={v:g}" for k, v in kw.items())
            labelled[name] = {
                "budget 100": _summary((tp <= 100) & (tp < tf), tp),
                "budget 300": _summary((tp <= horizon) & (tp < tf), tp),
            }
    res["labelled_calls"] = labelled
    # 4. e-BH
    res["ebh"] = [ebh_simulation(ebh_reps, seed + 1, budget=b) for b in (100, 300)]
    return res


def exact_boundary(horizons: Sequence[int] = (50, 100, 300, 1000)) -> dict[str, float]:
    """Agreement mode at p = tau, without Monte-Carlo error: P(the pass boundary is crossed
    within n looks), by dynamic programming over the counts (fail stops ignored, so an upper
    bound on the false-pass rate at budget n)."""
    cdf = exact_pass_cdf(SequentialTest(TAU, DELTA, budget=None), TAU, max(horizons))
    return {f"within {n}": float(cdf[n]) for n in horizons}


def _rate(k: int, n: int) -> dict[str, float]:
    r, lo, hi = wilson(k, n)
    return {"rate": r, "low": lo, "high": hi, "k": k, "n": n}


def _summary(passed: NDArray[np.bool_], t_pass: NDArray[np.int64]) -> dict[str, Any]:
    k = int(np.sum(passed))
    out: dict[str, Any] = _rate(k, len(passed))
    out["median_calls_to_pass"] = float(np.median(t_pass[passed])) if k else None
    return out


def _fmt(r: dict[str, Any]) -> str:
    return f"{r['rate']:.4f} [{r['low']:.4f}, {r['high']:.4f}]"


def render(res: dict[str, Any]) -> str:
    lines = [f"runs per row: {res['runs']}, seed {res['seed']}, tau {res['tau']}, "
             f"delta {res['delta']}", ""]  # fmt: skip
    lines += ["## Paper's repeated t-interval vs promptsieve (agreement mode)", ""]
    lines += ["| procedure | pass rate at p=0.9 (false) | p=0.95: pass rate | median calls |"
              " p=0.98: pass rate | median calls |", "|---|---|---|---|---|---|"]  # fmt: skip
    rows = res["paper_vs_promptsieve"]
    for name in rows["p=0.9"]:
        a, b, c = rows["p=0.9"][name], rows["p=0.95"][name], rows["p=0.98"][name]
        lines.append(
            f"| {name} | {_fmt(a)} | {_fmt(b)} | {b['median_calls_to_pass']} | {_fmt(c)} | "
            f"{c['median_calls_to_pass']} |"
        )
    lines += ["", "## False-pass rate at the null boundary, every mode", ""]
    lines += ["| mode | law on the boundary | budget 100 | ever (300 looks) |", "|---|---|---|---|"]
    for mode, laws in res["boundary"].items():
        for law, r in laws.items():
            lines.append(f"| {mode} | {law} | {_fmt(r['budget 100'])} | {_fmt(r['ever (300)'])} |")
    exact = res.get("exact_agreement_boundary")
    if exact:
        lines += ["", "Agreement mode at p = tau, exact (dynamic programming, no sampling "
                  "error; fail stops ignored): P(pass boundary crossed) "
                  + ", ".join(f"{k} looks: {v:.4f}" for k, v in exact.items())]  # fmt: skip
    lines += ["", "## Labelled mode: pairs to pass", ""]
    lines += ["| scenario | pass within 100 | median pairs | pass within 300 | median pairs |",
              "|---|---|---|---|---|"]  # fmt: skip
    for name, r in res["labelled_calls"].items():
        a, b = r["budget 100"], r["budget 300"]
        lines.append(
            f"| {name} | {_fmt(a)} | {a['median_calls_to_pass']} | {_fmt(b)} | "
            f"{b['median_calls_to_pass']} |"
        )
    e0 = res["ebh"][0]
    lines += ["", f"## e-BH: {e0['tasks']} tasks, {e0['nulls']} at agreement = tau, the "
              f"others uniform in [0.95, 1]; q = delta = {e0['q']}; {e0['reps']} repetitions",
              ""]  # fmt: skip
    lines += ["| budget | policy | FDR (mean false share) [95 % CI] | discoveries | false | "
              "true | calls per task |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for e in res["ebh"]:
        for name in ("per-task", "e-BH, stopped at pass", "e-BH, screened on"):
            r = e[name]
            lines.append(
                f"| {e['budget']} | {name} | {r['fdr']:.4f} [{r['fdr_low']:.4f}, "
                f"{r['fdr_high']:.4f}] | {r['discoveries']:.1f} | {r['false_discoveries']:.2f} | "
                f"{r['true_discoveries']:.1f} | {r['calls_per_task']:.1f} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5000, help="Monte-Carlo runs per row")
    ap.add_argument("--ebh-reps", type=int, default=1000, help="repetitions of the 100 tasks")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON results here")
    ap.add_argument(
        "--only-ebh",
        action="store_true",
        help="recompute experiment 4 (e-BH) alone and replace it in the --out JSON",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.only_ebh:
        if args.out is None or not args.out.is_file():
            ap.error("--only-ebh updates an earlier run's results: give its JSON as --out")
        res = json.loads(args.out.read_text())
        res["ebh"] = [ebh_simulation(args.ebh_reps, res["seed"] + 1, budget=b) for b in (100, 300)]
        res["ebh_seconds"] = round(time.perf_counter() - t0, 1)
    else:
        res = run_all(args.runs, args.seed, args.ebh_reps)
        res["seconds"] = round(time.perf_counter() - t0, 1)
    text = render(res)
    print(text)
    print(f"\n({res.get('ebh_seconds', res['seconds'])} s)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(res, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text + "\n")


if __name__ == "__main__":
    main()
