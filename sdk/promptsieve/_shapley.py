"""Shapley values of a set function: exact enumeration and Kernel SHAP.

A *game* here is a value function ``v`` on subsets of ``n`` players (demonstrations), given
as a table: the caller asks :func:`coalitions` which subsets it needs, evaluates them all at
once (so an LM proxy can share its KV cache across common prefixes), and hands the values back
to :func:`exact_shapley` or :func:`kernel_shap`.

- Exact Shapley (Shapley 1953): ``phi_i = sum_{S not containing i} |S|!(n-|S|-1)!/n!
  (v(S+i) - v(S))`` over all ``2**n`` subsets; used for ``n <= 10``.
- Kernel SHAP (Lundberg & Lee 2017, "A Unified Approach to Interpreting Model
  Predictions", NeurIPS, Theorem 2): the Shapley values are the solution of a weighted
  linear regression of ``v(S) - v(empty)`` on the coalition indicators, with the Shapley
  kernel weight ``(n-1) / (C(n,|S|) |S| (n-|S|))`` and the efficiency constraint
  ``sum phi = v(all) - v(empty)`` enforced exactly. Coalitions are sampled by size from the
  kernel's mass, uniformly within a size, in complementary pairs, after enumerating the
  smallest and largest sizes completely while the budget allows (the ``shap`` package's
  plan, a large variance reduction).

The ``shap`` package's ``KernelExplainer`` computes the same estimator, but it is built for
feature matrices with a background data set, evaluates coalitions one model call at a time in
its own order (no prefix sharing), and pulls numba, pandas and scikit-learn; the estimator is
a few lines of numpy and scipy here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy.special import comb

__all__ = ["coalitions", "exact_shapley", "kernel_shap", "sample_coalitions"]

Coalition = tuple[int, ...]


def coalitions(n: int) -> list[Coalition]:
    """All ``2**n`` subsets of ``range(n)`` as sorted tuples (the empty one first)."""
    if not 0 <= n <= 20:
        raise ValueError(f"exact enumeration needs 0 <= n <= 20, got {n}")
    return [tuple(i for i in range(n) if mask >> i & 1) for mask in range(1 << n)]


def exact_shapley(n: int, values: dict[Coalition, float]) -> np.ndarray:
    """Exact Shapley values ``(n,)`` from the values of all ``2**n`` coalitions.

    Raises ``KeyError`` when a coalition is missing.
    """
    w = np.array(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    )
    table = np.empty(1 << n)
    for mask in range(1 << n):
        table[mask] = values[tuple(i for i in range(n) if mask >> i & 1)]
    phi = np.zeros(n)
    for mask in range(1 << n):
        size = bin(mask).count("1")
        for i in range(n):
            if not mask >> i & 1:
                phi[i] += w[size] * (table[mask | 1 << i] - table[mask])
    return phi


def _kernel_weight(n: int, s: int) -> float:
    return (n - 1) / (float(comb(n, s)) * s * (n - s))


def sample_coalitions(n: int, samples: int, seed: int = 0) -> list[Coalition]:
    """About ``samples`` distinct proper coalitions (``0 < |S| < n``) for Kernel SHAP.

    When ``samples`` covers every proper coalition (``2**n - 2``), all of them are returned.
    Otherwise the smallest and largest sizes are enumerated while the budget allows, and the
    rest drawn from the Shapley kernel's mass over sizes, members uniformly, each draw with
    its complement (see :func:`_draw`). Duplicates are kept once; their multiplicity is
    recomputed by :func:`kernel_shap` from the same seed.
    """
    return list(_draw(n, samples, seed))


def _draw(n: int, samples: int, seed: int) -> dict[Coalition, float]:
    """Coalition -> regression weight, as the ``shap`` package's KernelExplainer plans them.

    Coalition sizes are visited from the outside in (1 and n-1, then 2 and n-2, ...); while
    the remaining budget covers every coalition of a size pair they are all enumerated, each
    weighted by its exact share of the Shapley kernel. The remaining kernel mass is spread
    over coalitions sampled (with their complements) from the sizes not enumerated.
    """
    if n < 2:
        return {}
    if samples >= (1 << n) - 2:
        return {c: _kernel_weight(n, len(c)) for c in coalitions(n) if 0 < len(c) < n}
    rng = np.random.default_rng(seed)
    half = (n - 1 + 1) // 2  # sizes 1..half; size s is paired with n-s unless s == n-s
    sizes = list(range(1, half + 1))
    paired = {s: s != n - s for s in sizes}
    mass = np.array([(n - 1) / (s * (n - s)) * (2 if paired[s] else 1) for s in sizes])
    mass /= mass.sum()
    out: dict[Coalition, float] = {}
    budget = samples
    left = mass.copy()
    done = 0
    for k, s in enumerate(sizes):
        count = int(comb(n, s)) * (2 if paired[s] else 1)
        share = left[k] / left[k:].sum()
        if budget * share < count - 1e-9:
            break
        w = mass[k] / comb(n, s) / (2 if paired[s] else 1)
        for c in itertools.combinations(range(n), s):
            out[c] = out.get(c, 0.0) + w
            if paired[s]:
                comp = tuple(i for i in range(n) if i not in c)
                out[comp] = out.get(comp, 0.0) + w
        budget -= count
        done = k + 1
    rest = sizes[done:]
    if rest and budget > 0:
        p = mass[done:] / mass[done:].sum()
        remaining = float(mass[done:].sum())
        drawn: dict[Coalition, float] = {}
        for _ in range(max(1, budget // 2)):
            s = int(rng.choice(rest, p=p))
            c = tuple(sorted(int(i) for i in rng.choice(n, size=s, replace=False)))
            comp = tuple(i for i in range(n) if i not in c)
            drawn[c] = drawn.get(c, 0.0) + 1.0
            drawn[comp] = drawn.get(comp, 0.0) + 1.0
        total = sum(drawn.values())
        for c, cnt in drawn.items():
            out[c] = out.get(c, 0.0) + remaining * cnt / total
    return out


def kernel_shap(
    n: int,
    values: dict[Coalition, float],
    samples: int,
    seed: int = 0,
) -> np.ndarray:
    """Kernel SHAP estimate ``(n,)`` (Lundberg & Lee 2017) from the coalition values.

    ``values`` must hold the empty coalition, the full one and every coalition that
    :func:`sample_coalitions` returned for the same ``(n, samples, seed)``. The efficiency
    constraint holds exactly: ``phi.sum() == v(all) - v(empty)``.
    """
    empty, full = values[()], values[tuple(range(n))]
    total = full - empty
    if n == 1:
        return np.array([total])
    weights = _draw(n, samples, seed)
    z = np.zeros((len(weights), n))
    y = np.empty(len(weights))
    w = np.empty(len(weights))
    for row, (c, wt) in enumerate(weights.items()):
        z[row, list(c)] = 1.0
        y[row] = values[c] - empty
        w[row] = wt
    # eliminate phi_{n-1} = total - sum_{i<n-1} phi_i
    x = z[:, :-1] - z[:, -1:]
    yy = y - z[:, -1] * total
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(x * sw[:, None], yy * sw, rcond=None)
    return np.append(coef, total - coef.sum())


def needed(n: int, method: str, samples: int, seed: int = 0) -> list[Coalition]:
    """Every coalition whose value ``method`` ("exact" | "kernel") needs, empty first."""
    if method == "exact":
        return coalitions(n)
    out: list[Coalition] = [(), tuple(range(n))]
    out.extend(c for c in sample_coalitions(n, samples, seed) if c not in ((), tuple(range(n))))
    return out


def as_table(
    subsets: Sequence[Coalition], vals: Sequence[float] | np.ndarray
) -> dict[Coalition, float]:
    """``{coalition: value}`` from parallel sequences."""
    return {tuple(s): float(v) for s, v in zip(subsets, vals, strict=True)}
