"""promptsieve for LiteLLM: a proxy (gateway) hook and an SDK callback.

Proxy ``config.yaml``::

    litellm_settings:
      callbacks: promptsieve_litellm.proxy_handler

``proxy_handler`` is built on first access from the environment (:func:`handler_from_env`):
``PROMPTSIEVE_STORE`` (``redis://…``, ``rediss://…`` or ``unix://…`` so that every replica
shares verdicts, or a SQLite path), ``PROMPTSIEVE_TASK``, ``PROMPTSIEVE_TAU``,
``PROMPTSIEVE_DELTA``, ``PROMPTSIEVE_RATIOS`` (comma-separated ladder), ``PROMPTSIEVE_GUARD=0``
(no instance guard), and ``PROMPTSIEVE_RATIO`` (a fixed ratio without screening: an explicit
opt-out); ``PROMPTSIEVE_SAVINGS`` (the savings ledger, a SQLite file or ``redis://`` URL, read
by ``promptsieve report``; written every ``PROMPTSIEVE_SAVINGS_FLUSH_S`` seconds, default 10)
and ``PROMPTSIEVE_OTEL=1`` (OpenTelemetry spans and metrics) attach observers. Switches
(``PROMPTSIEVE_GUARD``, ``PROMPTSIEVE_OTEL``) take 1/0, true/false, yes/no or on/off. SDK::

    import litellm
    from promptsieve_litellm import PromptSieveLiteLLM
    litellm.callbacks = [PromptSieveLiteLLM(sieve)]   # litellm.acompletion(...) now goes through it
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from promptsieve._errors import ConfigError, missing_extra

try:
    import litellm  # noqa: F401 - checked here so the message names the extra
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing_extra("litellm", "litellm") from exc

from promptsieve import (
    Gate,
    GateConfig,
    RedisStore,
    SavingsLedger,
    Sieve,
    SieveConfig,
    SQLiteStore,
)
from promptsieve.fidelity.store import (
    check_sqlite_file,
    check_store_location,
    is_redis_url,
)
from promptsieve_litellm._hook import PromptSieveLiteLLM, read_response

__all__ = ["PromptSieveLiteLLM", "handler_from_env", "read_response"]

_handler: PromptSieveLiteLLM | None = None


def _float(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _switch(name: str, default: bool) -> bool:
    """The on/off variable ``name`` (``default`` when unset or empty)."""
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{name} must be one of 1/0, true/false, yes/no, on/off, got {raw!r}")


def _location(name: str) -> str:
    """The store variable ``name``: empty, a Redis URL, or a SQLite file path that can be one."""
    raw = os.environ.get(name, "").strip()
    if raw and not is_redis_url(raw):
        check_store_location(name, raw, redis=True)  # another scheme:// is not a file name
        check_sqlite_file(name, raw)
    return raw


def handler_from_env() -> PromptSieveLiteLLM:
    """A handler configured from ``PROMPTSIEVE_*`` variables (see the module doc).

    Raises :class:`ConfigError` for a malformed variable: a number that does not parse (or
    a non-finite or negative ``PROMPTSIEVE_SAVINGS_FLUSH_S``), a switch that is not
    1/0/true/false/yes/no/on/off, or a store or ledger that is neither a usable SQLite file
    path nor a ``redis://``, ``rediss://`` or ``unix://`` URL.
    """
    store_url = _location("PROMPTSIEVE_STORE")
    task = os.environ.get("PROMPTSIEVE_TASK", "").strip() or None
    guard = _switch("PROMPTSIEVE_GUARD", True)
    observers = _Observers.from_env()  # checked before anything is built
    ratio = _float("PROMPTSIEVE_RATIO")
    if ratio is not None:
        fixed = SieveConfig(verify=False, ratio=ratio, guard=guard)
        return observers.attach(PromptSieveLiteLLM(Sieve(fixed), task=task))
    gate_kw: dict[str, Any] = {}
    for name, key in (("PROMPTSIEVE_TAU", "tau"), ("PROMPTSIEVE_DELTA", "delta")):
        value = _float(name)
        if value is not None:
            gate_kw[key] = value
    ratios = os.environ.get("PROMPTSIEVE_RATIOS", "").strip()
    if ratios:
        try:
            gate_kw["ratios"] = tuple(float(r) for r in ratios.split(","))
        except ValueError as exc:
            raise ConfigError(
                f"PROMPTSIEVE_RATIOS must be comma-separated numbers: {ratios!r}"
            ) from exc
    config = GateConfig(**gate_kw)
    if is_redis_url(store_url):
        store: Any = RedisStore(store_url)
    else:
        store = SQLiteStore(store_url or None)
    sieve = Sieve(SieveConfig(gate=config, guard=guard), gate=Gate(store, config))
    return observers.attach(PromptSieveLiteLLM(sieve, task=task))


@dataclass(frozen=True)
class _Observers:
    """The observers the environment asks for (savings ledger, OpenTelemetry)."""

    savings: str
    flush_s: float
    otel: bool

    @classmethod
    def from_env(cls) -> _Observers:
        savings = _location("PROMPTSIEVE_SAVINGS")
        every = _float("PROMPTSIEVE_SAVINGS_FLUSH_S")
        if every is not None and not (every >= 0 and math.isfinite(every)):
            raise ConfigError(  # 0: the ledger writes only at flush, close and exit
                f"PROMPTSIEVE_SAVINGS_FLUSH_S must be finite seconds >= 0, got {every!r}"
            )
        return cls(savings, 10.0 if every is None else every, _switch("PROMPTSIEVE_OTEL", False))

    def attach(self, handler: PromptSieveLiteLLM) -> PromptSieveLiteLLM:
        if self.savings:
            handler.sieve.add_observer(SavingsLedger(self.savings, flush_interval_s=self.flush_s))
        if self.otel:
            from promptsieve.otel import OTelObserver

            handler.sieve.add_observer(OTelObserver())
        return handler


def __getattr__(name: str) -> Any:
    """``proxy_handler``: the handler LiteLLM's config loads, built once on first access."""
    global _handler
    if name == "proxy_handler":
        if _handler is None:
            _handler = handler_from_env()
        return _handler
    raise AttributeError(name)
