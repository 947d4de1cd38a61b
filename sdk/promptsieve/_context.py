"""The current task name, carried in a ContextVar.

A task groups requests that share a fidelity verdict. A ContextVar follows the caller into
``asyncio`` tasks automatically; threads the sieve starts itself are given a copy of the
context (``contextvars.copy_context().run``), so ``with task("faq"):`` holds for them too.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

__all__ = ["current_task", "task"]

_F = TypeVar("_F", bound=Callable[..., Any])

_TASK: contextvars.ContextVar[str | None] = contextvars.ContextVar("promptsieve_task", default=None)


def current_task() -> str | None:
    """The innermost task name set with :func:`task`, or ``None``."""
    return _TASK.get()


class task:
    """Name the task of every request made inside: ``with task("faq"):`` or ``@task("faq")``.

    Nesting works (the innermost name wins) and the previous name is restored on exit, even
    when the body raises. As a decorator it wraps sync and coroutine functions, setting the
    name for each call.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip():
            from promptsieve._errors import ConfigError

            raise ConfigError("task name must be a non-empty string")
        self.name = name
        # Reset tokens live in the context too, so one instance can be entered from many
        # threads or asyncio tasks at once without mixing up their exits.
        self._tokens: contextvars.ContextVar[tuple[contextvars.Token[str | None], ...]] = (
            contextvars.ContextVar(f"promptsieve_task_tokens_{id(self)}", default=())
        )

    def __enter__(self) -> str:
        self._tokens.set((*self._tokens.get(), _TASK.set(self.name)))
        return self.name

    def __exit__(self, *exc: object) -> None:
        tokens = self._tokens.get()
        _TASK.reset(tokens[-1])
        self._tokens.set(tokens[:-1])

    async def __aenter__(self) -> str:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()

    def __call__(self, func: _F) -> _F:
        name = self.name
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _scoped(name):
                    return await func(*args, **kwargs)

            return cast(_F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _scoped(name):
                return func(*args, **kwargs)

        return cast(_F, wrapper)


@contextmanager
def _scoped(name: str) -> Iterator[None]:
    token = _TASK.set(name)
    try:
        yield
    finally:
        _TASK.reset(token)
