"""OpenAI SDK specifics: comparison request kwargs, and OpenAI responses → TargetOutput.

Request kwargs ⇄ neutral prompts is the core's dict-only converter,
:func:`promptsieve.convert.from_openai`, shared with offline screening.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from openai._constants import RAW_RESPONSE_HEADER
from openai._legacy_response import LegacyAPIResponse
from openai.types import Completion
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from promptsieve.fidelity import TargetOutput

__all__ = ["background_kwargs", "read_response", "responses_output"]

Endpoint = str  # "chat" | "completions" | "responses"


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
        return responses_output(obj), (obj.usage.input_tokens if obj.usage else None)
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


def responses_output(obj: Response) -> TargetOutput:
    """The output of a Responses API ``Response``: its text and function/custom tool calls."""
    calls: list[tuple[str, str]] = []
    for item in obj.output:
        if item.type == "function_call":
            calls.append((item.name, item.arguments))
        elif item.type == "custom_tool_call":
            calls.append((item.name, item.input))
    return TargetOutput(obj.output_text, tuple(calls))
