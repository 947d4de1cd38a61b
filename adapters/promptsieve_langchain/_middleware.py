"""LangChain v1 agent middleware: compress each model call of an agent per the verdict.

Imported only when ``langchain`` (v1, with ``langchain.agents.middleware``) is installed;
langchain-core alone never reaches this module. Shadow and monitor comparisons re-send
the request's messages to the request's model (with its tools bound) in the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable

from promptsieve import Call, Prompt, Request, Sieve, TargetOutput
from promptsieve._patching import check_task
from promptsieve_langchain._convert import (
    model_name,
    prompt_tokens,
    rebuild_messages,
    target_output,
    to_neutral,
)
from promptsieve_langchain._sieves import COMPARISON_CONFIG, EVENT, event_data, resolve

__all__ = ["SieveMiddleware"]

log = logging.getLogger(__name__)


class SieveMiddleware(AgentMiddleware):
    """Compresses the messages of each model request where the task's verdict passed."""

    def __init__(
        self,
        sieve: Sieve | None = None,
        *,
        task: str | None = None,
        verify: bool | None = None,
        ratio: float | None = None,
    ) -> None:
        super().__init__()
        check_task("SieveMiddleware", task)
        self.task = task
        self._resolve = resolve(sieve, verify=verify, ratio=ratio)

    @property
    def effective_sieve(self) -> Sieve:
        return self._resolve()

    def _call(self, sieve: Sieve, request: ModelRequest, send: Any) -> Call[ModelRequest]:
        messages = _all_messages(request)
        neutral = to_neutral(messages)
        skip = 1 if request.system_message is not None else 0

        def rebuild(prompt: Prompt) -> ModelRequest:
            new = rebuild_messages(messages, neutral, prompt)
            return request.override(messages=cast(Any, new[skip:]))

        req = Request(neutral, model_name(request.model), "agent")
        return sieve.call(req, self.task, original=request, rebuild=rebuild, send_variant=send)

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> Any:
        sieve = self._resolve()
        self._resolve.warm()
        model = _bound_model(request)
        messages = _all_messages(request)
        neutral = to_neutral(messages)

        def send(prompt: Prompt) -> TargetOutput:
            msgs = rebuild_messages(messages, neutral, prompt)
            return target_output(model.invoke(msgs, COMPARISON_CONFIG))

        with self._call(sieve, request, send) as call:
            try:
                dispatch_custom_event(EVENT, event_data(call.plan, component="middleware"))
            except Exception as exc:
                log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)
            response = handler(call.payload)
            call.read(_read, response)
        return response

    async def awrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], Awaitable[ModelResponse]]
    ) -> Any:
        sieve = self._resolve()
        await asyncio.to_thread(self._resolve.warm)
        model = _bound_model(request)
        messages = _all_messages(request)
        neutral = to_neutral(messages)

        async def send(prompt: Prompt) -> TargetOutput:
            msgs = rebuild_messages(messages, neutral, prompt)
            return target_output(await model.ainvoke(msgs, COMPARISON_CONFIG))

        async with self._call(sieve, request, send) as call:
            try:
                await adispatch_custom_event(EVENT, event_data(call.plan, component="middleware"))
            except Exception as exc:
                log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)
            response = await handler(call.payload)
            call.read(_read, response)
        return response


def _read(response: Any) -> tuple[TargetOutput | None, int | None]:
    msg = _ai_message(response)
    if msg is None:
        return None, None
    return target_output(msg), prompt_tokens(msg)


def _all_messages(request: ModelRequest) -> list[BaseMessage]:
    head: list[BaseMessage] = [request.system_message] if request.system_message else []
    return head + list(request.messages)


def _ai_message(response: Any) -> AIMessage | None:
    if isinstance(response, AIMessage):
        return response
    inner = getattr(response, "model_response", response)  # ExtendedModelResponse
    for m in reversed(getattr(inner, "result", None) or ()):
        if isinstance(m, AIMessage):
            return m
    return None


def _bound_model(request: ModelRequest) -> Runnable[Any, Any]:
    """The request's model as the agent calls it: tools bound, settings applied."""
    model: Runnable[Any, Any] = request.model
    if request.tools:
        kwargs: dict[str, Any] = {}
        if request.tool_choice is not None:
            kwargs["tool_choice"] = request.tool_choice
        model = request.model.bind_tools(request.tools, **kwargs)
    if request.model_settings:
        model = model.bind(**request.model_settings)
    return model
