"""How many paired target calls does screening need to pass? (README number)

Prints, for the default sequential test (tau=0.9, delta=0.05), the exact distribution of the
number of paired comparisons to pass when the true agreement rate is 0.98 (dynamic
programming over the counts, no sampling error) and a simulation check.

    python benchmarks/screening_calls.py [--p 0.98] [--tau 0.9] [--delta 0.05]
"""

from __future__ import annotations

import argparse

import numpy as np

from promptsieve.fidelity.stats import SequentialTest


def exact_pass_cdf(test: SequentialTest, p: float, horizon: int) -> np.ndarray:
    """P(passed by n) for n = 0..horizon, ignoring fail stops (pure pass-time law)."""
    need = [test.min_successes_to_pass(f, limit=10 * horizon) for f in range(horizon + 1)]
    alive = np.zeros(horizon + 1)  # alive[f]: prob. of f failures so far and not yet passed
    alive[0] = 1.0
    cdf = np.zeros(horizon + 1)
    for n in range(1, horizon + 1):
        new = np.zeros_like(alive)
        new[:n] += alive[:n] * p  # a success keeps f
        new[1 : n + 1] += alive[:n] * (1 - p)  # a failure adds one
        passed = 0.0
        for f in range(n + 1):
            s = n - f
            if new[f] and need[f] is not None and s >= need[f]:
                passed += new[f]
                new[f] = 0.0
        cdf[n] = cdf[n - 1] + passed
        alive = new
    return cdf


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--p", type=float, default=0.98)
    ap.add_argument("--tau", type=float, default=0.9)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--horizon", type=int, default=300)
    args = ap.parse_args()
    test = SequentialTest(args.tau, args.delta, budget=None)
    cdf = exact_pass_cdf(test, args.p, args.horizon)
    median = int(np.argmax(cdf >= 0.5)) if cdf[-1] >= 0.5 else None
    rng = np.random.default_rng(0)
    agreed = rng.random((args.runs, args.horizon)) < args.p
    s = np.cumsum(agreed, axis=1)
    f = np.arange(1, args.horizon + 1)[None, :] - s
    passes = test.passes(s, f)
    t_pass = np.where(passes.any(axis=1), passes.argmax(axis=1) + 1, args.horizon + 1)
    print(f"tau={args.tau} delta={args.delta} true agreement={args.p}")
    need = [test.min_successes_to_pass(k) for k in range(4)]
    print(f"agreements needed to pass with 0/1/2/3 disagreements: {need}")
    print(f"median paired calls to pass (exact): {median}")
    print(f"median paired calls to pass (simulated, {args.runs} runs): {np.median(t_pass):g}")
    for budget in (30, 50, 100, 200):
        print(f"P(pass within {budget} comparisons) = {cdf[min(budget, args.horizon)]:.3f}")


if __name__ == "__main__":
    main()
