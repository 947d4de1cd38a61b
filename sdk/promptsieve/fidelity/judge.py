"""Target-as-judge: ask the target itself whether two answers say the same thing.

Free-text answers can agree in meaning and differ in every word. This metric spends one extra
short call per comparison whose answers are not already equal under the SQuAD-style match
(:func:`~promptsieve.fidelity.agree.answer_match`): the target sees only the two answers,
never the user's prompt, and must reply "yes" or "no". Its calls and prompt tokens are
counted (:attr:`TargetJudge.calls`, :attr:`TargetJudge.prompt_tokens`) so screening
economics can price them. Nothing it sends is logged.

An answer that is neither yes nor no, or a call that fails, raises :class:`JudgeError`: the
comparison is then *not counted*, never counted as agreement.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from promptsieve._errors import PromptSieveError
from promptsieve.fidelity.agree import TargetOutput, answer_match, extract_answer, normalize
from promptsieve.prompt import Message, Prompt

__all__ = ["JudgeError", "TargetJudge", "target_judge"]

log = logging.getLogger(__name__)

_SYSTEM = (
    "You compare two answers to the same question. Reply with exactly one word: "
    "yes if they give the same final answer, no otherwise."
)
_MAX_ANSWER_CHARS = 1200  # longer answers are cut (the judge call must stay short)


class JudgeError(PromptSieveError):
    """The judge gave no usable verdict (the comparison is not counted)."""


def judge_prompt(a: str, b: str) -> Prompt:
    """The neutral chat prompt sent to the judge (the two answers, nothing else)."""
    a, b = a.strip()[:_MAX_ANSWER_CHARS], b.strip()[:_MAX_ANSWER_CHARS]
    return (
        Message.text("system", _SYSTEM),
        Message.text("user", f"Answer A: {a}\nAnswer B: {b}\nSame final answer? yes or no"),
    )


class TargetJudge:
    """A metric ``(original, compressed) -> bool`` that asks the target when unsure.

    ``complete`` sends a neutral prompt to the target (a short reply is enough: callers
    should cap its output at a few tokens). Thread-safe counters: ``calls`` (judge calls
    made), ``shortcuts`` (comparisons settled without a call), ``prompt_tokens`` (about 4
    characters a token). Raises :class:`JudgeError` when the reply is not yes/no or the
    call fails.
    """

    def __init__(self, complete: Callable[[Prompt], TargetOutput]) -> None:
        self._complete = complete
        self._lock = threading.Lock()
        self._quick = answer_match(1.0)  # equal or contained short answers: no call needed
        self.calls = 0
        self.shortcuts = 0
        self.prompt_tokens = 0
        self.__name__ = "judge"
        self.__qualname__ = "judge"

    def __call__(self, original: TargetOutput, compressed: TargetOutput) -> bool:
        if original.tool_calls or compressed.tool_calls:
            raise JudgeError("the judge compares text answers, not tool calls")
        if self._quick(original, compressed):
            with self._lock:
                self.shortcuts += 1
            return True
        prompt = judge_prompt(extract_answer(original.text), extract_answer(compressed.text))
        size = sum(len(m.content) for m in prompt if isinstance(m, Message)) // 4
        with self._lock:
            self.calls += 1
            self.prompt_tokens += size
        try:
            reply = self._complete(prompt)
        except Exception as exc:
            raise JudgeError(f"the judge call failed ({type(exc).__name__})") from exc
        words = normalize(reply.text).split()
        if words and words[0] in ("yes", "same"):
            return True
        if words and words[0] in ("no", "different"):
            return False
        raise JudgeError("the judge replied neither yes nor no")


def target_judge(complete: Callable[[Prompt], TargetOutput]) -> TargetJudge:
    """The target-as-judge metric over ``complete`` (see :class:`TargetJudge`)."""
    return TargetJudge(complete)
