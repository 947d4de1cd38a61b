"""Sequential tests of an agreement rate that stay valid under optional stopping.

Screening asks "does the target answer the compressed prompt the same way at least a share
τ of the time?" as H0: p ≤ τ against H1: p > τ, looking at the data after every paired
comparison and stopping as soon as it can. Fixed-n tests (a binomial p-value checked after
every call) inflate the false-pass rate when used like that, so we use test supermartingales
and Ville's inequality instead: for a non-negative supermartingale M with M_0 = 1 under H0,
P(sup_n M_n ≥ 1/δ) ≤ δ, whenever and however often we look.

Pass side (H0: p ≤ q). For every alternative p1 > q the likelihood ratio
(p1/q)^S ((1-p1)/(1-q))^F is a martingale at p = q and a supermartingale for p < q (its
one-step mean is linear in p and equals 1 at q). A mixture of them over a prior π on [q, 1]
is again one (Robbins' mixture), and with a Beta prior truncated to [q, 1] it has a closed form
in the counts S (agreements) and F (disagreements) through incomplete beta functions (scipy):

    M(q) = B(S+a, F+b) · Ī_q(S+a, F+b) / (B(a, b) · Ī_q(a, b)) / (q^S (1-q)^F)

with Ī_q = 1 - I_q the upper regularised incomplete beta. Because M depends on the counts
only, a verdict store that keeps (n, agree) per ratio holds the whole test state, and
concurrent writers just increment counters.

Why this prior. No valid test can pass before (1/τ)^n ≥ 1/δ, i.e. 29 straight agreements at
τ = 0.9, δ = 0.05 (a run of 29 agreements has probability 0.9^29 ≈ δ under p = τ). To come
close, most of the prior mass sits near p = 1: 95 % on a Beta whose mean is 1 - (1-τ)/20
(0.995 at τ = 0.9) with b = 0.5, and 5 % on a flat Beta(1, 1) so that tasks that agree, say,
95 % of the time still pass eventually. At τ = 0.9 this passes after 30 straight agreements,
64 with one disagreement, 90 with two; with true agreement 0.98 the median is 30 paired
calls (exact, see ``benchmarks/screening_calls.py``).

Fail side (H0': p ≥ q, used for "fail early" and for monitoring a passed verdict). The
mirror image with a flat prior on [0, q]; it rejects when the data show p < q. Its level does
not matter for the false-pass guarantee (failing only stops the test), and it gives
monitoring a revocation rule valid however long monitoring runs.

Bounds. The lower bound is the largest q that the pass side rejects, the upper bound the
smallest q that the fail side rejects (found by bisection); "lower bound clears τ" is
exactly "M(τ) ≥ 1/δ", which is what decides.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import betainc, betaincc, betaln, logsumexp

from promptsieve._errors import ConfigError

__all__ = ["CURTAILED", "Outcome", "SequentialTest", "TestState"]

#: ``TestState.reason`` of a test stopped because no pass is left within its budget.
CURTAILED = "cannot pass within the budget"

_SPIKE_WEIGHT = 0.95  # prior mass near p = 1 (see the module docstring)
_SPIKE_B = 0.5
_SPIKE_GAP = 20.0  # the spike's mean is 1 - (1 - q) / _SPIKE_GAP
_EPS = 1e-12


class Outcome(str, Enum):
    """Where a sequential test stands."""

    CONTINUE = "continue"
    PASS = "pass"
    FAIL = "fail"


@dataclass(frozen=True)
class TestState:
    """Counts, anytime-valid bounds on the agreement rate, and the decision they imply."""

    __test__ = False  # not a pytest class

    n: int
    successes: int
    lower: float
    upper: float
    decision: Outcome
    #: "lower bound > tau" | "upper bound < tau" | "budget" | CURTAILED | "" (labelled mode:
    #: "... margin" for "... tau")
    reason: str = ""
    #: The pass side's e-value at these counts: the mixture martingale M(tau) (agreement
    #: mode) or the betting e-process (labelled mode). A stopped test supermartingale, so
    #: E[e] <= 1 when the task is truly below tau; e-BH across tasks uses it.
    e_value: float = 1.0

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else float("nan")


def _as_array(x: ArrayLike) -> NDArray[np.float64]:
    return np.asarray(x, dtype=np.float64)


def _log_mix_upper(
    s: NDArray[np.float64], f: NDArray[np.float64], q: float, a: float, b: float
) -> NDArray[np.float64]:
    """log of the Beta(a, b)-on-[q, 1] mixture likelihood ratio against p = q."""
    num = betaln(s + a, f + b) + np.log(np.maximum(betaincc(s + a, f + b, q), 1e-300))
    den = betaln(a, b) + math.log(max(float(betaincc(a, b, q)), 1e-300))
    return np.asarray(num - den - s * math.log(q) - f * math.log1p(-q), dtype=np.float64)


def _log_mix_lower(
    s: NDArray[np.float64], f: NDArray[np.float64], q: float, a: float, b: float
) -> NDArray[np.float64]:
    """log of the Beta(a, b)-on-[0, q] mixture likelihood ratio against p = q."""
    num = betaln(s + a, f + b) + np.log(np.maximum(betainc(s + a, f + b, q), 1e-300))
    den = betaln(a, b) + math.log(max(float(betainc(a, b, q)), 1e-300))
    return np.asarray(num - den - s * math.log(q) - f * math.log1p(-q), dtype=np.float64)


class SequentialTest:
    """Anytime-valid test of H0: agreement ≤ tau against H1: agreement > tau.

    ``update(agreed)`` after each paired comparison; ``evaluate(n, successes)`` judges counts
    kept elsewhere (a verdict store). Bad ``tau``/``delta``/``budget`` raise ConfigError;
    ``evaluate`` raises ValueError on impossible counts. PASS when the lower bound clears
    ``tau`` (false-pass rate ≤ ``delta`` for any true rate ≤ tau, under optional
    stopping); FAIL when the upper bound falls below ``tau``, when ``budget`` comparisons
    were spent without a pass, or as soon as no pass is left within the budget even if every
    remaining comparison agreed (deterministic curtailment: the same verdict as running the
    budget out, in fewer calls; at τ = 0.9, δ = 0.05 and a budget of 100, three
    disagreements). A budget no pass fits in starts decided, and ``update`` then raises;
    ``GateConfig`` and ``ScreenConfig`` refuse such budgets (``check_budget``).
    ``budget=None``: no cap, as in monitoring.
    """

    __test__ = False

    def __init__(
        self,
        tau: float = 0.9,
        delta: float = 0.05,
        budget: int | None = 100,
        *,
        prior: tuple[float, float] | None = None,
    ) -> None:
        if not 0 < tau < 1:
            raise ConfigError(f"tau must be in (0, 1), got {tau}")
        if not 0 < delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {delta}")
        if budget is not None and budget < 1:
            raise ConfigError(f"budget must be a positive number of comparisons, got {budget}")
        self.tau = tau
        self.delta = delta
        self.budget = budget
        self._prior = prior
        self._log_threshold = math.log(1.0 / delta)
        self.n = 0
        self.successes = 0
        self._state = self.evaluate(0, 0)

    # -- evidence -------------------------------------------------------------------------

    def _spike(self, q: float) -> tuple[float, float]:
        if self._prior is not None:
            return self._prior
        mean_odds = _SPIKE_GAP / (1.0 - q) - 1.0  # mean/(1-mean) for mean 1-(1-q)/gap
        return (_SPIKE_B * mean_odds, _SPIKE_B)

    def log_evidence_pass(
        self, successes: ArrayLike, failures: ArrayLike, q: float | None = None
    ) -> NDArray[np.float64]:
        """log M(q) of the pass-side mixture martingale (vectorised over count arrays)."""
        q = self.tau if q is None else q
        s, f = _as_array(successes), _as_array(failures)
        a, b = self._spike(q)
        if self._prior is not None:
            return _log_mix_upper(s, f, q, a, b)
        spike = math.log(_SPIKE_WEIGHT) + _log_mix_upper(s, f, q, a, b)
        flat = math.log(1.0 - _SPIKE_WEIGHT) + _log_mix_upper(s, f, q, 1.0, 1.0)
        return np.asarray(logsumexp(np.stack([spike, flat]), axis=0), dtype=np.float64)

    def log_evidence_fail(
        self, successes: ArrayLike, failures: ArrayLike, q: float | None = None
    ) -> NDArray[np.float64]:
        """log M'(q) of the fail-side mixture martingale (evidence that agreement < q)."""
        q = self.tau if q is None else q
        return _log_mix_lower(_as_array(successes), _as_array(failures), q, 1.0, 1.0)

    def passes(self, successes: ArrayLike, failures: ArrayLike) -> NDArray[np.bool_]:
        """Vectorised: does the pass side reject H0 at these counts?"""
        return self._on_unique(self.log_evidence_pass, successes, failures)

    def fails(self, successes: ArrayLike, failures: ArrayLike) -> NDArray[np.bool_]:
        """Vectorised: does the fail side show agreement significantly below tau?"""
        return self._on_unique(self.log_evidence_fail, successes, failures)

    def can_pass(
        self, successes: ArrayLike, failures: ArrayLike, left: ArrayLike | None = None
    ) -> NDArray[np.bool_]:
        """Vectorised: would the pass side still reject H0 if the next ``left`` comparisons
        all agreed? ``left`` defaults to what the budget leaves (``budget - n``, at least 0);
        without a budget it is unbounded and the answer is always True. The evidence grows
        with agreements, so False means no future within ``left`` passes."""
        s, f = np.broadcast_arrays(np.asarray(successes), np.asarray(failures))
        if left is None:
            if self.budget is None:
                return np.ones(s.shape, dtype=np.bool_)
            left = np.maximum(self.budget - (s + f), 0)
        return self.passes(s + np.asarray(left), f)

    def _on_unique(
        self,
        evidence: Callable[[ArrayLike, ArrayLike], NDArray[np.float64]],
        successes: ArrayLike,
        failures: ArrayLike,
    ) -> NDArray[np.bool_]:
        # Simulations ask about the same few (S, F) pairs millions of times: evaluate the
        # incomplete beta functions once per distinct pair.
        s, f = np.broadcast_arrays(np.asarray(successes), np.asarray(failures))
        si, fi = s.astype(np.int64).ravel(), f.astype(np.int64).ravel()
        if not (np.array_equal(si, s.ravel()) and np.array_equal(fi, f.ravel())):
            raise ValueError("counts must be whole numbers")
        if si.size == 0:
            return np.zeros(s.shape, dtype=np.bool_)
        if min(int(si.min()), int(fi.min())) < 0:
            raise ValueError("counts must be non-negative")
        width = int(fi.max()) + 1
        codes = si * width + fi
        table = np.zeros(int(codes.max()) + 1, dtype=np.bool_)
        uniq = np.flatnonzero(np.bincount(codes))
        table[uniq] = evidence(uniq // width, uniq % width) >= self._log_threshold
        return np.asarray(table[codes].reshape(s.shape), dtype=np.bool_)

    # -- bounds ---------------------------------------------------------------------------

    def _lower(self, s: int, f: int) -> float:
        def rejects(q: float) -> bool:
            return bool(self.log_evidence_pass(s, f, q) >= self._log_threshold)

        return _bisect(rejects, s, s + f, want_low=True)

    def _upper(self, s: int, f: int) -> float:
        def rejects(q: float) -> bool:
            return bool(self.log_evidence_fail(s, f, q) >= self._log_threshold)

        return _bisect(rejects, s, s + f, want_low=False)

    # -- decisions ------------------------------------------------------------------------

    def evaluate(self, n: int, successes: int) -> TestState:
        """The state implied by ``successes`` agreements out of ``n`` comparisons."""
        if n < 0 or not 0 <= successes <= n:
            raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
        f = n - successes
        lower = self._lower(successes, f)
        upper = self._upper(successes, f)
        e = self.e_value(successes, f)
        if bool(self.passes(successes, f)):
            return TestState(
                n, successes, max(lower, self.tau), upper, Outcome.PASS, "lower bound > tau", e
            )
        lower = min(lower, self.tau)
        if bool(self.fails(successes, f)):
            return TestState(
                n, successes, lower, min(upper, self.tau), Outcome.FAIL, "upper bound < tau", e
            )
        upper = max(upper, self.tau)
        if self.budget is not None and n >= self.budget:
            return TestState(n, successes, lower, upper, Outcome.FAIL, "budget", e)
        if not bool(self.can_pass(successes, f)):
            return TestState(n, successes, lower, upper, Outcome.FAIL, CURTAILED, e)
        return TestState(n, successes, lower, upper, Outcome.CONTINUE, "", e)

    def e_value(self, successes: int, failures: int) -> float:
        """The pass side's e-value M(tau) at these counts (float; ``inf`` on overflow).

        Stopped at any stopping time it is an e-value for H0: agreement <= tau (Ville /
        optional stopping for test supermartingales), which is what e-BH needs.
        """
        log_e = float(self.log_evidence_pass(successes, failures))
        return math.exp(log_e) if log_e < 700 else math.inf

    def update(self, agreed: bool) -> TestState:
        """Add one paired comparison. Updates after a decision raise: start a new test."""
        if self._state.decision is not Outcome.CONTINUE:
            raise RuntimeError(f"the test already decided: {self._state.decision.value}")
        self.n += 1
        self.successes += int(bool(agreed))
        self._state = self.evaluate(self.n, self.successes)
        return self._state

    @property
    def state(self) -> TestState:
        return self._state

    def min_successes_to_pass(self, failures: int, limit: int = 100_000) -> int | None:
        """Fewest agreements that pass alongside ``failures`` disagreements (None: > limit)."""
        lo, hi = 0, 1
        while not bool(self.passes(hi, failures)):
            lo, hi = hi, hi * 2
            if hi > limit:
                return None
        while lo < hi:  # the evidence grows with successes
            mid = (lo + hi) // 2
            if bool(self.passes(mid, failures)):
                hi = mid
            else:
                lo = mid + 1
        return hi


def _bisect(
    rejects: Callable[[float], bool], s: int, n: int, *, want_low: bool, iters: int = 40
) -> float:
    """Boundary of the rejected set of q.

    want_low: the pass side rejects small q (H0: p ≤ q); the lower bound is the largest
    rejected q. Otherwise the fail side rejects large q; the upper bound is the smallest.
    """
    if n == 0:
        return 0.0 if want_low else 1.0
    mle = s / n
    if want_low:
        lo, hi = _EPS, min(max(mle, _EPS), 1.0 - 1e-9)
        if not rejects(lo):
            return 0.0
        if rejects(hi):
            return hi
        return bisect_edge(rejects, lo, hi, iters=iters)
    lo, hi = max(min(mle, 1.0 - 1e-9), _EPS), 1.0 - 1e-9
    if not rejects(hi):
        return 1.0
    if rejects(lo):
        return lo
    return bisect_edge(rejects, hi, lo, iters=iters)


def bisect_edge(
    rejects: Callable[[float], bool], inside: float, outside: float, *, iters: int = 40
) -> float:
    """The last rejected point between ``inside`` (rejected) and ``outside`` (not rejected).

    ``rejects`` must be monotone on the segment (one rejected half); ``inside`` may lie above
    or below ``outside``. ``iters`` halvings of the segment: the edge within
    ``|inside - outside| / 2**iters``, on the rejected side (a conservative bound).
    """
    for _ in range(iters):
        mid = 0.5 * (inside + outside)
        if rejects(mid):
            inside = mid
        else:
            outside = mid
    return inside
