"""The LiteLLM integration: one ``CustomLogger`` for the proxy and for the SDK.

* LiteLLM proxy (gateway): ``async_pre_call_hook`` decides and compresses each
  ``/chat/completions`` request before the proxy routes it; the success/failure callbacks
  finish the request's lifecycle (usage, and the shadow/monitor comparison, sent through the
  proxy's own router to the same model group).
* LiteLLM SDK (``litellm.acompletion``): ``async_pre_call_deployment_hook`` does the same
  just before the call goes to the provider. LiteLLM offers no hook that may rewrite a *sync*
  ``litellm.completion`` call, so sync calls go out untouched (use ``acompletion`` or the
  proxy).

Requests are converted by the core's OpenAI converter (LiteLLM speaks the OpenAI chat shape):
system/developer/tool messages, tool calls, images and every other parameter go out as given.
A request's plan is kept in memory under its ``litellm_call_id`` between the hook and the
callback (dropped after ``plan_ttl_s``; a proxy stream the client leaves early is finished
when the proxy closes it, its partial answer never compared). Comparisons are plain,
non-streamed calls marked so that this handler ignores them. Verdicts live in the sieve's
store: give every gateway replica the same Redis URL (``PROMPTSIEVE_STORE=redis://...``) and
they share them.
Everything fails open: an internal error sends the original request.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from promptsieve import Call, Plan, Prompt, Sieve, TargetOutput
from promptsieve._patching import check_sieve, check_task, check_wait
from promptsieve.convert import OpenAIRequest, from_openai

__all__ = ["PromptSieveLiteLLM"]

log = logging.getLogger(__name__)

#: Set while a comparison call is made, so that the hooks leave it alone.
_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "promptsieve_litellm_background", default=False
)
_BACKGROUND_KEY = "promptsieve_background"
_PLAN_KEY = "promptsieve_plan"
#: Parameters a comparison call repeats (sampling, tools, routing); nothing else is copied.
_REPEATED = (
    "model", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
    "tools", "tool_choice", "functions", "function_call", "parallel_tool_calls",
    "response_format", "frequency_penalty", "presence_penalty", "logit_bias",
    "reasoning_effort", "api_base", "base_url", "api_key", "api_version",
    "custom_llm_provider", "timeout", "extra_headers",
)  # fmt: skip
_CHAT_CALLS = frozenset({"completion", "acompletion"})


@dataclass
class _Pending:
    """A request's lifecycle held from the pre-call hook to its success/failure callback."""

    call: Call[dict[str, Any]]
    at: float

    @property
    def plan(self) -> Plan:
        return self.call.plan


class PromptSieveLiteLLM(CustomLogger):
    """A LiteLLM callback that runs requests through ``sieve`` (see the module doc).

    ``task``: default task name of the requests (``with promptsieve.task(...)`` and the
    request's ``metadata["promptsieve_task"]`` win). ``plan_ttl_s``: how long a plan waits
    for its callback before it is dropped (and its shadow slot freed). ``sieve``: a
    :class:`promptsieve.Sieve`, or None for a default ``Sieve()``. Raises
    :class:`~promptsieve.ConfigError` for a ``sieve`` that is not a ``Sieve`` (e.g. a
    ``SieveConfig``), an empty ``task``, or a ``plan_ttl_s`` that is not a finite number of
    seconds > 0.
    """

    def __init__(
        self, sieve: Sieve | None = None, *, task: str | None = None, plan_ttl_s: float = 600.0
    ) -> None:
        check_sieve("PromptSieveLiteLLM", sieve)
        check_task("PromptSieveLiteLLM", task)
        check_wait("PromptSieveLiteLLM: plan_ttl_s", plan_ttl_s, zero_ok=False)
        super().__init__()
        self.sieve = sieve if sieve is not None else Sieve()
        self.task = task
        self.plan_ttl_s = plan_ttl_s
        self._plans: dict[str, _Pending] = {}
        self._lock = threading.Lock()

    # -- hooks that may rewrite the request ----------------------------------------------
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        """Proxy: decide, compress, and return the request to route (never raises)."""
        if str(getattr(call_type, "value", call_type)) not in _CHAT_CALLS:
            return data
        return await self._prepare(data, via_router=True)

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """SDK ``acompletion``: decide and compress just before the provider call."""
        if call_type is not None and str(getattr(call_type, "value", call_type)) not in _CHAT_CALLS:
            return None
        new = await self._prepare(kwargs, via_router=False)
        return None if new is kwargs else new

    async def _prepare(self, data: dict[str, Any], *, via_router: bool) -> dict[str, Any]:
        if _BACKGROUND.get():
            return data
        meta = data.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        if meta.get(_BACKGROUND_KEY) or meta.get(_PLAN_KEY):
            return data  # a comparison, or already prepared by the proxy hook
        call_id = str(data.get("litellm_call_id") or "")
        with self._lock:
            if call_id and call_id in self._plans:
                return data
        try:
            conv = from_openai("chat", data)
            if conv is None:
                return data
            task = (
                meta.get("promptsieve_task")
                if isinstance(meta.get("promptsieve_task"), str)
                else None
            )
            send = self._sender(conv, data, via_router) if conv.comparable else None
            # the lifecycle (prepare, rebuild, revert on a failed rebuild, fail-open) is the
            # sieve's; LiteLLM splits the request in two hooks, so the Call is held across them
            call = self.sieve.call(conv.request, task or self.task, original=data,
                                   rebuild=conv.rebuild, send_variant=send)  # fmt: skip
            await call.__aenter__()
            call.defer()  # finished by the success/failure callback
            key = call_id or uuid.uuid4().hex
            self._keep(key, _Pending(call, time.monotonic()))
            return {**call.payload, "metadata": {**meta, _PLAN_KEY: key}}
        except Exception as exc:
            self.sieve.report_error(exc, "the LiteLLM hook")
            return data

    def _sender(
        self, conv: OpenAIRequest, data: Mapping[str, Any], via_router: bool
    ) -> Callable[[Prompt], Awaitable[TargetOutput]]:
        params = {k: data[k] for k in _REPEATED if k in data}

        async def send(prompt: Prompt) -> TargetOutput:
            body = conv.rebuild(prompt)
            kwargs = {**params, "messages": body["messages"], "stream": False,
                      "metadata": {_BACKGROUND_KEY: True}}  # fmt: skip
            token = _BACKGROUND.set(True)
            try:
                response = await _acompletion(via_router)(**kwargs)
            finally:
                _BACKGROUND.reset(token)
            output, _ = read_response(response)
            if output is None:
                raise TypeError("the comparison's response carried no readable output")
            return output

        return send

    # -- bookkeeping ---------------------------------------------------------------------
    def _keep(self, key: str, pending: _Pending) -> None:
        now = time.monotonic()
        with self._lock:
            stale = [k for k, p in self._plans.items() if now - p.at > self.plan_ttl_s]
            for k in stale:
                self._plans.pop(k).call.drop()
            self._plans[key] = pending

    def _pop(self, kwargs: Mapping[str, Any]) -> _Pending | None:
        keys = [str(kwargs.get("litellm_call_id") or "")]
        params = kwargs.get("litellm_params")
        for meta in (
            params.get("metadata") if isinstance(params, Mapping) else None,
            kwargs.get("metadata"),
        ):
            if isinstance(meta, Mapping) and meta.get(_PLAN_KEY):
                keys.append(str(meta[_PLAN_KEY]))
        with self._lock:
            for k in keys:
                if k and k in self._plans:
                    return self._plans.pop(k)
        return None

    # -- callbacks -----------------------------------------------------------------------
    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        pending = self._pop(kwargs)
        if pending is None:
            return
        try:
            output, usage = read_response(response_obj)
        except Exception as exc:
            self.sieve.report_error(exc, "reading a LiteLLM response")
            output, usage = None, None
        await pending.call.afinish(output, usage)

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        pending = self._pop(kwargs)
        if pending is not None:
            pending.call.drop()  # the live call failed: nothing is compared

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        """Proxy streams, passed through chunk by chunk. When the client leaves a stream
        early (it disconnects, or an upstream error ends it), LiteLLM either skips the success
        callback (the plan then waited ``plan_ttl_s``) or, as 1.108 does, calls it with the
        text served so far, which was compared as if it were the whole answer. Such a call is
        finished here when the proxy closes the stream, as the OpenAI wrapper finishes a
        stream closed early: live answer unreadable, both variants compared. Streams of
        ``litellm.acompletion`` (SDK) have no such hook."""
        complete = False
        try:
            async for item in response:
                yield item
            complete = True
        finally:
            pending = None if complete else self._pop(request_data)
            if pending is not None:
                try:
                    await pending.call.afinish(None, None)
                except BaseException as exc:  # cancelled while closing: free the slot at least
                    pending.call.drop()
                    if not isinstance(exc, Exception):
                        raise

    def pending(self) -> int:
        """Plans waiting for their callback (for tests and health checks)."""
        with self._lock:
            return len(self._plans)


def _acompletion(via_router: bool) -> Callable[..., Awaitable[Any]]:
    if via_router:
        try:
            from litellm.proxy.proxy_server import llm_router
        except ImportError:  # pragma: no cover - the proxy extra is absent
            llm_router = None
        if llm_router is not None:
            fn: Callable[..., Awaitable[Any]] = llm_router.acompletion
            return fn
    import litellm

    sdk: Callable[..., Awaitable[Any]] = litellm.acompletion
    return sdk


def read_response(response: Any) -> tuple[TargetOutput | None, int | None]:
    """Output and prompt tokens of a LiteLLM ``ModelResponse`` (OpenAI chat shape)."""
    choices = getattr(response, "choices", None)
    if not choices:
        return None, None
    message = getattr(choices[0], "message", None)
    if message is None:
        return None, None
    calls: list[tuple[str, str]] = []
    for tc in getattr(message, "tool_calls", None) or ():
        fn = getattr(tc, "function", None)
        if fn is not None:
            calls.append((str(fn.name), str(fn.arguments)))
    usage = getattr(response, "usage", None)
    tokens = getattr(usage, "prompt_tokens", None)
    return (
        TargetOutput(str(getattr(message, "content", "") or ""), tuple(calls)),
        int(tokens) if tokens is not None else None,
    )
