"""Labelled non-inferiority: is the compressed prompt's accuracy no worse than the original's?

Agreement mode asks whether the target answers the compressed prompt *the same way*. When
gold answers (or a judge) are available the question users mean is about accuracy, and
compression may even *improve* answers (LongLLMLingua: GPT-3.5 on NaturalQuestions rose
from 54 % to 71 % at 4x; measured here on multi-document QA, see issue 15). Each paired
comparison gives two labels, original correct ``o`` and compressed correct ``c``; the test
is on their paired difference:

* difference form (default, ``epsilon``): H0: acc(c) <= acc(o) - epsilon,
  statistic X = c - o in {-1, 0, 1}, null mean m0 = -epsilon;
* ratio form (``rho``, the seed paper's "keeps >= 90 % of the full-prompt accuracy",
  Liu et al., ACL 2026, arXiv 2505.12509): H0: acc(c) <= rho * acc(o),
  statistic X = c - rho * o in [-rho, 1], m0 = 0.

Both are "the mean of a bounded variable is at most m0". The test is a betting e-process
(Waudby-Smith & Ramdas, "Estimating means of bounded random variables by betting", JRSS-B
2023): for a fixed bet lambda in [0, 1/(m0 - min X)), the wealth prod_i (1 + lambda (X_i - m0))
is a non-negative supermartingale under H0 whatever the joint law of (o, c), so by Ville's
inequality it exceeds 1/delta with probability <= delta however often one looks. We average
it over a fixed grid of bets (their "diversified Kelly" / dKelly mixture), which is again a
test supermartingale. With fixed bets the wealth depends on the *counts* of the four cells
(both correct, original only, compressed only, neither) and not on their order, so a verdict
store keeps the whole state in four counters and concurrent writers just increment them, as
in agreement mode.

The mirror process (bets on X < m0) gives "fail early" when the data show inferiority, and
inverting both at every m gives an anytime-valid confidence sequence on E[X] (the lower and
upper bounds reported).

Why epsilon = 0.05 by default: five points of accuracy is the usual non-inferiority margin for
accuracy-type endpoints and the smallest one a screening budget of ~100 pairs can show: even
when compressed and original are always both right, no valid test can pass before
(1 + epsilon/(1 - epsilon))^n >= 1/delta, i.e. 59 pairs at epsilon = 0.05, delta = 0.05 (the
grid mixture passes after 70). A smaller margin needs proportionally more labelled samples
(epsilon = 0.02: 176; epsilon = 0.1 or rho = 0.9 with all pairs both right: 34). The allowed
ranges are epsilon in [0, 0.5] and rho in [0.5, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

from promptsieve._errors import ConfigError
from promptsieve.fidelity.stats import CURTAILED, Outcome, TestState, bisect_edge

__all__ = ["DEFAULT_EPSILON", "NonInferiorityTest", "Pairs", "check_margin"]

DEFAULT_EPSILON = 0.05
EPSILON_RANGE = (0.0, 0.5)
RHO_RANGE = (0.5, 1.0)
_TOP = 0.98  # bets as shares of the largest one that keeps wealth positive, times this
#: The dKelly grid: most bets close to the top (tasks where compression rarely changes the
#: label pass near the information limit), three small ones for tasks with many discordant
#: pairs both ways (simulated in benchmarks/screening_sim.py).
_BET_SHARES = (0.1, 0.2, 0.3, *(1.0 - 0.5**k for k in range(1, 11)))


def check_mode(mode: str, epsilon: float | None, rho: float | None) -> None:
    """Validate a screening mode and its margin (GateConfig, ScreenConfig): ``"agreement"``
    takes no margin, ``"labelled"`` takes one (:func:`check_margin`). Raises ConfigError."""
    if mode not in ("agreement", "labelled"):
        raise ConfigError(f"mode must be 'agreement' or 'labelled', got {mode!r}")
    if mode == "labelled":
        check_margin(epsilon, rho)
    elif epsilon is not None or rho is not None:
        raise ConfigError("epsilon/rho are margins of mode='labelled'")


def check_margin(epsilon: float | None, rho: float | None) -> tuple[float | None, float | None]:
    """Validate a non-inferiority margin; returns ``(epsilon, rho)`` with the default filled.

    Exactly one form is used: ``rho`` (ratio) if given, else ``epsilon`` (difference,
    default 0.05). Raises ConfigError naming the allowed range: epsilon in [0, 0.5], rho in
    [0.5, 1], and not both at once.
    """
    if epsilon is not None and rho is not None:
        raise ConfigError("give a difference margin epsilon or a ratio rho, not both")
    if rho is not None:
        if not isinstance(rho, int | float) or not RHO_RANGE[0] <= rho <= RHO_RANGE[1]:
            raise ConfigError(
                f"rho must be in [{RHO_RANGE[0]}, {RHO_RANGE[1]}] (share of the original's "
                f"accuracy the compressed prompt must keep), got {rho!r}"
            )
        return None, float(rho)
    eps = DEFAULT_EPSILON if epsilon is None else epsilon
    if not isinstance(eps, int | float) or not EPSILON_RANGE[0] <= eps <= EPSILON_RANGE[1]:
        raise ConfigError(
            f"epsilon must be in [{EPSILON_RANGE[0]}, {EPSILON_RANGE[1]}] (accuracy points the "
            f"compressed prompt may lose), got {eps!r}"
        )
    return float(eps), None


@dataclass(frozen=True)
class Pairs:
    """Labelled paired outcomes at one ratio, as the four cells of (original, compressed).

    ``both``: both correct; ``original_only``: a loss (compression broke a right answer);
    ``compressed_only``: a gain; ``neither``: both wrong.
    """

    both: int = 0
    original_only: int = 0
    compressed_only: int = 0
    neither: int = 0

    @property
    def n(self) -> int:
        return self.both + self.original_only + self.compressed_only + self.neither

    @property
    def cells(self) -> tuple[int, int, int, int]:
        """``(both, original_only, compressed_only, neither)``: the test's cell order."""
        return (self.both, self.original_only, self.compressed_only, self.neither)

    @property
    def original_correct(self) -> int:
        return self.both + self.original_only

    @property
    def compressed_correct(self) -> int:
        return self.both + self.compressed_only

    def add(self, original_correct: bool, compressed_correct: bool) -> Pairs:
        o, c = bool(original_correct), bool(compressed_correct)
        return Pairs(
            self.both + (o and c),
            self.original_only + (o and not c),
            self.compressed_only + (c and not o),
            self.neither + (not o and not c),
        )

    @staticmethod
    def cell(original_correct: bool, compressed_correct: bool) -> str:
        """The cell's name as the stores keep it: ``"11"``, ``"10"``, ``"01"`` or ``"00"``."""
        return f"{int(bool(original_correct))}{int(bool(compressed_correct))}"

    @classmethod
    def from_cells(cls, cells: Mapping[str, int]) -> Pairs:
        return cls(
            int(cells.get("11", 0)),
            int(cells.get("10", 0)),
            int(cells.get("01", 0)),
            int(cells.get("00", 0)),
        )


class NonInferiorityTest:
    """Anytime-valid test of H0: compressed accuracy is worse than the original's by a margin.

    ``evaluate(pairs)`` judges cell counts kept elsewhere (a verdict store); ``update(o, c)``
    adds one labelled pair. PASS when the e-process reaches 1/delta (false-pass rate <= delta
    for every joint law in H0, under optional stopping); FAIL when the mirror process shows
    inferiority, after ``budget`` pairs without a pass (None: no cap), or as soon as even
    gains on every pair the budget leaves could not pass (curtailment: the verdict running
    the budget out would give, in fewer pairs). ``lower``/``upper``
    of the returned :class:`TestState` bound acc(c) - acc(o) (difference form) or
    acc(c) - rho * acc(o) (ratio form); ``successes`` counts compressed-correct pairs.
    Bad settings raise ConfigError (see :func:`check_margin`).
    """

    __test__ = False

    def __init__(
        self,
        delta: float = 0.05,
        budget: int | None = 100,
        *,
        epsilon: float | None = None,
        rho: float | None = None,
    ) -> None:
        if not 0 < delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {delta}")
        if budget is not None and budget < 1:
            raise ConfigError(f"budget must be a positive number of pairs, got {budget}")
        self.epsilon, self.rho = check_margin(epsilon, rho)
        self.delta, self.budget = delta, budget
        self._log_threshold = math.log(1.0 / delta)
        r = 1.0 if self.rho is None else self.rho
        # X per cell, in Pairs' field order: both, original only, compressed only, neither
        self.values = np.array([1.0 - r, -r, 1.0, 0.0])
        self.null_mean = 0.0 if self.rho is not None else -float(self.epsilon or 0.0)
        self._bets = _TOP * np.array(_BET_SHARES)
        self.pairs = Pairs()
        self._state = self.evaluate(self.pairs)

    @property
    def margin(self) -> str:
        """The null hypothesis in words."""
        if self.rho is not None:
            return f"acc(compressed) <= {self.rho:g} x acc(original)"
        return f"acc(compressed) <= acc(original) - {self.epsilon:g}"

    # -- evidence -------------------------------------------------------------------------

    def _log_wealth(self, counts: NDArray[np.float64], m: float, up: bool) -> NDArray[np.float64]:
        """log mean over the bet grid of prod (1 + lam (X - m)) (up) or (1 - lam (X - m))."""
        lo, hi = float(self.values.min()), float(self.values.max())
        room = (m - lo) if up else (hi - m)
        if room <= 0:
            return np.full(counts.shape[:-1], -np.inf if up else np.inf)
        lam = self._bets / room  # (K,)
        sign = 1.0 if up else -1.0
        factors = 1.0 + sign * lam[:, None] * (self.values[None, :] - m)  # (K, 4)
        with np.errstate(divide="ignore"):
            logf = np.log(np.maximum(factors, 0.0))
        logw = counts @ logf.T  # (..., K)
        logw = np.where(np.isnan(logw), -np.inf, logw)
        return np.asarray(logsumexp(logw, axis=-1) - math.log(len(lam)), dtype=np.float64)

    def log_e_value(self, counts: ArrayLike, m: float | None = None) -> NDArray[np.float64]:
        """log of the pass-side e-process at cell counts ``(..., 4)`` against mean ``m``.

        Counts are in :class:`Pairs` order (both, original only, compressed only, neither);
        ``m`` defaults to the null mean (-epsilon, or 0 in the ratio form). Vectorised.
        """
        arr = np.asarray(counts, dtype=np.float64)
        return self._log_wealth(arr, self.null_mean if m is None else m, up=True)

    def log_e_value_fail(self, counts: ArrayLike, m: float | None = None) -> NDArray[np.float64]:
        """log of the mirror e-process (evidence that E[X] < m), same shapes."""
        arr = np.asarray(counts, dtype=np.float64)
        return self._log_wealth(arr, self.null_mean if m is None else m, up=False)

    def passes(self, counts: ArrayLike) -> NDArray[np.bool_]:
        """Vectorised: does the pass side reject H0 at these cell counts ``(..., 4)``?"""
        return np.asarray(self.log_e_value(counts) >= self._log_threshold, dtype=np.bool_)

    def fails(self, counts: ArrayLike) -> NDArray[np.bool_]:
        """Vectorised: does the mirror process show the compressed accuracy is inferior?"""
        return np.asarray(self.log_e_value_fail(counts) >= self._log_threshold, dtype=np.bool_)

    def can_pass(self, counts: ArrayLike, left: ArrayLike | None = None) -> NDArray[np.bool_]:
        """Vectorised over cell counts ``(..., 4)``: would the pass side still reject H0 if
        the next ``left`` pairs were all gains (compressed right, original wrong)? ``left``
        defaults to what the budget leaves (``budget - n``, at least 0); without a budget
        the answer is always True. A gain is X's largest value, so it raises every bet's
        wealth at every step: False means no future within ``left`` passes."""
        arr = np.asarray(counts, dtype=np.float64)
        if left is None:
            if self.budget is None:
                return np.ones(arr.shape[:-1], dtype=np.bool_)
            left = np.maximum(self.budget - arr.sum(axis=-1), 0.0)
        best = arr.copy()
        best[..., 2] += np.asarray(left, dtype=np.float64)
        return self.passes(best)

    # -- decisions ------------------------------------------------------------------------

    def evaluate(self, pairs: Pairs) -> TestState:
        """The state implied by the cell counts in ``pairs``."""
        cells = pairs.cells
        if min(cells) < 0:
            raise ValueError(f"cell counts must be non-negative, got {pairs}")
        counts = np.array(cells, dtype=np.float64)
        lower, upper = self._bounds(counts)
        log_e = float(self.log_e_value(counts))
        e = math.exp(log_e) if log_e < 700 else math.inf
        n, s, m0 = pairs.n, pairs.compressed_correct, self.null_mean
        if log_e >= self._log_threshold:
            return TestState(n, s, max(lower, m0), upper, Outcome.PASS, "lower bound > margin", e)
        lower = min(lower, m0)
        if bool(self.fails(counts)):
            return TestState(n, s, lower, min(upper, m0), Outcome.FAIL, "upper bound < margin", e)
        upper = max(upper, m0)
        if self.budget is not None and n >= self.budget:
            return TestState(n, s, lower, upper, Outcome.FAIL, "budget", e)
        if not bool(self.can_pass(counts)):
            return TestState(n, s, lower, upper, Outcome.FAIL, CURTAILED, e)
        return TestState(n, s, lower, upper, Outcome.CONTINUE, "", e)

    def update(self, original_correct: bool, compressed_correct: bool) -> TestState:
        """Add one labelled pair. Updates after a decision raise RuntimeError."""
        if self._state.decision is not Outcome.CONTINUE:
            raise RuntimeError(f"the test already decided: {self._state.decision.value}")
        self.pairs = self.pairs.add(original_correct, compressed_correct)
        self._state = self.evaluate(self.pairs)
        return self._state

    @property
    def state(self) -> TestState:
        return self._state

    def _bounds(self, counts: NDArray[np.float64]) -> tuple[float, float]:
        """Confidence sequence on E[X]: (largest m the pass side rejects, smallest the fail
        side rejects), by bisection (both processes are monotone in m)."""
        lo, hi = float(self.values.min()), float(self.values.max())
        if counts.sum() == 0:
            return lo, hi

        def pass_rejects(m: float) -> bool:
            return bool(self.log_e_value(counts, m) >= self._log_threshold)

        def fail_rejects(m: float) -> bool:
            return bool(self.log_e_value_fail(counts, m) >= self._log_threshold)

        mean = float(counts @ self.values / counts.sum())
        lower = _edge(pass_rejects, lo, mean, rejected_below=True)
        upper = _edge(fail_rejects, mean, hi, rejected_below=False)
        return lower, upper


def _edge(rejects: Callable[[float], bool], a: float, b: float, *, rejected_below: bool) -> float:
    """The boundary of a rejected half-line inside [a, b] (bisection, ``bisect_edge``)."""
    edge, other = (a, b) if rejected_below else (b, a)  # the rejected set is [a, x] or [x, b]
    inside = a + 1e-12 if rejected_below else b - 1e-12
    if not rejects(inside):
        return edge
    if rejects(other):
        return other
    return bisect_edge(rejects, inside, other)
