"""OpenAI-shaped request bodies (plain dicts) ⇄ the neutral prompt model.

One converter for live traffic (the OpenAI adapter) and offline screening
(``promptsieve screen``), so both compress exactly the same parts of a request. It reads
and writes plain ``dict``/``list`` bodies as sent over the wire (``chat/completions``,
``completions``, ``responses``); it imports no vendor SDK.

Only the text of user/assistant messages becomes compressible :class:`TextPart`.
System/developer/tool messages are protected text; tool calls, images, audio, files, Responses
items other than messages, and message objects that are not mappings ride along as
:class:`OpaquePart`. Going back, the caller's objects are reused: a field the sieve did not
rewrite goes out as the very object the caller passed, and a changed message is a shallow
copy with nothing but its text replaced.

>>> conv = from_openai("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
>>> conv.request.prompt[0].content
'hi'
>>> conv.rebuild((Message.text("user", "yo"),))["messages"]
[{'role': 'user', 'content': 'yo'}]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeGuard, TypeVar

from promptsieve._errors import UnsupportedRequest
from promptsieve.prompt import (
    COMPRESSIBLE_ROLES,
    Message,
    OpaquePart,
    Part,
    Prompt,
    Request,
    TextPart,
    rewrite_problem,
)

__all__ = [
    "Endpoint",
    "OpenAIRequest",
    "emptied",
    "from_openai",
    "kept_indices",
    "message_from_openai",
    "without_emptied",
]

_Block = TypeVar("_Block")

#: The OpenAI API a body is for: ``chat/completions``, ``completions`` or ``responses``.
Endpoint = Literal["chat", "completions", "responses"]

_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


@dataclass(frozen=True)
class OpenAIRequest:
    """One request body in neutral form, and how to turn a neutral prompt back into a body."""

    #: The neutral request (prompt, model, endpoint).
    request: Request
    #: The caller's body, with iterables materialised (so it can be sent again).
    body: dict[str, Any]
    #: ``rebuild(prompt)`` -> the body with the prompt's text written back, or without the
    #: whole user/assistant text messages the prompt leaves out (removed demonstrations).
    #: Returns ``body`` itself when nothing changed; raises :class:`UnsupportedRequest` when
    #: the prompt does not fit (messages added, roles, protected or opaque parts changed, a
    #: message with a tool call or non-text part left out, a removal combined with a rewrite).
    rebuild: Callable[[Prompt], dict[str, Any]]
    #: Whether a background comparison may send this request again (no server-side state).
    comparable: bool = True


def from_openai(endpoint: str, body: Mapping[str, Any]) -> OpenAIRequest | None:
    """The neutral form of one request body, or None to pass it through untouched.

    None for shapes with nothing to compress or that must not be re-sent: no string
    ``model``, completions batches or token arrays, ``echo=True``, Responses
    ``background=True``, and unknown endpoints. Never raises for a body shape.
    """
    model = body.get("model")
    if not isinstance(model, str):
        return None
    kwargs = dict(body)
    if endpoint == "chat":
        return _chat(kwargs, model)
    if endpoint == "completions":
        return _completions(kwargs, model)
    if endpoint == "responses":
        return _responses(kwargs, model)
    return None


# -- chat.completions ----------------------------------------------------------------------
def _chat(kwargs: dict[str, Any], model: str) -> OpenAIRequest | None:
    raw = kwargs.get("messages")
    if not _items(raw):
        return None
    messages = raw if isinstance(raw, list) else list(raw)  # a generator is read once, here
    kwargs = {**kwargs, "messages": messages}
    neutral = tuple(message_from_openai(m) for m in messages)

    def rebuild(prompt: Prompt) -> dict[str, Any]:
        new = _rebuilt_items(messages, neutral, prompt)
        return kwargs if new is messages else {**kwargs, "messages": new}

    return OpenAIRequest(Request(neutral, model, "chat"), kwargs, rebuild)


# -- completions ---------------------------------------------------------------------------
def _completions(kwargs: dict[str, Any], model: str) -> OpenAIRequest | None:
    prompt = kwargs.get("prompt")
    # Batches and token arrays pass through; echo would return the prompt itself.
    if not isinstance(prompt, str) or kwargs.get("echo") is True:
        return None

    def rebuild(new: Prompt) -> dict[str, Any]:
        if new is prompt:
            return kwargs
        if not isinstance(new, str):
            raise UnsupportedRequest("completions take a string prompt")
        return {**kwargs, "prompt": new}

    return OpenAIRequest(Request(prompt, model, "completions"), kwargs, rebuild)


# -- responses -----------------------------------------------------------------------------
def _responses(kwargs: dict[str, Any], model: str) -> OpenAIRequest | None:
    if kwargs.get("background") is True:  # answered later, by polling: nothing to compare
        return None
    raw = kwargs.get("input")
    instructions = kwargs.get("instructions")
    head: tuple[Message, ...] = ()
    if isinstance(instructions, str):
        head = (Message("system", (TextPart(instructions, protected=True),)),)
    if isinstance(raw, str):
        items: list[Any] = [{"role": "user", "content": raw}]
    elif not _items(raw):  # absent (None or an SDK's "not given" sentinel) or not a list
        return None
    else:
        items = raw if isinstance(raw, list) else list(raw)
    kwargs = {**kwargs, "input": raw if isinstance(raw, str) else items}
    neutral = head + tuple(message_from_openai(m) for m in items)

    def rebuild(prompt: Prompt) -> dict[str, Any]:
        if isinstance(prompt, str) or len(prompt) > len(neutral):
            raise UnsupportedRequest("message count changed")
        if prompt[: len(head)] != head:
            raise UnsupportedRequest("instructions changed")
        new = _rebuilt_items(items, neutral[len(head) :], prompt[len(head) :])
        if new is items:
            return kwargs
        if isinstance(raw, str):
            return {**kwargs, "input": new[0]["content"]}
        return {**kwargs, "input": new}

    # A conversation gets every item appended server-side: never send a second copy.
    comparable = not isinstance(kwargs.get("conversation"), (str, Mapping))
    return OpenAIRequest(Request(neutral, model, "responses"), kwargs, rebuild, comparable)


def _items(raw: Any) -> TypeGuard[Iterable[Any]]:
    """Whether ``raw`` is a list (or other iterable) of messages/items."""
    return isinstance(raw, Iterable) and not isinstance(raw, (str, bytes, Mapping))


# -- messages ------------------------------------------------------------------------------
def message_from_openai(m: Any) -> Message:
    """One chat message or Responses input item as a neutral :class:`Message`.

    A mapping with a string ``content`` or a list of ``text``/``input_text``/``output_text``
    parts gives text parts (compressible for user/assistant, protected otherwise); every
    other part, item or object is one :class:`OpaquePart` carried unchanged.
    """
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


def _rebuilt_items(originals: list[Any], neutral: Sequence[Message], prompt: Prompt) -> list[Any]:
    """Original message objects with only compressible text parts replaced, or with whole
    user/assistant text messages left out (:func:`_kept_items`)."""
    if isinstance(prompt, str):
        raise UnsupportedRequest("message count changed")
    if len(prompt) < len(neutral):
        return _kept_items(originals, neutral, prompt)
    if len(prompt) != len(neutral):
        raise UnsupportedRequest("message count changed")
    out: list[Any] | None = None
    for i, (orig, before, after) in enumerate(zip(originals, neutral, prompt, strict=True)):
        if after is before or after.parts == before.parts:
            continue
        new = _rebuilt_message(orig, before, after)
        if out is None:
            out = list(originals)
        out[i] = new
    return originals if out is None else out


#: Keys of a message that may be left out whole: plain text turns, nothing that another
#: message refers to (tool calls, function calls, audio) or that the server needs.
_DROPPABLE_KEYS = frozenset({"role", "content", "name", "type", "id", "status"})


def _kept_items(originals: list[Any], neutral: Sequence[Message], prompt: Prompt) -> list[Any]:
    """The original message objects that ``prompt`` keeps (:func:`kept_indices`); a
    left-out one must also be a mapping of type message with no key outside
    ``_DROPPABLE_KEYS`` (never ``tool_calls``, ``function_call`` or ``audio``)."""
    kept = kept_indices(neutral, prompt, lambda i: _droppable(originals[i]))
    return [originals[i] for i in kept]


def _droppable(orig: Any) -> bool:
    return (
        isinstance(orig, Mapping)
        and set(orig) <= _DROPPABLE_KEYS
        and orig.get("type", "message") == "message"
    )


def kept_indices(
    neutral: Sequence[Message], prompt: Prompt, droppable: Callable[[int], bool]
) -> list[int]:
    """Which messages of ``neutral`` the shorter ``prompt`` keeps (indices, in order), when
    ``prompt`` is ``neutral`` with whole messages left out (e.g. few-shot demonstrations
    given as user/assistant message pairs, removed by
    :class:`promptsieve.demos.DemoCompressor`).

    The rule every adapter shares: each kept message must be unchanged (the very neutral
    object, else an equal one: a drop is not combined with a rewrite); every left-out
    message ``i`` must be a user/assistant message made only of unprotected text parts
    (no tool call, image, audio or other opaque part) and satisfy ``droppable(i)``, the
    adapter's check of its own message object (e.g. no tool-call field); and at least one
    message must remain. Otherwise raises :class:`UnsupportedRequest` (the request then
    goes out unchanged).
    """
    if isinstance(prompt, str):
        raise UnsupportedRequest("message count changed")
    if not prompt:
        raise UnsupportedRequest("every message was removed")
    for same in (lambda a, b: a is b, lambda a, b: a is b or a == b):
        kept: list[int] = []
        for i, before in enumerate(neutral):
            if len(kept) < len(prompt) and same(prompt[len(kept)], before):
                kept.append(i)
        if len(kept) == len(prompt):
            break
    else:
        raise UnsupportedRequest("messages were changed as well as removed")
    keep = set(kept)
    for i, before in enumerate(neutral):
        if i not in keep and not (_plain_text_turn(before) and droppable(i)):
            raise UnsupportedRequest(f"message {i} ({before.role}) cannot be left out")
    return kept


def emptied(before: object, after: object) -> bool:
    """Whether compression emptied a text: ``after`` is blank (empty or whitespace only)
    where ``before`` was not. Either may be None (not a text)."""
    return _blank(after) and not _blank(before)


def _blank(text: object) -> bool:
    return isinstance(text, str) and not text.strip()


def without_emptied(
    blocks: Sequence[_Block],
    before: Sequence[str | None],
    after: Sequence[str | None],
    pinned: Callable[[_Block], bool] = lambda block: False,
) -> list[_Block]:
    """A message's rebuilt content ``blocks`` without the text blocks compression emptied.

    ``before`` / ``after``: each block's text before and after compression (None: not a text
    block), all three of one length. Chat APIs refuse empty text blocks (the Anthropic
    Messages API answers HTTP 400), so an :func:`emptied` block is left out of its message;
    a block that was blank before stays. The rule the adapters share (Anthropic, LangChain).

    Raises :class:`UnsupportedRequest` (the original request goes out) when every block of
    the message was emptied, or when an emptied block is ``pinned``: one the adapter must
    not leave out, e.g. a block carrying Anthropic's ``cache_control`` breakpoint, whose
    removal would move or drop the caller's prompt-cache prefix.
    """
    kept: list[_Block] = []
    for block, b, a in zip(blocks, before, after, strict=True):
        if not emptied(b, a):
            kept.append(block)
        elif pinned(block):
            raise UnsupportedRequest("a text block that carries a cache breakpoint was emptied")
    if not kept:
        raise UnsupportedRequest("every block of a message was emptied")
    return kept


def _plain_text_turn(message: Message) -> bool:
    return (
        message.role in COMPRESSIBLE_ROLES
        and bool(message.parts)
        and all(isinstance(p, TextPart) and not p.protected for p in message.parts)
    )


def _rebuilt_message(orig: Any, before: Message, after: Message) -> Any:
    problem = rewrite_problem(before, after)
    if problem:
        raise UnsupportedRequest(problem)
    if not isinstance(orig, Mapping):
        raise UnsupportedRequest("only user/assistant text may change")
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
