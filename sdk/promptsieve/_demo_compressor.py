"""Selection: the ladder over how many demonstrations are kept, and
:class:`DemoCompressor`, the sieve compressor that removes whole demonstrations from a
prompt (rendered text, or user/assistant message pairs)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from promptsieve._demo_attribution import attribute_demos
from promptsieve._demo_scorers import HeadDemoScorer
from promptsieve._demo_types import (
    DEMOS_VERSION,
    CoalitionScorer,
    DemoAttribution,
    DemoAttributionConfig,
    DemoFormat,
    Demonstration,
    ValidationExample,
    checked_inputs,
)
from promptsieve._errors import ConfigError
from promptsieve._threads import SieveClosed, register, start_background
from promptsieve.prompt import COMPRESSIBLE_ROLES, Message, TextPart, as_messages

__all__ = ["DemoCompression", "DemoCompressor", "demo_ladder", "remove_demos", "select_demos"]

log = logging.getLogger(__name__)


def demo_ladder(n: int, fractions: Sequence[float] = (0.75, 0.5, 0.25)) -> list[int]:
    """Numbers of demonstrations kept, conservative to aggressive: ``ceil(f * n)`` per
    fraction, at least 1, below ``n``, without repeats. Empty for ``n < 2``."""
    out: list[int] = []
    for f in fractions:
        k = max(1, min(n - 1, math.ceil(f * n)))
        if n >= 2 and k not in out:
            out.append(k)
    return out


def select_demos(
    demos: Sequence[Demonstration], attribution: DemoAttribution, keep: int
) -> list[Demonstration]:
    """The ``keep`` most useful demonstrations (least useful removed first), in order."""
    if attribution.n != len(demos):
        raise ConfigError(
            f"the attribution covers {attribution.n} demonstrations, not {len(demos)}"
        )
    return [demos[i] for i in attribution.keep(keep)]


@dataclass(frozen=True)
class DemoCompression:
    """A prompt with some demonstrations removed (what :class:`DemoCompressor` returns)."""

    prompt: str | tuple[Message, ...]
    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    #: The instance guard's input: the question and instruction are untouched by removing
    #: whole demonstrations, so there is no per-request similarity to judge.
    similarity: float | None = 1.0

    @property
    def changed(self) -> bool:
        return bool(self.dropped)


class DemoCompressor:
    """A compressor for :class:`promptsieve.Sieve` that removes whole demonstrations.

    ``Sieve(config, compressor=DemoCompressor(demos, validation))`` turns the gate's ratio
    ladder into a ladder over how many demonstrations are kept: at ratio ``r`` the
    ``max(1, round(r * n))`` most useful are kept (least useful removed first) and the
    sequential test confirms the rung against the target, as for any compressor. Works
    through every adapter that takes a sieve (``wrap_openai``, LangChain).

    The prompt must contain the demonstrations as ``fmt`` renders them (in a string prompt
    or a user/assistant text part), or as user/assistant message pairs (``input`` then
    ``output``, as LangChain's ``FewShotChatMessagePromptTemplate`` produces, or the
    chat way: one user and one assistant message per demonstration before the final
    question). A prompt in which they are not all found goes out unchanged. Message pairs
    are left out whole; system messages, other turns and the final question are kept as
    they were. Through ``wrap_openai`` (chat completions and Responses),
    ``wrap_anthropic`` (Messages) and the LangChain wrappers (``wrap_chat_model``,
    ``compress_messages``, ``SieveMiddleware``) the request then goes out without those
    messages, by one rule for every adapter (:func:`promptsieve.convert.kept_indices`); a
    pair that carries a tool call, a non-text part or another field
    (``additional_kwargs``, ...) cannot be left out, and the request goes out unchanged.

    Attribution is computed once, in a background thread started by the first
    :meth:`compress` (which returns the prompt unchanged until it is ready) or up front by
    :meth:`prepare`. Any attribution failure is logged once and leaves prompts unchanged
    (fail open).
    """

    def __init__(
        self,
        demos: Sequence[Demonstration],
        validation: Sequence[ValidationExample],
        *,
        fmt: DemoFormat | None = None,
        config: DemoAttributionConfig | None = None,
        scorer: CoalitionScorer | HeadDemoScorer | None = None,
    ) -> None:
        self.demos, self.validation = checked_inputs("DemoCompressor", demos, validation)
        self.fmt = fmt or DemoFormat()
        self.config = config or DemoAttributionConfig()
        self._scorer = scorer
        self._attr: DemoAttribution | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # held by prepare() for the whole attribution
        self._start_lock = threading.Lock()  # held only to start the thread: never waits on it
        register(self)  # reset in a forked child
        blob = json.dumps([[d.input, d.output] for d in self.demos]).encode()
        self._set_hash = hashlib.sha256(blob).hexdigest()[:16]

    @property
    def fingerprint(self) -> str:
        """Names the ranking that is applied (part of the sieve's verdict key).

        Once the attribution is ready: the demonstration set, the method that ran and the
        attribution's cache key (scorer fingerprint, e.g. the LM proxy's float32 or int8
        export or the MiniLM head fallback; validation requests; format), so that a verdict
        screened on one ranking is never reused for another. Before that, a provisional
        ``...-pending`` name: prompts go out unchanged until the ranking exists.
        """
        attr = self._attr
        if attr is None:
            method = self.config.resolved_method(len(self.demos))
            return f"demos-v{DEMOS_VERSION}-{self._set_hash}-{method}-pending"
        return f"demos-v{DEMOS_VERSION}-{self._set_hash}-{attr.method}-{attr.key[:16]}"

    @property
    def attribution(self) -> DemoAttribution | None:
        return self._attr

    def prepare(self) -> DemoAttribution:
        """Compute (or read from the cache) the attribution now; raises what it raises."""
        with self._lock:
            if self._attr is None:
                self._attr = attribute_demos(
                    self.demos, self.validation, fmt=self.fmt, config=self.config,
                    scorer=self._scorer,
                )  # fmt: skip
            return self._attr

    def _background(self) -> None:
        try:
            self.prepare()
        except BaseException as exc:  # fail open: prompts stay unchanged
            self._error = exc
            if isinstance(exc, SieveClosed):  # the process is exiting
                return
            # the type only: a message may quote the user's text (details at DEBUG)
            log.warning(
                "demonstration attribution failed (%s); prompts go out unchanged",
                type(exc).__name__,
            )
            log.debug("promptsieve: details", exc_info=exc)

    def _ready(self) -> DemoAttribution | None:
        if self._attr is not None or self._error is not None:
            return self._attr
        with self._start_lock:  # not self._lock: requests never wait for the attribution
            if self._thread is None:  # joined at exit (it must not sit in onnxruntime then)
                self._thread = start_background(self._background, "promptsieve-demos")
        return None

    def _after_fork(self) -> None:
        """In a forked child: the parent's attribution thread does not exist here, and the
        locks may have been held by it; start again unless the attribution is done."""
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        if self._attr is None:
            self._thread = None
            self._error = None

    def _close_at_exit(self, timeout: float) -> None:
        """Nothing to drain: the exit hook joins the attribution thread (``_threads``)."""

    def wait(self, timeout: float | None = None) -> DemoAttribution | None:
        """Start the attribution if need be and wait for it (None on time-out or failure)."""
        self._ready()
        if self._thread is not None:
            self._thread.join(timeout)
        return self._attr

    def similarity(self, a: str, b: str) -> float:
        """1.0: removing whole demonstrations leaves the question untouched (see above)."""
        return 1.0

    def keep_count(self, ratio: float | None) -> int:
        n = len(self.demos)
        r = 1.0 if ratio is None else ratio
        return max(1, min(n, round(r * n)))

    def compress(self, prompt: Any, *, ratio: float | None = None) -> DemoCompression:
        """Remove the least useful demonstrations so that ``keep_count(ratio)`` remain."""
        n = len(self.demos)
        if n < 2:
            return DemoCompression(prompt, tuple(range(n)), ())
        attr = self._ready()
        if attr is None or attr.method == "none":
            return DemoCompression(prompt, tuple(range(n)), ())
        kept = attr.keep(self.keep_count(ratio))
        drop = tuple(i for i in range(n) if i not in kept)
        new = remove_demos(prompt, self.demos, drop, self.fmt)
        if new is None or not drop:
            return DemoCompression(prompt, tuple(range(n)), ())
        return DemoCompression(new, tuple(kept), drop)


def remove_demos(
    prompt: str | Sequence[Message],
    demos: Sequence[Demonstration],
    drop: Sequence[int],
    fmt: DemoFormat,
) -> str | tuple[Message, ...] | None:
    """``prompt`` without the demonstrations ``drop``; None when they are not all found.

    Looks for each demonstration's rendered text (``fmt.render_demo``) in the text parts of
    user/assistant messages, in order, else (and only, with ``fmt.pairs``) for user/assistant
    message pairs whose texts are the demonstration's input and output.
    """
    messages, bare = as_messages(prompt)
    if not drop:
        return prompt if isinstance(prompt, str) else tuple(messages)
    out = None if fmt.pairs else _remove_rendered(messages, demos, set(drop), fmt)
    if out is None:
        out = _remove_pairs(messages, demos, set(drop))
    if out is None:
        return None
    if bare:
        return out[0].content
    return out


def _remove_rendered(
    messages: Sequence[Message], demos: Sequence[Demonstration], drop: set[int], fmt: DemoFormat
) -> tuple[Message, ...] | None:
    blocks = [fmt.render_demo(d) for d in demos]
    msgs = list(messages)
    found: dict[int, tuple[int, int, int]] = {}  # demo -> (message, part, start)
    for mi, m in enumerate(msgs):
        if m.role not in COMPRESSIBLE_ROLES:
            continue
        for pi, p in enumerate(m.parts):
            if not isinstance(p, TextPart) or p.protected:
                continue
            pos = 0
            for di, b in enumerate(blocks):
                if di in found:
                    continue
                j = p.text.find(b, pos)
                if j >= 0:
                    found[di] = (mi, pi, j)
                    pos = j + len(b)
    if len(found) != len(demos):
        return None
    for mi in sorted({found[d][0] for d in drop}):
        m = msgs[mi]
        parts = list(m.parts)
        for pi in sorted({found[d][1] for d in drop if found[d][0] == mi}):
            part = parts[pi]
            assert isinstance(part, TextPart)
            cuts = sorted((found[d][2], found[d][2] + len(blocks[d])) for d in drop
                          if found[d][:2] == (mi, pi))  # fmt: skip
            pieces: list[str] = []
            last = 0
            for cut_start, cut_end in cuts:
                pieces.append(part.text[last:cut_start])
                last = cut_end
            pieces.append(part.text[last:])
            parts[pi] = replace(part, text="".join(pieces))
        msgs[mi] = m.with_parts(parts)
    return tuple(msgs)


def _remove_pairs(
    messages: Sequence[Message], demos: Sequence[Demonstration], drop: set[int]
) -> tuple[Message, ...] | None:
    where: dict[int, int] = {}
    i, di = 0, 0
    msgs = list(messages)
    while i + 1 < len(msgs) and di < len(demos):
        a, b = msgs[i], msgs[i + 1]
        d = demos[di]
        if (
            a.role == "user" and b.role == "assistant"
            and a.content.strip() == d.input.strip() and b.content.strip() == d.output.strip()
        ):  # fmt: skip
            where[di] = i
            di += 1
            i += 2
        else:
            i += 1
    if len(where) != len(demos):
        return None
    gone = {where[d] for d in drop} | {where[d] + 1 for d in drop}
    return tuple(m for k, m in enumerate(msgs) if k not in gone)
