"""Error control across many tasks: e-BH on the verdicts' e-values.

A deployment screens dozens of tasks. At δ = 0.05 per task some wrong passes are expected
among them; what a user can bound instead is the *false-discovery rate*, the expected share of
wrongly passed tasks among those applied. e-BH (Wang & Ramdas, "False discovery rate control
with e-values", JRSS-B 2022) does so from one e-value per task and stays valid under
arbitrary dependence between the tasks (they share a target, a proxy and traffic):

    sort e_(1) >= e_(2) >= ... >= e_(K);  k* = max{k : e_(k) >= K / (q k)};
    discover the k* tasks with the largest e-values.

Each verdict records an e-value (:attr:`~promptsieve.fidelity.store.Verdict.e_value`): the
stopped value of its test supermartingale (agreement: the mixture M(τ); labelled: the betting
e-process). For a ladder it is the smallest over the rungs that passed. That is valid for
e-BH: a task is wrongly applied only if the first rung whose true agreement is below τ
passed, and the recorded value is at most that rung's stopped e-value, whose mean is ≤ 1.

A test that stops as soon as e >= 1/δ records an e-value just above 1/δ, and e-BH needs
e >= K/(q k): with stopped-at-pass e-values e-BH discovers all passes only when every task
passed. Power comes from more evidence per task, e.g. screening each task on until
e >= K/q or its budget (``benchmarks/screening_sim.py`` simulates both).
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Mapping
from typing import TypeVar

from promptsieve._errors import ConfigError
from promptsieve.fidelity.store import VerdictState, VerdictStore

__all__ = ["e_bh", "ebh_discoveries"]

K = TypeVar("K", bound=Hashable)


def e_bh(e_values: Mapping[K, float], q: float, *, k_total: int | None = None) -> set[K]:
    """The e-BH discoveries at level ``q`` among ``e_values`` (hypothesis -> e-value).

    ``k_total``: the number of hypotheses K when some are not listed (their e-values count
    as 0); defaults to ``len(e_values)``. Negative or NaN e-values count as 0. Raises
    ConfigError when ``q`` is not in (0, 1) or ``k_total`` is below the number listed.
    Source: Wang & Ramdas (2022), Definition of the e-BH procedure.
    """
    if not 0 < q < 1:
        raise ConfigError(f"q must be in (0, 1), got {q}")
    total = len(e_values) if k_total is None else k_total
    if total < len(e_values):
        raise ConfigError(f"k_total ({total}) is below the number of e-values ({len(e_values)})")
    clean = {h: (e if e == e and e > 0 else 0.0) for h, e in e_values.items()}
    ranked = sorted(clean.items(), key=lambda he: he[1], reverse=True)
    best = 0
    for k, (_, e) in enumerate(ranked, start=1):
        if e >= total / (q * k) or math.isinf(e):
            best = k
    return {h for h, _ in ranked[:best]}


def ebh_discoveries(
    store: VerdictStore,
    q: float,
    *,
    now: float | None = None,
    settings_digest: str | None = None,
) -> set[str]:
    """Digests of the passed verdicts in ``store`` that e-BH at level ``q`` discovers.

    Every unexpired verdict in the store is one hypothesis (K counts failed and screening
    ones too, with e-value 0: only passed verdicts can be discovered). ``settings_digest``
    restricts K to verdicts with those settings. Raises StoreError when the store is down.
    """
    now = time.time() if now is None else now
    e_values: dict[str, float] = {}
    for sv in store.verdicts():
        v = sv.verdict
        if v.expired(now):
            continue
        if settings_digest is not None and sv.settings_digest != settings_digest:
            continue
        passed = v.state is VerdictState.PASSED and v.e_value is not None
        e_values[sv.digest] = float(v.e_value) if passed and v.e_value is not None else 0.0
    return e_bh(e_values, q)
