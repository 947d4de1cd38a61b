"""OpenAI request kwargs ⇄ neutral prompts, and OpenAI responses → TargetOutput.

Only text of user/assistant messages becomes compressible ``TextPart``s. Everything else
(system/developer/tool messages, tool calls, function arguments, images, audio, files,
``tools``, ``response_format``) either is never converted or rides along as
``OpaquePart``/protected text, and going back the original objects are reused: a field
the sieve did not rewrite goes out as the very object the caller passed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openai._constants import RAW_RESPONSE_HEADER
from openai._legacy_response import LegacyAPIResponse
from openai.types import Completion
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from promptsieve.fidelity import TargetOutput
from promptsieve.prompt import (
    COMPRESSIBLE_ROLES,
    Message,
    OpaquePart,
    Part,
    TextPart,
    rewrite_problem,
)
from promptsieve.sieve import Prompt, Request

__all__ = ["Converted", "background_kwargs", "convert", "read_response"]

Endpoint = str  # "chat" | "completions" | "responses"


@dataclass(frozen=True)
class Converted:
    """A request in neutral form plus how to turn a (compressed) prompt back into kwargs."""

    request: Request
    kwargs: dict[str, Any]  # the caller's kwargs (iterables materialised)
    rebuild: Callable[[Prompt], dict[str, Any]]
    #: Whether a background comparison may send this request again (no side effects).
    comparable: bool = True


class Unsupported(Exception):
    """The compressed prompt does not fit the original request's shape."""


def convert(endpoint: Endpoint, kwargs: dict[str, Any]) -> Converted | None:
    """Neutral form of one ``create(**kwargs)`` call, or None to pass it through untouched."""
    model = kwargs.get("model")
    if not isinstance(model, str):
        return None
    if endpoint == "chat":
        return _chat(kwargs, model)
    if endpoint == "completions":
        return _completions(kwargs, model)
    if endpoint == "responses":
        return _responses(kwargs, model)
    return None


# -- chat.completions ----------------------------------------------------------------------
def _chat(kwargs: dict[str, Any], model: str) -> Converted | None:
    raw = kwargs.get("messages")
    if raw is None or isinstance(raw, (str, bytes, Mapping)):
        return None
    messages = raw if isinstance(raw, list) else list(raw)  # a generator is read once, here
    kwargs = {**kwargs, "messages": messages}
    neutral = tuple(_message(m) for m in messages)

    def rebuild(prompt: Prompt) -> dict[str, Any]:
        new = _rebuilt_items(messages, neutral, prompt)
        return kwargs if new is messages else {**kwargs, "messages": new}

    return Converted(Request(neutral, model, "chat"), kwargs, rebuild)


# -- completions ---------------------------------------------------------------------------
def _completions(kwargs: dict[str, Any], model: str) -> Converted | None:
    prompt = kwargs.get("prompt")
    # Batches and token arrays pass through; echo would return the prompt itself.
    if not isinstance(prompt, str) or kwargs.get("echo") is True:
        return None

    def rebuild(new: Prompt) -> dict[str, Any]:
        if new is prompt:
            return kwargs
        if not isinstance(new, str):
            raise Unsupported("completions take a string prompt")
        return {**kwargs, "prompt": new}

    return Converted(Request(prompt, model, "completions"), kwargs, rebuild)


# -- responses -----------------------------------------------------------------------------
def _responses(kwargs: dict[str, Any], model: str) -> Converted | None:
    if kwargs.get("background") is True:  # answered later, by polling: nothing to compare
        return None
    raw = kwargs.get("input")
    instructions = kwargs.get("instructions")
    head: tuple[Message, ...] = ()
    if isinstance(instructions, str):
        head = (Message("system", (TextPart(instructions, protected=True),)),)
    if isinstance(raw, str):
        items: list[Any] = [{"role": "user", "content": raw}]
    elif raw is None or isinstance(raw, (bytes, Mapping)):
        return None
    else:
        items = raw if isinstance(raw, list) else list(raw)
    kwargs = {**kwargs, "input": raw if isinstance(raw, str) else items}
    neutral = head + tuple(_message(m) for m in items)

    def rebuild(prompt: Prompt) -> dict[str, Any]:
        if isinstance(prompt, str) or len(prompt) != len(neutral):
            raise Unsupported("message count changed")
        _check_same(head, prompt[: len(head)])
        new = _rebuilt_items(items, neutral[len(head) :], prompt[len(head) :])
        if new is items:
            return kwargs
        if isinstance(raw, str):
            return {**kwargs, "input": new[0]["content"]}
        return {**kwargs, "input": new}

    # A conversation gets every item appended server-side: never send a second copy.
    comparable = kwargs.get("conversation") is None
    return Converted(Request(neutral, model, "responses"), kwargs, rebuild, comparable)


# -- messages ------------------------------------------------------------------------------
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


def _message(m: Any) -> Message:
    if not isinstance(m, Mapping):  # a pydantic message object: carried whole, untouched
        return Message(str(getattr(m, "role", "unknown")), (OpaquePart(m),))
    role = m.get("role")
    if not isinstance(role, str) or m.get("type", "message") != "message":
        # Responses items (function_call, function_call_output, reasoning, ...) are opaque.
        return Message(f"item:{m.get('type', 'unknown')}", (OpaquePart(m),))
    protected = role not in COMPRESSIBLE_ROLES
    content = m.get("content")
    if isinstance(content, str):
        return Message(role, (TextPart(content, protected),))
    if isinstance(content, (list, tuple)):
        parts: list[Part] = []
        for p in content:
            if isinstance(p, Mapping) and p.get("type") in _TEXT_PART_TYPES:
                text = p.get("text")
                if isinstance(text, str):
                    parts.append(TextPart(text, protected))
                    continue
            parts.append(OpaquePart(p))
        return Message(role, tuple(parts))
    # None (assistant with tool_calls), refusals or anything unknown: nothing to compress.
    return Message(role, (OpaquePart(content),) if content is not None else ())


def _rebuilt_items(originals: list[Any], neutral: tuple[Message, ...], prompt: Prompt) -> list[Any]:
    """Original message objects with only compressible text parts replaced."""
    if isinstance(prompt, str) or len(prompt) != len(neutral):
        raise Unsupported("message count changed")
    out: list[Any] | None = None
    for i, (orig, before, after) in enumerate(zip(originals, neutral, prompt, strict=True)):
        if after is before or after.parts == before.parts:
            continue
        new = _rebuilt_message(orig, before, after)
        if out is None:
            out = list(originals)
        out[i] = new
    return originals if out is None else out


def _rebuilt_message(orig: Any, before: Message, after: Message) -> Any:
    problem = rewrite_problem(before, after)
    if problem:
        raise Unsupported(problem)
    if not isinstance(orig, Mapping):
        raise Unsupported("only user/assistant text may change")
    content = orig.get("content")
    if isinstance(content, str):
        part = after.parts[0]
        assert isinstance(part, TextPart)
        return {**orig, "content": part.text}
    new_content = []
    for p, b, a in zip(content or (), before.parts, after.parts, strict=True):
        if isinstance(b, TextPart) and isinstance(a, TextPart) and a.text != b.text:
            new_content.append({**p, "text": a.text})
        else:
            new_content.append(p)
    return {**orig, "content": new_content}


def _check_same(before: tuple[Message, ...], after: tuple[Message, ...]) -> None:
    if before != after:
        raise Unsupported("instructions changed")


# -- background requests -------------------------------------------------------------------
def background_kwargs(endpoint: Endpoint, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The same request as a plain, parsed, non-streamed, unstored call (for comparisons)."""
    kw = dict(kwargs)
    kw.pop("stream", None)
    kw.pop("stream_options", None)
    headers = kw.get("extra_headers")
    if isinstance(headers, Mapping):
        kw["extra_headers"] = {
            k: v for k, v in headers.items() if k.lower() != RAW_RESPONSE_HEADER.lower()
        }
    if endpoint == "responses" or kw.get("store") is True:
        kw["store"] = False  # a comparison must not leave stored copies behind
    return kw


# -- responses → outputs -------------------------------------------------------------------
def read_response(result: Any) -> tuple[TargetOutput | None, int | None]:
    """The output and the server's prompt-token count, where the response can be read
    without consuming anything the caller will read (streams are never touched)."""
    obj = result
    if isinstance(result, LegacyAPIResponse):  # with_raw_response: parse is cached
        if getattr(result, "_stream", False):
            return None, None
        obj = result.parse()
        if inspect.isawaitable(obj):  # pragma: no cover - future SDKs
            close = getattr(obj, "close", None)
            if callable(close):
                close()
            return None, None
    if isinstance(obj, ChatCompletion):
        return _chat_output(obj), (obj.usage.prompt_tokens if obj.usage else None)
    if isinstance(obj, Completion):
        text = obj.choices[0].text if obj.choices else ""
        return TargetOutput(text or ""), (obj.usage.prompt_tokens if obj.usage else None)
    if isinstance(obj, Response):
        return _responses_output(obj), (obj.usage.input_tokens if obj.usage else None)
    return None, None


def _chat_output(obj: ChatCompletion) -> TargetOutput:
    if not obj.choices:
        return TargetOutput("")
    msg = obj.choices[0].message
    calls: list[tuple[str, str]] = []
    for tc in msg.tool_calls or ():
        fn = getattr(tc, "function", None)
        if fn is not None:
            calls.append((fn.name, fn.arguments))
        else:
            custom = getattr(tc, "custom", None)
            if custom is not None:
                calls.append((custom.name, custom.input))
    if msg.function_call is not None:
        calls.append((msg.function_call.name, msg.function_call.arguments))
    return TargetOutput(msg.content or "", tuple(calls))


def _responses_output(obj: Response) -> TargetOutput:
    calls: list[tuple[str, str]] = []
    for item in obj.output:
        if item.type == "function_call":
            calls.append((item.name, item.arguments))
        elif item.type == "custom_tool_call":
            calls.append((item.name, item.input))
    return TargetOutput(obj.output_text, tuple(calls))
