"""The ratio ladder that screening walks: its rungs, and how they share the error budget δ.

A ladder is a tuple of keep ratios in (0, 1], most conservative first. ``LadderTest`` names
the two multiple-testing procedures over it (both in :class:`~promptsieve.fidelity.gate.GateConfig`
and :class:`~promptsieve.fidelity.screen.ScreenConfig`): ``"fixed_sequence"`` tests the rungs
in order, each at the full δ, and stops at the first failure (the fixed-sequence procedure,
Maurer, Hothorn and Lehmacher 1995); ``"bonferroni"`` tests every rung at δ/K and applies
the most aggressive pass.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Literal

from promptsieve._errors import ConfigError

__all__ = ["LADDER_TESTS", "LadderTest", "check_ladder"]

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
