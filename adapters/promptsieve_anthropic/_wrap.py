"""Patching an Anthropic client's ``messages.create`` and ``messages.stream`` in place.

The patched methods are instance attributes of the client's cached ``messages`` resource,
so the class and every other client stay as they were. ``messages.stream(...)`` posts by
itself, so it is patched too: it returns the SDK's own ``MessageStreamManager`` (or the async
one) whose request goes through the sieve when the ``with`` block is entered.
``with_raw_response``/``with_streaming_response`` wrap the bound methods when first accessed
and are cached: cached ones are dropped so they are rebuilt around the patched methods.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from anthropic import NOT_GIVEN, Anthropic, AsyncAnthropic
from anthropic.lib.streaming import AsyncMessageStreamManager, MessageStreamManager

from promptsieve import Prompt, Sieve, TargetOutput
from promptsieve._patching import (
    ORIGINAL,
    STATE,
    PatchState,
    async_create,
    original,
    output_of,
    patch_copy,
    start_call,
    sync_create,
    unpatch_client,
)
from promptsieve._patching import sieve_of as sieve_of  # re-exported
from promptsieve_anthropic._convert import (
    AnthropicRequest,
    background_kwargs,
    from_anthropic,
    read_message,
)

_CACHED = ("with_raw_response", "with_streaming_response")
_METHODS = ("create", "stream")
_State = PatchState


def patch(client: Anthropic | AsyncAnthropic, sieve: Sieve, task: str | None) -> None:
    is_async = isinstance(client, AsyncAnthropic)
    state = _State(sieve, task)
    setattr(client, STATE, state)
    resource = client.messages
    create = original(resource.create)
    stream = original(resource.stream)
    convert = functools.partial(_convert, sieve)
    wrap = async_create if is_async else sync_create
    new_create = wrap(create, state, convert, background_kwargs, read_message)
    new_stream = (_async_stream if is_async else _sync_stream)(create, stream, state)
    for name, orig, new in (("create", create, new_create), ("stream", stream, new_stream)):
        setattr(new, ORIGINAL, orig)
        setattr(resource, name, new)
    _drop_cached(resource)
    patch_copy(client, lambda new: patch(new, sieve, task))


def unpatch(client: Anthropic | AsyncAnthropic) -> None:
    resource = client.messages
    for name in _METHODS:
        vars(resource).pop(name, None)
    _drop_cached(resource)
    unpatch_client(client)


def _drop_cached(resource: object) -> None:
    for name in _CACHED:
        vars(resource).pop(name, None)


# -- the patched methods -------------------------------------------------------------------
def _convert(
    sieve: Sieve, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AnthropicRequest | None:
    if args:  # the SDK's methods are keyword-only; let it raise its own TypeError
        return None
    try:
        return from_anthropic(kwargs)
    except Exception as exc:
        sieve.report_error(exc, "the Anthropic adapter")
        return None


def _output(response: Any) -> TargetOutput:
    return output_of(read_message, response)


def _streamable(kwargs: dict[str, Any]) -> bool:
    """``stream()`` options that ``create(stream=True)`` takes as they are."""
    return "output_format" not in kwargs and "stream" not in kwargs


def _sync_stream(
    create: Callable[..., Any], stream: Callable[..., Any], state: _State
) -> Callable[..., Any]:
    @functools.wraps(stream)
    def patched(*args: Any, **kwargs: Any) -> Any:
        conv = _convert(state.sieve, args, kwargs) if _streamable(kwargs) else None
        if conv is None:
            return stream(*args, **kwargs)

        def send_variant(prompt: Prompt) -> TargetOutput:
            return _output(create(**background_kwargs(conv.rebuild(prompt))))

        def api_request() -> Any:  # run by the manager's __enter__, as the SDK's own
            with start_call(state, conv, send_variant) as call:
                return create(**call.payload, stream=True)

        try:
            return _manager(MessageStreamManager, api_request)
        except Exception as exc:  # an SDK whose manager we cannot build: the call stays its own
            state.sieve.report_error(exc, "the Anthropic stream helper")
            return stream(*args, **kwargs)

    return patched


def _async_stream(
    create: Callable[..., Any], stream: Callable[..., Any], state: _State
) -> Callable[..., Any]:
    @functools.wraps(stream)
    def patched(*args: Any, **kwargs: Any) -> Any:
        conv = _convert(state.sieve, args, kwargs) if _streamable(kwargs) else None
        if conv is None:
            return stream(*args, **kwargs)

        async def send_variant(prompt: Prompt) -> TargetOutput:
            return _output(await create(**background_kwargs(conv.rebuild(prompt))))

        async def api_request() -> Any:  # awaited by the manager's __aenter__
            async with start_call(state, conv, send_variant) as call:
                return await create(**call.payload, stream=True)

        request = api_request()
        try:
            return _manager(AsyncMessageStreamManager, request)
        except Exception as exc:
            request.close()  # never awaited
            state.sieve.report_error(exc, "the Anthropic stream helper")
            return stream(*args, **kwargs)

    return patched


def _manager(cls: Any, api_request: Any) -> Any:
    """The SDK's stream manager around ``api_request`` (``output_format`` where it has one)."""
    try:
        return cls(api_request, output_format=NOT_GIVEN)
    except TypeError:  # SDKs before structured outputs
        return cls(api_request)
