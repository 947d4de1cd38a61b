"""Shared pieces of the adapters that patch a vendor client's ``create`` methods in place.

The OpenAI and Anthropic adapters wrap a bound ``create`` so that every request goes through
a :class:`~promptsieve.Sieve`; the wrapping (convert, ``sieve.call``, send, read, fall back to
the untouched call) is the same for both and lives here. This module imports no vendor SDK:
each adapter passes its own converter, background-kwargs builder and response reader.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

from promptsieve._config_types import check_wait as check_wait  # the adapters use it too
from promptsieve._errors import ConfigError
from promptsieve.fidelity import TargetOutput
from promptsieve.prompt import Prompt, Request
from promptsieve.sieve import Call, Sieve

#: Where a patched method keeps the method it wraps (re-wrapping never stacks two sieves).
ORIGINAL = "__promptsieve_original__"

#: Where a patched client keeps its :class:`PatchState`.
STATE = "_promptsieve_state"

#: ``reader(response) -> (output, usage prompt tokens)``, as :meth:`Call.read` takes.
Reader = Callable[[Any], tuple[TargetOutput | None, int | None]]


class Conversion(Protocol):
    """A converted request body (``OpenAIRequest``, ``AnthropicRequest``)."""

    @property
    def request(self) -> Request: ...
    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def rebuild(self) -> Callable[[Prompt], dict[str, Any]]: ...
    @property
    def comparable(self) -> bool: ...


class PatchState:
    """What a patched client carries: its sieve and task."""

    def __init__(self, sieve: Sieve, task: str | None) -> None:
        self.sieve = sieve
        self.task = task


def check_sieve(owner: str, sieve: object) -> None:
    """Raise :class:`ConfigError` unless ``sieve`` is None (the adapter builds a default
    ``Sieve()``) or a :class:`~promptsieve.Sieve`, at wrap/construction time: anything else
    (a ``SieveConfig``, a ``Gate``) would fail every request with an ``AttributeError``.
    ``owner`` names the call, e.g. ``"wrap_openai"``. Every adapter checks with this."""
    if sieve is None or isinstance(sieve, Sieve):
        return
    name = type(sieve).__name__
    from promptsieve._sieve_config import SieveConfig

    fix = (
        "pass promptsieve.Sieve(config) instead"
        if isinstance(sieve, SieveConfig)
        else "build one with promptsieve.Sieve(...), or pass None for a default one"
    )
    raise ConfigError(f"{owner}: sieve must be a promptsieve Sieve, not {name}; {fix}")


def check_task(owner: str, task: object) -> None:
    """Raise :class:`ConfigError` unless ``task`` is None or a non-empty string."""
    if task is not None and (not isinstance(task, str) or not task.strip()):
        raise ConfigError(f"{owner}: task must be a non-empty string, got {task!r}")


def sieve_of(client: object) -> Sieve | None:
    """The sieve ``client`` was patched with (None: not patched)."""
    state = getattr(client, STATE, None)
    return state.sieve if isinstance(state, PatchState) else None


def unpatch_client(client: object) -> None:
    """Drop what :func:`patch_copy` and the adapter's ``patch`` set on ``client`` itself."""
    for name in ("copy", "with_options", STATE):
        if name in vars(client):
            delattr(client, name)


def original(method: Callable[..., Any]) -> Callable[..., Any]:
    """The vendor's own method behind ``method`` (``method`` itself when not patched)."""
    return getattr(method, ORIGINAL, method)


def patch_copy(client: Any, repatch: Callable[[Any], None]) -> None:
    """Make ``client.copy``/``client.with_options`` return clients patched by ``repatch``."""
    copy = type(client).copy.__get__(client, type(client))

    @functools.wraps(copy)
    def wrapped_copy(*args: Any, **kwargs: Any) -> Any:
        new = copy(*args, **kwargs)
        repatch(new)
        return new

    client.copy = wrapped_copy
    client.with_options = wrapped_copy


def start_call(state: PatchState, conv: Conversion, send_variant: Any) -> Call[dict[str, Any]]:
    """``state.sieve.call`` for ``conv`` (no background comparison when not comparable)."""
    return state.sieve.call(
        conv.request,
        state.task,
        original=conv.body,
        rebuild=conv.rebuild,
        send_variant=send_variant if conv.comparable else None,
    )


def output_of(read: Reader, response: Any) -> TargetOutput:
    """The output ``read`` finds in ``response``; raises ``TypeError`` when there is none."""
    output = read(response)[0]
    if output is None:
        raise TypeError("the target's response carried no readable output")
    return output


def sync_create(
    create: Callable[..., Any],
    state: PatchState,
    convert: Callable[[tuple[Any, ...], dict[str, Any]], Conversion | None],
    variant_kwargs: Callable[[dict[str, Any]], dict[str, Any]],
    read: Reader,
    settle: Callable[[Call[dict[str, Any]], Any], None] | None = None,
) -> Callable[..., Any]:
    """``create`` wrapped to go through the sieve. ``convert(args, kwargs)`` (None: send
    untouched); ``variant_kwargs(body)``: the kwargs of a background send; ``settle(call,
    result)`` reads the live result (default: ``call.read(read, result)``)."""

    @functools.wraps(create)
    def patched(*args: Any, **kwargs: Any) -> Any:
        conv = convert(args, kwargs)
        if conv is None:
            return create(*args, **kwargs)

        def send_variant(prompt: Prompt) -> TargetOutput:
            return output_of(read, create(**variant_kwargs(conv.rebuild(prompt))))

        with start_call(state, conv, send_variant) as call:
            result = create(**call.payload)  # the target's own errors reach the caller
            if settle is None:
                call.read(read, result)
            else:
                settle(call, result)
        return result

    return patched


def async_create(
    create: Callable[..., Any],
    state: PatchState,
    convert: Callable[[tuple[Any, ...], dict[str, Any]], Conversion | None],
    variant_kwargs: Callable[[dict[str, Any]], dict[str, Any]],
    read: Reader,
    settle: Callable[[Call[dict[str, Any]], Any], None] | None = None,
) -> Callable[..., Any]:
    """:func:`sync_create` for an async ``create``."""

    @functools.wraps(create)
    async def patched(*args: Any, **kwargs: Any) -> Any:
        conv = convert(args, kwargs)
        if conv is None:
            return await create(*args, **kwargs)

        async def send_variant(prompt: Prompt) -> TargetOutput:
            return output_of(read, await create(**variant_kwargs(conv.rebuild(prompt))))

        async with start_call(state, conv, send_variant) as call:
            result = await create(**call.payload)
            if settle is None:
                call.read(read, result)
            else:
                settle(call, result)
        return result

    return patched
