"""Anthropic Messages bodies ⇄ the neutral prompt model, and responses → outputs.

The converter has the shape of the core's :func:`promptsieve.convert.from_openai`: one
request in neutral form plus a ``rebuild(prompt)`` that writes compressed text back into the
caller's own objects. A Messages ``content`` block list has the same text-block shape as an
OpenAI chat message (``{"type": "text", "text": ...}``), so the messages go through the core
converter itself; only the top-level ``system`` parameter is Anthropic's own and rides along
as a protected system message.

Never altered: ``system`` (string or blocks), ``tools``, ``tool_use``/``tool_result`` blocks,
images, documents, thinking blocks, any block given as an SDK object, and every other
parameter. Only ``text`` blocks and string contents of user/assistant messages may change;
a changed block keeps its other keys (``cache_control``, ``citations``). Whole
user/assistant text turns may be left out (demonstration pairs removed by
:class:`promptsieve.demos.DemoCompressor`), by the rule of
:func:`promptsieve.convert.kept_indices`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from anthropic._constants import RAW_RESPONSE_HEADER
from anthropic.types import Message as AnthropicMessage

from promptsieve import Prompt, Request, UnsupportedRequest
from promptsieve.convert import emptied, from_openai, without_emptied
from promptsieve.fidelity import TargetOutput
from promptsieve.prompt import Message, OpaquePart, Part, TextPart

__all__ = ["AnthropicRequest", "background_kwargs", "from_anthropic", "read_message"]

#: ``Request.endpoint`` of Anthropic Messages calls (part of derived task names).
ENDPOINT = "messages"


@dataclass(frozen=True)
class AnthropicRequest:
    """One ``messages.create`` body in neutral form (the shape of ``OpenAIRequest``)."""

    request: Request
    body: dict[str, Any]
    #: ``rebuild(prompt)`` -> the body with compressed text written back; ``body`` itself
    #: when nothing changed; raises :class:`UnsupportedRequest` when the prompt does not fit.
    rebuild: Callable[[Prompt], dict[str, Any]]
    comparable: bool = True


def _system_message(system: Any) -> Message | None:
    """The ``system`` parameter as one protected system message (None: not given)."""
    if isinstance(system, str):
        return Message("system", (TextPart(system, protected=True),))
    if isinstance(system, (list, tuple)):
        parts: list[Part] = []
        for block in system:
            text = block.get("text") if isinstance(block, Mapping) else None
            if isinstance(block, Mapping) and block.get("type") == "text" and isinstance(text, str):
                parts.append(TextPart(text, protected=True))
            else:
                parts.append(OpaquePart(block))
        return Message("system", tuple(parts))
    return None


def from_anthropic(body: Mapping[str, Any]) -> AnthropicRequest | None:
    """The neutral form of a ``messages.create`` body, or None to pass it through untouched.

    None when ``model`` is not a string or ``messages`` is not a list of messages. Never
    raises for a body shape.
    """
    model = body.get("model")
    raw = body.get("messages")
    if not isinstance(model, str) or raw is None or isinstance(raw, (str, bytes, Mapping)):
        return None
    messages = raw if isinstance(raw, list) else list(raw)  # an iterable is read once, here
    kwargs = {**body, "messages": messages}
    conv = from_openai("chat", {"model": model, "messages": messages})
    if conv is None:
        return None
    system = _system_message(body.get("system"))
    head: tuple[Message, ...] = (system,) if system is not None else ()
    neutral = (*head, *conv.request.prompt)

    def rebuild(prompt: Prompt) -> dict[str, Any]:
        if isinstance(prompt, str) or len(prompt) > len(neutral):
            raise UnsupportedRequest("message count changed")
        if tuple(prompt[: len(head)]) != head:
            raise UnsupportedRequest("the system prompt changed")
        # fewer messages: whole demonstration turns left out, by the rule every adapter
        # shares (promptsieve.convert.kept_indices); the kept ones are the caller's own
        new = conv.rebuild(tuple(prompt[len(head) :]))["messages"]
        if new is messages:
            return kwargs
        if len(new) == len(messages):
            new = [_without_blank_text(o, n) for o, n in zip(messages, new, strict=True)]
        return {**kwargs, "messages": new}

    return AnthropicRequest(Request(neutral, model, ENDPOINT), kwargs, rebuild)


def _text(block: Any) -> str | None:
    """A content block's text (None: not a text block given as a mapping)."""
    if isinstance(block, Mapping) and block.get("type") == "text":
        text = block.get("text")
        return text if isinstance(text, str) else None
    return None


def _without_blank_text(orig: Any, new: Any) -> Any:
    """``new`` (the rebuilt ``orig``) without the text blocks that compression emptied.

    The Messages API refuses empty or whitespace-only text blocks and message contents
    (HTTP 400), so a block emptied by compression is left out of its message, by the rule
    of :func:`promptsieve.convert.without_emptied`. Raises :class:`UnsupportedRequest` (the
    original goes out) when a message's whole text was emptied, or when an emptied block
    carries ``cache_control``.
    """
    if new is orig:
        return new
    before, after = orig.get("content"), new.get("content")
    if isinstance(after, str):
        if emptied(before, after):
            raise UnsupportedRequest("a message's text was removed entirely")
        return new
    kept = without_emptied(
        after,
        [_text(b) for b in before],
        [_text(a) for a in after],
        pinned=lambda block: isinstance(block, Mapping) and "cache_control" in block,
    )
    return new if len(kept) == len(after) else {**new, "content": kept}


def background_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The same request as a plain, non-streamed call (for background comparisons)."""
    kw = dict(kwargs)
    kw.pop("stream", None)
    headers = kw.get("extra_headers")
    if isinstance(headers, Mapping):  # the raw-response marker must not reach comparisons
        kw["extra_headers"] = {
            k: v for k, v in headers.items() if k.lower() != RAW_RESPONSE_HEADER.lower()
        }
    return kw


def read_message(result: Any) -> tuple[TargetOutput | None, int | None]:
    """The output and the server's input-token count (``input_tokens`` + cache reads and
    writes) of a parsed ``Message``. Streams and raw responses (``with_raw_response``) give
    ``(None, None)``: reading them could consume what the caller reads, so a comparison then
    sends both variants itself."""
    if not isinstance(result, AnthropicMessage):
        return None, None
    text: list[str] = []
    calls: list[tuple[str, str]] = []
    for block in result.content:
        if block.type == "text":
            text.append(block.text)
        elif block.type == "tool_use":
            calls.append((block.name, json.dumps(block.input, sort_keys=True)))
    usage = result.usage
    tokens = None
    if usage is not None:
        tokens = int(usage.input_tokens)
        tokens += int(usage.cache_creation_input_tokens or 0)
        tokens += int(usage.cache_read_input_tokens or 0)
    return TargetOutput("".join(text), tuple(calls)), tokens
