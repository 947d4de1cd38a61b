"""LangChain v1 agent middleware: compress each model call of an agent per the verdict.

Imported only when ``langchain`` (v1, with ``langchain.agents.middleware``) is installed;
langchain-core alone never reaches this module. Shadow and monitor comparisons send the
compressed variant through the agent's own model call (the ``handler``: its tool and
structured-output bindings, the middleware inside this one), the request with only its
messages' text changed, in the background and without callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, cast

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables.config import set_config_context

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

    @staticmethod
    def _rebuild(request: ModelRequest) -> Callable[[Prompt], ModelRequest]:
        """``rebuild(prompt)``: ``request`` with its messages' text replaced."""
        messages = _all_messages(request)
        neutral = to_neutral(messages)
        skip = 1 if request.system_message is not None else 0

        def rebuild(prompt: Prompt) -> ModelRequest:
            new = rebuild_messages(messages, neutral, prompt)
            return request.override(messages=cast(Any, new[skip:]))

        return rebuild

    def _call(self, sieve: Sieve, request: ModelRequest, send: Any) -> Call[ModelRequest]:
        neutral = to_neutral(_all_messages(request))
        req = Request(neutral, model_name(request.model), "agent")
        return sieve.call(
            req, self.task, original=request, rebuild=self._rebuild(request), send_variant=send
        )

    def wrap_model_call(
        self, request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
    ) -> Any:
        sieve = self._resolve()
        self._resolve.warm()
        rebuild = self._rebuild(request)

        def send(prompt: Prompt) -> TargetOutput:
            # the agent's own model call (its tool and structured-output bindings), with
            # only the text changed; no callbacks (as COMPARISON_CONFIG everywhere)
            with set_config_context(COMPARISON_CONFIG) as ctx:
                return _output(ctx.run(handler, rebuild(prompt)))

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
        rebuild = self._rebuild(request)

        async def send(prompt: Prompt) -> TargetOutput:
            variant = rebuild(prompt)
            if sys.version_info < (3, 11):  # no task context: callbacks may see it
                return _output(await handler(variant))
            with set_config_context(COMPARISON_CONFIG) as ctx:
                return _output(await asyncio.create_task(_awaited(handler(variant)), context=ctx))

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


def _output(response: Any) -> TargetOutput:
    out, _ = _read(response)
    if out is None:
        raise RuntimeError("the comparison's response holds no AI message")
    return out


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
