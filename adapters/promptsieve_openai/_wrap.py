"""Patching an OpenAI client's ``create`` (and ``parse``) methods in place.

The patched method is set as an instance attribute of the client's cached resource object
(``client.chat.completions`` and friends), so the class and every other client stay as
they were. ``parse`` (structured outputs) posts by itself, so it is patched too; the
``stream`` helpers call ``create`` and need nothing. ``with_raw_response`` and
``with_streaming_response`` wrap the bound methods when first accessed and are cached: we
drop cached ones so they are rebuilt around the patched methods, and raw calls go through
the sieve too (their responses are parsed from the SDK's own cache; streamed bodies are
never read).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from openai import AsyncOpenAI, OpenAI

from promptsieve.fidelity import TargetOutput
from promptsieve.sieve import Plan, Prompt, Sieve
from promptsieve_openai._convert import (
    Converted,
    background_kwargs,
    convert,
    read_response,
)

_ORIGINAL = "__promptsieve_original__"
_STATE = "_promptsieve_state"
_CACHED = ("with_raw_response", "with_streaming_response")
_ENDPOINTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("chat", ("chat", "completions"), ("create", "parse")),
    ("completions", ("completions",), ("create",)),
    ("responses", ("responses",), ("create", "parse")),
)


class _State:
    def __init__(self, sieve: Sieve, task: str | None) -> None:
        self.sieve = sieve
        self.task = task


def patch(client: OpenAI | AsyncOpenAI, sieve: Sieve, task: str | None) -> None:
    is_async = isinstance(client, AsyncOpenAI)
    state = _State(sieve, task)
    setattr(client, _STATE, state)
    make = _async_create if is_async else _sync_create
    for endpoint, path, methods in _ENDPOINTS:
        resource = _resolve(client, path)
        if resource is None:
            continue
        for name in methods:
            method = getattr(resource, name, None)
            if not callable(method):  # an older SDK without ``parse``
                continue
            original = _original(method)
            patched = make(endpoint, original, state)
            setattr(patched, _ORIGINAL, original)
            setattr(resource, name, patched)
        _drop_cached(resource)
    _patch_copy(client, sieve, task)


def unpatch(client: OpenAI | AsyncOpenAI) -> None:
    for _endpoint, path, methods in _ENDPOINTS:
        resource = _resolve(client, path)
        if resource is None:
            continue
        for name in methods:
            vars(resource).pop(name, None)
        _drop_cached(resource)
    for name in ("copy", "with_options", _STATE):
        if name in vars(client):
            delattr(client, name)


def sieve_of(client: object) -> Sieve | None:
    state = getattr(client, _STATE, None)
    return state.sieve if isinstance(state, _State) else None


def _resolve(client: object, path: tuple[str, ...]) -> Any:
    obj: Any = client
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj if callable(getattr(obj, "create", None)) else None


def _original(method: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(method, _ORIGINAL, method)  # re-wrapping never stacks two sieves


def _drop_cached(resource: object) -> None:
    for name in _CACHED:
        vars(resource).pop(name, None)


def _patch_copy(client: OpenAI | AsyncOpenAI, sieve: Sieve, task: str | None) -> None:
    copy = type(client).copy.__get__(client, type(client))

    @functools.wraps(copy)
    def wrapped_copy(*args: Any, **kwargs: Any) -> Any:
        new = copy(*args, **kwargs)
        patch(new, sieve, task)
        return new

    client.copy = wrapped_copy  # type: ignore[method-assign]
    client.with_options = wrapped_copy  # type: ignore[method-assign]


# -- the patched methods -------------------------------------------------------------------
def _sync_create(endpoint: str, original: Callable[..., Any], state: _State) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        sieve = state.sieve
        conv = _convert(sieve, endpoint, args, kwargs)
        if conv is None:
            return original(*args, **kwargs)
        plan, _ = sieve.prepare(conv.request, state.task)
        plan, send_kwargs = _outgoing(sieve, plan, conv)
        try:
            result = original(**send_kwargs)  # the target's own errors reach the caller
        except BaseException:
            sieve.abandon(plan)
            raise
        try:
            output, usage = read_response(result)

            def send_variant(prompt: Prompt) -> TargetOutput:
                resp = original(**background_kwargs(endpoint, conv.rebuild(prompt)))
                return _require_output(read_response(resp)[0])

            sieve.observe(
                plan,
                output,
                usage_prompt_tokens=usage,
                send_variant=send_variant if conv.comparable else None,
            )
        except Exception as exc:  # never let bookkeeping fail a call that succeeded
            _bookkeeping_failed(sieve, exc)
        return result

    return create


def _async_create(endpoint: str, original: Callable[..., Any], state: _State) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(*args: Any, **kwargs: Any) -> Any:
        sieve = state.sieve
        conv = _convert(sieve, endpoint, args, kwargs)
        if conv is None:
            return await original(*args, **kwargs)
        plan, _ = await sieve.aprepare(conv.request, state.task)
        plan, send_kwargs = _outgoing(sieve, plan, conv)
        try:
            result = await original(**send_kwargs)
        except BaseException:
            sieve.abandon(plan)
            raise
        try:
            output, usage = read_response(result)

            async def send_variant(prompt: Prompt) -> TargetOutput:
                resp = await original(**background_kwargs(endpoint, conv.rebuild(prompt)))
                return _require_output(read_response(resp)[0])

            await sieve.aobserve(
                plan,
                output,
                usage_prompt_tokens=usage,
                send_variant=send_variant if conv.comparable else None,
            )
        except Exception as exc:
            _bookkeeping_failed(sieve, exc)
        return result

    return create


def _convert(
    sieve: Sieve, endpoint: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Converted | None:
    if args:  # the SDK's create is keyword-only; let it raise its own TypeError
        return None
    try:
        return convert(endpoint, kwargs)
    except Exception as exc:
        _bookkeeping_failed(sieve, exc)
        return None


def _outgoing(sieve: Sieve, plan: Plan, conv: Converted) -> tuple[Plan, dict[str, Any]]:
    if not plan.is_compressed:
        return plan, conv.kwargs
    try:
        return plan, conv.rebuild(plan.sent.prompt)
    except Exception as exc:  # Unsupported or a bug: the original goes out
        sieve.report_error(exc, "rebuilding the request")
        return sieve.revert(plan), conv.kwargs


def _require_output(output: TargetOutput | None) -> TargetOutput:
    if output is None:
        raise TypeError("the target's response carried no readable output")
    return output


def _bookkeeping_failed(sieve: Sieve, exc: BaseException) -> None:
    sieve.report_error(exc, "the OpenAI adapter")
