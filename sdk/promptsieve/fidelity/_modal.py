"""How alike a task's original answers are: the modal answer's share (private).

When the target gives one answer to nearly every request of a task (a small model that answers
every multiple-choice question "(B)", say), a compressed prompt gets that answer too, and
agreement screening passes for free: agreement then says nothing about answer quality.
Offline screening (:func:`promptsieve.fidelity.screen`) and the live sieve (its background
comparisons) measure it the same way, with :class:`ModalAnswers`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from promptsieve.fidelity.agree import TargetOutput

__all__ = [
    "MODAL_MIN_ANSWERS",
    "MODAL_WARN_SHARE",
    "ModalAnswers",
    "answer_digest",
    "modal_warning",
]

#: The modal share is measured on at least this many original answers (a ladder at a low tau
#: can pass on fewer: at tau 0.6, after 7 agreeing pairs).
MODAL_MIN_ANSWERS = 10
#: ... and warned about from this share on (benchmark: the 1.5B gave one answer to 95-100 %
#: of five BBH tasks' questions, the 0.5B to 100 % of date_understanding's).
MODAL_WARN_SHARE = 0.95
#: Distinct answers tracked; later ones count as "other". A share of 95 % or more is the first
#: or second answer seen almost surely, and each answer costs at most this many metric calls.
_GROUPS = 3

#: ``same(a, b)``: whether two answers are alike under the task's metric.
Same = Callable[[Any, Any], bool]


class ModalAnswers:
    """Original answers grouped under the task's metric, each against the first answer of at
    most three groups (so at most three metric calls per answer; a metric that raises on a
    pair counts it as different). Not thread-safe; answers are held in memory only."""

    def __init__(self) -> None:
        self._groups: list[list[Any]] = []  # [representative answer, count]
        self.n = 0
        self.warned = False  # the live sieve warns once per task

    def add(self, answer: Any, same: Same) -> None:
        self.n += 1
        for group in self._groups:
            try:
                alike = bool(same(group[0], answer))
            except Exception:
                alike = False
            if alike:
                group[1] += 1
                return
        if len(self._groups) < _GROUPS:
            self._groups.append([answer, 1])

    @property
    def share(self) -> float | None:
        """The most common answer's share of all ``n`` (0–1), or None under
        :data:`MODAL_MIN_ANSWERS` answers."""
        if self.n < MODAL_MIN_ANSWERS or not self._groups:
            return None
        return max(g[1] for g in self._groups) / self.n


def modal_warning(
    share: float | None, n: int, fix: str, *, alike: str = "alike under the task's metric"
) -> str | None:
    """The warning for a modal ``share`` of ``n`` answers from :data:`MODAL_WARN_SHARE` on
    (None below it, or when not measured); ``fix`` says how to screen instead, ``alike`` how
    answers were grouped."""
    if share is None or share < MODAL_WARN_SHARE:
        return None
    return (
        f"the target gave one answer ({alike}) to {round(share * n)} of "
        f"{n} original requests: agreement says little about answer quality here; {fix}"
    )


def answer_digest(output: TargetOutput) -> str:
    """A digest of an answer's text (whitespace collapsed, case folded) and tool calls: equal
    digests, the same answer. The live sieve groups these, never the text."""
    text = " ".join(output.text.split()).casefold()
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
    for name, arguments in output.tool_calls:
        h.update(b"\0" + name.encode("utf-8", "surrogatepass"))
        h.update(b"\0" + arguments.encode("utf-8", "surrogatepass"))
    return h.hexdigest()
