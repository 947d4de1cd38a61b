"""Neutral prompt model: messages made of parts.

Adapters convert OpenAI or LangChain objects to these types and back; the core never sees
vendor types. Only :class:`TextPart` content of compressible roles is ever rewritten;
every other part (images, audio, tool calls, ...) is carried opaquely in ``OpaquePart``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from promptsieve._errors import ConfigError

__all__ = [
    "COMPRESSIBLE_ROLES",
    "Message",
    "OpaquePart",
    "Part",
    "Prompt",
    "Request",
    "Span",
    "TextPart",
    "as_messages",
    "rewrite_problem",
]

#: Roles whose text may be compressed by default. System, tool, function, developer and
#: unknown roles are protected.
COMPRESSIBLE_ROLES: frozenset[str] = frozenset({"user", "assistant"})


@dataclass(frozen=True)
class TextPart:
    """Plain text. ``protected=True`` marks text that must go out byte-identical."""

    text: str
    protected: bool = False


@dataclass(frozen=True)
class OpaquePart:
    """Anything that is not text (an image, audio, a tool call): passed through as is."""

    payload: Any


Part = TextPart | OpaquePart


@dataclass(frozen=True)
class Message:
    """One chat message. ``extra`` keeps vendor fields (name, tool_call_id, ...) untouched."""

    role: str
    parts: tuple[Part, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def text(cls, role: str, content: str) -> Message:
        return cls(role=role, parts=(TextPart(content),))

    @property
    def content(self) -> str:
        """The message's text parts joined (opaque parts are skipped)."""
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    def with_parts(self, parts: Sequence[Part]) -> Message:
        return replace(self, parts=tuple(parts))


#: A neutral prompt: a bare string (completions) or chat messages.
Prompt = str | tuple[Message, ...]


@dataclass(frozen=True)
class Request:
    """One request in neutral form: the prompt and the target model it goes to."""

    prompt: Prompt
    model: str
    #: Which API it came through ("chat", "completions", "responses", "agent", ...);
    #: part of derived task names.
    endpoint: str = "chat"


@dataclass(frozen=True)
class Span:
    """A character range ``[start, end)`` of one text part, with its importance score."""

    message: int
    part: int
    start: int
    end: int
    text: str
    score: float
    kind: Literal["word", "sentence", "demo", "other"] = "word"


def as_messages(prompt: str | Sequence[Message]) -> tuple[tuple[Message, ...], bool]:
    """Normalise a prompt to messages; the flag says whether it was a bare string.

    Raises ``ConfigError`` for anything but a ``str`` or a sequence of :class:`Message`
    (bytes, None, a number, a sequence holding something else)."""
    if isinstance(prompt, str):
        return (Message.text("user", prompt),), True
    expected = "a prompt must be a str or a sequence of promptsieve.Message"
    if not isinstance(prompt, Sequence) or isinstance(prompt, (bytes, bytearray)):
        raise ConfigError(f"{expected}, got {type(prompt).__name__}")
    messages: list[Message] = []
    for m in prompt:
        if not isinstance(m, Message):
            raise ConfigError(f"{expected}, got a {type(m).__name__} in the sequence")
        messages.append(m)
    return tuple(messages), False


def rewrite_problem(before: Message, after: Message) -> str | None:
    """Why ``after`` is not a legal compression of ``before``, or None when it is.

    Legal: same role and parts, only text parts of a compressible role changed, protected and
    opaque parts untouched. Adapters check this before writing a message back.
    """
    if after.role != before.role or len(after.parts) != len(before.parts):
        return "message shape changed"
    for b, a in zip(before.parts, after.parts, strict=True):
        if isinstance(b, OpaquePart) or b.protected:
            if a != b:
                return "a protected part changed"
        elif not isinstance(a, TextPart):
            return "a text part became opaque"
    if before.role not in COMPRESSIBLE_ROLES and before != after:
        return "only user/assistant text may change"
    return None
