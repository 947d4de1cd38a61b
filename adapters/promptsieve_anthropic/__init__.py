"""promptsieve for Anthropic's Python SDK: ``client = wrap_anthropic(Anthropic())``.

The client stays the same object and type; ``messages.create`` (``stream=True`` included)
and ``messages.stream`` (sync and ``AsyncAnthropic``) go through a :class:`promptsieve.Sieve`,
which compresses only user/assistant text, and only for tasks whose verdict passed. The
``system`` prompt, ``tools``, ``tool_use``/``tool_result`` blocks, images and documents go out
as given; usage is read from the response.
"""

from __future__ import annotations

from typing import TypeVar

from promptsieve._errors import ConfigError, missing_extra

try:
    from anthropic import Anthropic, AsyncAnthropic
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing_extra("anthropic", "anthropic") from exc

from promptsieve import Sieve
from promptsieve._patching import check_sieve, check_task
from promptsieve_anthropic._convert import AnthropicRequest, from_anthropic
from promptsieve_anthropic._wrap import patch, sieve_of, unpatch

__all__ = ["AnthropicRequest", "from_anthropic", "sieve_of", "unwrap_anthropic", "wrap_anthropic"]

ClientT = TypeVar("ClientT", bound=Anthropic | AsyncAnthropic)


def wrap_anthropic(
    client: ClientT, sieve: Sieve | None = None, *, task: str | None = None
) -> ClientT:
    """Route the client's ``messages.create``/``messages.stream`` through ``sieve``; returns
    the same client.

    ``task`` names the task of this client's requests unless ``with promptsieve.task(...)``
    names another. Wrapping again replaces the sieve; copies made with ``with_options`` or
    ``copy`` are wrapped with the same sieve. ``sieve``: a :class:`promptsieve.Sieve`, or None
    for a default ``Sieve()``. Raises :class:`ConfigError` for a client that is not
    ``anthropic.Anthropic``/``AsyncAnthropic``, a ``sieve`` that is not a ``Sieve`` (e.g. a
    ``SieveConfig``) or an empty task name.
    """
    if not isinstance(client, (Anthropic, AsyncAnthropic)):
        raise ConfigError(
            "wrap_anthropic expects anthropic.Anthropic or anthropic.AsyncAnthropic, "
            f"not {type(client).__name__}"
        )
    check_task("wrap_anthropic", task)
    check_sieve("wrap_anthropic", sieve)
    patch(client, sieve if sieve is not None else Sieve(), task)
    return client


def unwrap_anthropic(client: ClientT) -> ClientT:
    """Undo :func:`wrap_anthropic` on this client (copies made earlier stay wrapped)."""
    unpatch(client)
    return client
