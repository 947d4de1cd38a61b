"""LangChain inputs and messages ⇄ promptsieve's neutral prompts.

Only text of human/AI messages becomes compressible. System, tool and function messages,
``tool_calls``, ``additional_kwargs``, images and every other content block ride along
untouched: going back, the caller's message objects are reused and a changed message is
a ``model_copy`` with nothing but its ``content`` replaced. A prompt with whole human/AI
text messages left out (demonstration pairs removed by
:class:`promptsieve.demos.DemoCompressor`) goes back as the caller's kept messages, by the
core's rule (:func:`promptsieve.convert.kept_indices`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import ChatPromptValue, PromptValue, StringPromptValue

from promptsieve import Message, OpaquePart, Prompt, TargetOutput, TextPart, UnsupportedRequest
from promptsieve.convert import emptied, kept_indices, without_emptied
from promptsieve.prompt import COMPRESSIBLE_ROLES, Part, rewrite_problem

__all__ = [
    "Converted",
    "convert_input",
    "model_name",
    "rebuild_messages",
    "target_output",
    "to_neutral",
]

Kind = Literal["str", "string_value", "chat_value", "messages"]


#: A compressed prompt that does not fit the original's shape (never sent).
Unsupported = UnsupportedRequest


@dataclass(frozen=True)
class Converted:
    """One runnable input in neutral form, and how to turn a neutral prompt back into it."""

    original: LanguageModelInput
    kind: Kind
    prompt: Prompt
    messages: tuple[BaseMessage, ...] = ()

    def rebuild(self, prompt: Prompt) -> LanguageModelInput:
        """The input of the same kind carrying ``prompt`` (the original object if unchanged)."""
        if prompt is self.prompt:
            return self.original
        if self.kind in ("str", "string_value"):
            if not isinstance(prompt, str):
                raise Unsupported("a string input must stay a string")
            return prompt if self.kind == "str" else StringPromptValue(text=prompt)
        assert not isinstance(self.prompt, str)
        new = rebuild_messages(self.messages, self.prompt, prompt)
        if self.kind == "chat_value":
            return ChatPromptValue(messages=new)
        return new


def convert_input(value: LanguageModelInput) -> Converted | None:
    """Neutral form of any LanguageModelInput, or None to pass it through untouched."""
    if isinstance(value, str):
        return Converted(value, "str", value)
    if isinstance(value, StringPromptValue):
        return Converted(value, "string_value", value.text)
    if isinstance(value, ChatPromptValue):
        msgs = tuple(value.messages)
        return Converted(value, "chat_value", to_neutral(msgs), msgs)
    if isinstance(value, PromptValue):  # an unknown kind of prompt value
        return None
    if isinstance(value, Sequence):
        try:
            msgs = tuple(convert_to_messages(value))
        except (NotImplementedError, TypeError, ValueError):  # Documents, bytes, numbers, ...
            return None  # not messages: passed through unchanged
        return Converted(value, "messages", to_neutral(msgs), msgs)
    return None


# -- messages ------------------------------------------------------------------------------
def _role(m: BaseMessage) -> str:
    if isinstance(m, HumanMessage):
        return "user"
    if isinstance(m, AIMessage):
        return "assistant"
    if isinstance(m, SystemMessage):
        return "system"
    if isinstance(m, ToolMessage):
        return "tool"
    if isinstance(m, FunctionMessage):
        return "function"
    if isinstance(m, ChatMessage):
        return {"human": "user", "ai": "assistant"}.get(m.role, m.role)
    return m.type


def to_neutral(messages: Sequence[BaseMessage]) -> tuple[Message, ...]:
    """One neutral message per message and one part per content block, in order."""
    return tuple(_message(m) for m in messages)


def _message(m: BaseMessage) -> Message:
    role = _role(m)
    protected = role not in COMPRESSIBLE_ROLES
    content = m.content
    if isinstance(content, str):
        return Message(role, (TextPart(content, protected),))
    parts: list[Part] = []
    for block in content:
        if isinstance(block, str):
            parts.append(TextPart(block, protected))
        elif (
            isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        ):
            parts.append(TextPart(block["text"], protected))
        else:  # images, audio, tool-use blocks, reasoning, ...
            parts.append(OpaquePart(block))
    return Message(role, tuple(parts))


def rebuild_messages(
    originals: Sequence[BaseMessage], before: Sequence[Message], after: Prompt
) -> list[BaseMessage]:
    """The caller's messages with only compressible text replaced, or the caller's messages
    that ``after`` keeps when it leaves whole ones out (:func:`_droppable`).

    Raises :class:`UnsupportedRequest` when ``after`` does not fit (the request then goes
    out unchanged).
    """
    if isinstance(after, str):
        raise Unsupported("message count changed")
    if len(after) < len(before):
        kept = kept_indices(before, after, lambda i: _droppable(originals[i]))
        return [originals[i] for i in kept]
    if len(after) != len(before):
        raise Unsupported("message count changed")
    out: list[BaseMessage] = []
    for orig, b, a in zip(originals, before, after, strict=True):
        if a is b or a.parts == b.parts:
            out.append(orig)
        else:
            out.append(_rebuilt(orig, b, a))
    return out


#: Fields of a message that may be set on one left out whole: LangChain's counterpart of
#: the OpenAI keys ``promptsieve.convert`` allows. Anything else set (``tool_calls``,
#: ``additional_kwargs`` such as ``function_call`` or ``audio``, response or usage
#: metadata, extra fields) keeps the message, and so the whole request, unchanged.
_DROPPABLE_FIELDS = frozenset({"content", "name", "id", "type", "role"})


def _droppable(m: BaseMessage) -> bool:
    """Whether ``m`` is a plain human/AI message that can be left out whole (the neutral
    part of the rule, text only, is checked by :func:`promptsieve.convert.kept_indices`)."""
    return (
        isinstance(m, (HumanMessage, AIMessage, ChatMessage))
        and not m.model_extra
        and not any(getattr(m, f) for f in type(m).model_fields if f not in _DROPPABLE_FIELDS)
    )


def _rebuilt(orig: BaseMessage, before: Message, after: Message) -> BaseMessage:
    """``orig`` carrying ``after``'s text. A text block that compression emptied is left out
    (the Anthropic Messages API, behind ``ChatAnthropic``, refuses empty text with HTTP 400);
    a message whose whole text was emptied, or an emptied block carrying ``cache_control``,
    raises :class:`UnsupportedRequest`, so the original request goes out (the rule of
    :func:`promptsieve.convert.without_emptied`)."""
    problem = rewrite_problem(before, after)
    if problem:
        raise Unsupported(problem)
    content = orig.content
    if isinstance(content, str):
        part = after.parts[0]
        assert isinstance(part, TextPart)
        if emptied(content, part.text):
            raise Unsupported("a message's text was removed entirely")
        return orig.model_copy(update={"content": part.text})
    blocks: list[Any] = []
    for block, b, a in zip(content, before.parts, after.parts, strict=True):
        if isinstance(b, TextPart) and isinstance(a, TextPart) and a.text != b.text:
            blocks.append(a.text if isinstance(block, str) else {**block, "text": a.text})
        else:
            blocks.append(block)
    kept = without_emptied(
        blocks,
        [p.text if isinstance(p, TextPart) else None for p in before.parts],
        [p.text if isinstance(p, TextPart) else None for p in after.parts],
        pinned=lambda block: isinstance(block, dict) and "cache_control" in block,
    )
    return orig.model_copy(update={"content": kept})


# -- outputs -------------------------------------------------------------------------------
def target_output(result: Any) -> TargetOutput:
    """What the target answered, for the agreement metric."""
    if isinstance(result, str):
        return TargetOutput(result)
    if isinstance(result, BaseMessage):
        calls: tuple[tuple[str, str], ...] = ()
        if isinstance(result, AIMessage):
            calls = tuple(
                (tc["name"], json.dumps(tc["args"], sort_keys=True)) for tc in result.tool_calls
            )
        return TargetOutput(str(result.text), calls)
    return TargetOutput(str(result))


def prompt_tokens(result: Any) -> int | None:
    """The server's prompt-token count, where the model reported usage."""
    usage = getattr(result, "usage_metadata", None)
    if isinstance(usage, dict) and isinstance(usage.get("input_tokens"), int):
        return int(usage["input_tokens"])
    return None


def model_name(model: Any) -> str:
    """The target model's name (part of the verdict key), from a model or a binding."""
    bound = getattr(model, "bound", None)
    if bound is not None and bound is not model:
        return model_name(bound)
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    llm_type = getattr(model, "_llm_type", None)
    return llm_type if isinstance(llm_type, str) else type(model).__name__
