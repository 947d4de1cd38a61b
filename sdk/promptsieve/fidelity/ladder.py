"""The ratio ladder that screening walks: its rungs, and how they share the error budget δ.

A ladder is a tuple of keep ratios in (0, 1], most conservative first. ``LadderTest`` names
the two multiple-testing procedures over it (both in :class:`~promptsieve.fidelity.gate.GateConfig`
and :class:`~promptsieve.fidelity.screen.ScreenConfig`): ``"fixed_sequence"`` tests the rungs
in order, each at the full δ, and stops at the first failure (the fixed-sequence procedure,
Maurer, Hothorn and Lehmacher 1995); ``"bonferroni"`` tests every rung at δ/K and applies
the most aggressive pass. ``check_budget`` refuses a per-rung budget too small for any rung
to pass.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Sequence
from typing import Literal, Protocol

from promptsieve._errors import ConfigError

__all__ = ["LADDER_TESTS", "LadderTest", "ScreeningSettings", "check_budget", "check_ladder"]

LadderTest = Literal["fixed_sequence", "bonferroni"]
#: The values of :data:`LadderTest`, in that order.
LADDER_TESTS: tuple[str, ...] = typing.get_args(LadderTest)


def check_ladder(ratios: Sequence[float]) -> None:
    """Raise :class:`ConfigError` unless ``ratios`` is non-empty, each in (0, 1], and
    distinct (two equal rungs would spend δ twice on one test)."""
    if not ratios or any(not 0 < r <= 1 for r in ratios):
        raise ConfigError(f"ratios must be a non-empty sequence in (0, 1], got {ratios}")
    if len(set(ratios)) != len(ratios):
        raise ConfigError(f"ratios must be distinct, got {ratios}")


class ScreeningSettings(Protocol):
    """What :func:`check_budget` reads: the fields :class:`~promptsieve.fidelity.gate.GateConfig`
    and :class:`~promptsieve.fidelity.screen.ScreenConfig` share."""

    @property
    def budget(self) -> int: ...
    @property
    def mode(self) -> str: ...
    @property
    def tau(self) -> float: ...
    @property
    def delta(self) -> float: ...
    @property
    def epsilon(self) -> float | None: ...
    @property
    def rho(self) -> float | None: ...
    @property
    def ladder_test(self) -> str: ...
    @property
    def ratios(self) -> tuple[float, ...]: ...


#: The largest ``budget`` (comparisons per ratio) a config takes: each is a target call, and
#: the sequential tests' tables grow with it (10**12 raised MemoryError at construction).
MAX_BUDGET = 1_000_000


def check_budget(config: ScreeningSettings, samples: int | None = None) -> None:
    """Raise :class:`ConfigError` when ``config.budget`` comparisons per rung can never pass,
    even with every one in the compressed prompt's favour (agreement mode: every answer
    agreeing; labelled mode: every pair a gain). Such a screening would spend its calls and
    fail by construction. Each rung is tested at δ, or δ/K (K = ``len(config.ratios)``) under
    ``"bonferroni"``. At τ = 0.9, δ = 0.05 agreement needs 30 comparisons (44 at δ/4);
    labelled mode at ε = 0.05 needs 5 pairs, but about 70 when compression changes no answer
    (see :mod:`promptsieve.fidelity.labelled`). ``samples``: an offline screening's number of
    samples, checked instead of the budget when smaller, and named in the message. Memoized:
    configs are built on the request path."""
    if config.budget > MAX_BUDGET:  # the tests' tables grow with the budget (memory)
        raise ConfigError(
            f"budget must be at most {MAX_BUDGET:,} comparisons per ratio, got {config.budget:,}"
        )
    budget = config.budget if samples is None else min(samples, config.budget)
    mode, delta, ladder_test = config.mode, config.delta, config.ladder_test
    rungs = len(config.ratios)
    need, what, loosen = _smallest_passing(
        budget,
        mode,
        config.tau,
        delta / rungs if ladder_test == "bonferroni" else delta,
        config.epsilon,
        config.rho,
    )
    if need is None:
        return
    unit = "pairs" if mode == "labelled" else "comparisons"
    short, fix = (
        (f"{budget} samples", "give more samples")
        if samples is not None and samples < config.budget
        else (f"budget={budget} {unit} per rung", "raise budget")
    )
    level = f"delta={delta:g}"
    if ladder_test == "bonferroni" and rungs > 1:
        level = f"delta/{rungs} = {delta / rungs:g} per rung (ladder_test='bonferroni')"
        fix += ", use fewer ratios or ladder_test='fixed_sequence'"
    raise ConfigError(
        f"{short} can never pass {what}, {level}): it needs at least {need}; {fix}, or {loosen}"
    )


@functools.lru_cache(maxsize=256)
def _smallest_passing(
    budget: int, mode: str, tau: float, level: float, epsilon: float | None, rho: float | None
) -> tuple[int | str | None, str, str]:
    """(None, "", "") when a rung at level ``level`` can pass within ``budget``; else the
    fewest comparisons that can pass ("more than N" past a search limit), and the words of
    the error message."""
    from promptsieve.fidelity.labelled import NonInferiorityTest
    from promptsieve.fidelity.stats import SequentialTest

    need: int | str | None
    if mode == "labelled":
        lab = NonInferiorityTest(level, budget, epsilon=epsilon, rho=rho)
        if bool(lab.can_pass((0, 0, 0, 0))):
            return None, "", ""
        limit = 100 * budget + 10_000
        need = next((n for n in range(budget + 1, limit) if lab.passes((0, 0, n, 0))), None)
        loosen = "lower rho" if rho is not None else "raise epsilon"
        what, loosen = f"labelled mode (H0: {lab.margin}", f"raise delta or {loosen}"
    else:
        seq = SequentialTest(tau, level, budget)
        if bool(seq.can_pass(0, 0)):
            return None, "", ""
        need = seq.min_successes_to_pass(0)
        what, loosen = f"agreement mode (tau={tau:g}", "lower tau or raise delta"
    return (need if need is not None else "more than any budget"), what, loosen
