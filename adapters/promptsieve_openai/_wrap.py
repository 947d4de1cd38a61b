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

from collections.abc import Callable
from typing import Any

from openai import AsyncOpenAI, AsyncStream, OpenAI, Stream

from promptsieve import Call, Sieve
from promptsieve._patching import (
    ORIGINAL,
    STATE,
    PatchState,
    async_create,
    original,
    patch_copy,
    sync_create,
    unpatch_client,
)
from promptsieve._patching import sieve_of as sieve_of  # re-exported
from promptsieve.convert import OpenAIRequest, from_openai
from promptsieve_openai._convert import background_kwargs, read_response
from promptsieve_openai._streams import watch_async_stream, watch_stream

_CACHED = ("with_raw_response", "with_streaming_response")
#: Every SDK surface that sends a prompt, as (endpoint, resource path, methods). The
#: ``stream`` helpers call ``create`` on the same resource; ``with_raw_response`` and
#: ``with_streaming_response`` wrap these methods (their caches are dropped, below).
ENDPOINTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("chat", ("chat", "completions"), ("create", "parse")),
    ("chat", ("beta", "chat", "completions"), ("create", "parse")),
    ("completions", ("completions",), ("create",)),
    ("responses", ("responses",), ("create", "parse")),
    ("responses", ("beta", "responses"), ("create", "parse")),
)


_State = PatchState


def patch(client: OpenAI | AsyncOpenAI, sieve: Sieve, task: str | None) -> None:
    is_async = isinstance(client, AsyncOpenAI)
    state = _State(sieve, task)
    setattr(client, STATE, state)
    for endpoint, path, methods in ENDPOINTS:
        resource = _resolve(client, path)
        if resource is None:
            continue
        for name in methods:
            method = getattr(resource, name, None)
            if not callable(method):  # an older SDK without ``parse``
                continue
            unpatched = original(method)
            patched = _wrap_create(endpoint, unpatched, state, is_async)
            setattr(patched, ORIGINAL, unpatched)
            setattr(resource, name, patched)
        _drop_cached_along(client, path)
    patch_copy(client, lambda new: patch(new, sieve, task))


def unpatch(client: OpenAI | AsyncOpenAI) -> None:
    for _endpoint, path, methods in ENDPOINTS:
        resource = _resolve(client, path)
        if resource is None:
            continue
        for name in methods:
            vars(resource).pop(name, None)
        _drop_cached_along(client, path)
    unpatch_client(client)


def _resolve(client: object, path: tuple[str, ...]) -> Any:
    obj: Any = client
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj if callable(getattr(obj, "create", None)) else None


def _drop_cached_along(client: object, path: tuple[str, ...]) -> None:
    """Drop the raw/streaming-response wrappers cached on the client and on every resource
    down ``path``: touched before wrapping, they hold the unwrapped methods; rebuilt on next
    access, they wrap the patched ones."""
    obj: Any = client
    for name in ("", *path):
        obj = getattr(obj, name, None) if name else obj
        if obj is None:
            return
        for cached in _CACHED:
            vars(obj).pop(cached, None)


# -- the patched methods -------------------------------------------------------------------
def _wrap_create(
    endpoint: str, create: Callable[..., Any], state: _State, is_async: bool
) -> Callable[..., Any]:
    def convert(args: tuple[Any, ...], kwargs: dict[str, Any]) -> OpenAIRequest | None:
        return _convert(state.sieve, endpoint, args, kwargs)

    def variant_kwargs(body: dict[str, Any]) -> dict[str, Any]:
        return background_kwargs(endpoint, body)

    wrap = async_create if is_async else sync_create
    settle = _async_settle if is_async else _sync_settle
    return wrap(create, state, convert, variant_kwargs, read_response, settle)


def _sync_settle(call: Call[dict[str, Any]], result: Any) -> None:
    if isinstance(result, Stream):  # finished when the caller has read it
        call.defer()
        watch_stream(result, call.finish, call.drop)
    else:
        call.read(read_response, result)


def _async_settle(call: Call[dict[str, Any]], result: Any) -> None:
    if isinstance(result, AsyncStream):
        call.defer()
        watch_async_stream(result, call.afinish, call.drop)
    else:
        call.read(read_response, result)


def _convert(
    sieve: Sieve, endpoint: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> OpenAIRequest | None:
    if args:  # the SDK's create is keyword-only; let it raise its own TypeError
        return None
    try:
        return from_openai(endpoint, kwargs)
    except Exception as exc:
        sieve.report_error(exc, "the OpenAI adapter")
        return None
