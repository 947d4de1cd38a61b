"""promptsieve for the OpenAI Python SDK: ``client = wrap_openai(OpenAI())``.

The client stays the same object and type; ``chat.completions.create``/``parse`` (and the
``stream`` helper), ``beta.chat.completions.*``, ``completions.create`` and
``responses.create``/``parse``/``stream``, ``beta.responses.create`` (sync and async, raw and
streaming responses included) go through a :class:`promptsieve.Sieve` (``sieve.call``), which
compresses only for tasks whose verdict passed. Surfaces not covered are listed in the README.
"""

from __future__ import annotations

from typing import TypeVar

from promptsieve._errors import ConfigError, missing_extra

try:
    from openai import AsyncOpenAI, OpenAI
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing_extra("openai", "openai") from exc

from promptsieve import Sieve
from promptsieve._patching import check_sieve, check_task
from promptsieve_openai._wrap import patch, sieve_of, unpatch

__all__ = ["sieve_of", "unwrap_openai", "wrap_openai"]

ClientT = TypeVar("ClientT", bound=OpenAI | AsyncOpenAI)


def wrap_openai(client: ClientT, sieve: Sieve | None = None, *, task: str | None = None) -> ClientT:
    """Route the client's ``create`` calls through ``sieve``; returns the same client.

    ``task`` names the task of this client's requests unless ``with promptsieve.task(...)``
    names another. Wrapping again replaces the sieve; copies made with ``with_options`` or
    ``copy`` are wrapped with the same sieve. ``sieve``: a :class:`promptsieve.Sieve`, or None
    for a default ``Sieve()``. Raises :class:`ConfigError` for a client that is not
    ``openai.OpenAI``/``AsyncOpenAI``, a ``sieve`` that is not a ``Sieve`` (e.g. a
    ``SieveConfig``) or an empty task name.
    """
    if not isinstance(client, (OpenAI, AsyncOpenAI)):
        raise ConfigError(
            f"wrap_openai expects openai.OpenAI or openai.AsyncOpenAI, not {type(client).__name__}"
        )
    check_task("wrap_openai", task)
    check_sieve("wrap_openai", sieve)
    patch(client, sieve if sieve is not None else Sieve(), task)
    return client


def unwrap_openai(client: ClientT) -> ClientT:
    """Undo :func:`wrap_openai` on this client (copies made earlier stay wrapped)."""
    unpatch(client)
    return client
