"""Reading a streamed response as the caller reads it: the output and the server's usage.

The caller gets the very ``openai.Stream`` / ``openai.AsyncStream`` object the SDK built (its
type unchanged); only its private ``_iterator`` is wrapped, so every item the caller reads is
also seen here. When the caller has read the stream to its end, the call is finished with the
streamed output (text and tool calls) and the prompt tokens the server reported: the last
chat/completions chunk when the caller asked for ``stream_options={"include_usage": True}``,
the ``response.completed`` event on the Responses API. A stream closed early (or never read)
finishes with no output: the comparison then sends both variants, as before.

Nothing here may break the caller's loop: a chunk of a shape the collector does not know (a
list of content parts in ``delta.content``, as some OpenAI-compatible servers stream) makes
the output unreadable (None, both variants sent) instead of raising, and a fault while
finishing the call is counted by the sieve, never raised into the caller's ``for``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from openai import AsyncStream, Stream

from promptsieve import TargetOutput
from promptsieve_openai._convert import responses_output

__all__ = ["watch_async_stream", "watch_stream"]

log = logging.getLogger(__name__)

Finish = Callable[[TargetOutput | None, int | None], None]
AsyncFinish = Callable[[TargetOutput | None, int | None], Awaitable[None]]


class _Collector:
    """Accumulates a streamed answer from chat chunks, completion chunks or Responses events."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, list[str]] = {}  # tool call index -> [name, arguments]
        self.output: TargetOutput | None = None  # a Responses stream's final output
        self.usage: int | None = None
        self.unreadable = False  # a chunk this collector could not read

    def feed(self, item: Any) -> None:
        """Take one streamed item; an unknown shape marks the output unreadable. Never raises."""
        if self.unreadable:
            return
        try:
            self._feed(item)
        except Exception as exc:
            self.unreadable = True
            log.debug("promptsieve: unreadable stream chunk (%s)", type(exc).__name__)

    def _feed(self, item: Any) -> None:
        usage = getattr(item, "usage", None)
        if usage is not None and isinstance(getattr(usage, "prompt_tokens", None), int):
            self.usage = usage.prompt_tokens
        kind = getattr(item, "type", None)
        if kind == "response.completed":
            response = item.response
            self.output = responses_output(response)
            if response.usage is not None:
                self.usage = response.usage.input_tokens
            return
        for choice in getattr(item, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            if delta is None:  # a completions chunk
                self.text.append(getattr(choice, "text", None) or "")
                continue
            self.text.append(_text(delta.content))
            for tc in delta.tool_calls or ():
                name_args = self.calls.setdefault(tc.index, ["", ""])
                fn = tc.function
                if fn is not None:
                    name_args[0] += fn.name or ""
                    name_args[1] += fn.arguments or ""

    def result(self) -> TargetOutput | None:
        """The streamed answer, or None when a chunk could not be read."""
        if self.unreadable:
            return None
        if self.output is not None:
            return self.output
        calls = tuple((n, a) for _i, (n, a) in sorted(self.calls.items()))
        return TargetOutput("".join(self.text), calls)


def _text(content: Any) -> str:
    """A delta's text: a string, or a list of content parts (``{"type": "text", "text": …}``,
    streamed by some OpenAI-compatible servers) joined; anything else raises TypeError."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = [p.get("text") if isinstance(p, dict) else getattr(p, "text", None)
                 for p in content]  # fmt: skip
        if all(isinstance(t, str) for t in texts):
            return "".join(str(t) for t in texts)
    raise TypeError(f"delta content of type {type(content).__name__}")


def watch_stream(stream: Stream[Any], finish: Finish, abandon: Callable[[], None]) -> None:
    """Finish the call when ``stream`` has been read (or closed, or dropped unread)."""
    inner: Iterator[Any] = stream._iterator
    collector = _Collector()

    def read() -> Iterator[Any]:
        complete = False
        try:
            for item in inner:
                collector.feed(item)
                yield item
            complete = True
        finally:
            try:
                finish(collector.result() if complete else None, collector.usage)
            except Exception as exc:  # never into the caller's loop
                log.debug("promptsieve: finishing a stream failed (%s)", type(exc).__name__)

    stream._iterator = read()
    weakref.finalize(stream, abandon)  # never read: at least free the shadow slot


def watch_async_stream(
    stream: AsyncStream[Any], finish: AsyncFinish, abandon: Callable[[], None]
) -> None:
    """:func:`watch_stream` for ``AsyncStream``."""
    inner: AsyncIterator[Any] = stream._iterator
    collector = _Collector()

    async def read() -> AsyncIterator[Any]:
        complete = False
        try:
            async for item in inner:
                collector.feed(item)
                yield item
            complete = True
        finally:
            try:
                await finish(collector.result() if complete else None, collector.usage)
            except Exception as exc:  # never into the caller's loop
                log.debug("promptsieve: finishing a stream failed (%s)", type(exc).__name__)

    stream._iterator = read()
    weakref.finalize(stream, abandon)
