"""promptsieve for LiteLLM: a proxy (gateway) hook and an SDK callback.

Proxy ``config.yaml``::

    litellm_settings:
      callbacks: promptsieve_litellm.proxy_handler

``proxy_handler`` is built on first access from the environment (:func:`handler_from_env`):
``PROMPTSIEVE_STORE`` (``redis://…`` so that every replica shares verdicts, or a SQLite
path), ``PROMPTSIEVE_TASK``, ``PROMPTSIEVE_TAU``, ``PROMPTSIEVE_DELTA``, ``PROMPTSIEVE_RATIOS``
(comma-separated ladder), ``PROMPTSIEVE_GUARD=0`` (no instance guard), and
``PROMPTSIEVE_RATIO`` (a fixed ratio without screening: an explicit opt-out);
``PROMPTSIEVE_SAVINGS`` (the savings ledger, a SQLite file or ``redis://`` URL, read by
``promptsieve report``; written every ``PROMPTSIEVE_SAVINGS_FLUSH_S`` seconds, default 10) and
``PROMPTSIEVE_OTEL=1`` (OpenTelemetry spans and metrics) attach observers. SDK::

    import litellm
    from promptsieve_litellm import PromptSieveLiteLLM
    litellm.callbacks = [PromptSieveLiteLLM(sieve)]   # litellm.acompletion(...) now goes through it
"""

from __future__ import annotations

import os
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


def handler_from_env() -> PromptSieveLiteLLM:
    """A handler configured from ``PROMPTSIEVE_*`` variables (see the module doc).

    Raises :class:`ConfigError` for a malformed variable.
    """
    store_url = os.environ.get("PROMPTSIEVE_STORE", "").strip()
    task = os.environ.get("PROMPTSIEVE_TASK", "").strip() or None
    guard = os.environ.get("PROMPTSIEVE_GUARD", "1").strip().lower() not in ("0", "false", "no")
    ratio = _float("PROMPTSIEVE_RATIO")
    if ratio is not None:
        fixed = SieveConfig(verify=False, ratio=ratio, guard=guard)
        return _observed(PromptSieveLiteLLM(Sieve(fixed), task=task))
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
    if store_url.startswith(("redis://", "rediss://", "unix://")):
        store: Any = RedisStore(store_url)
    else:
        store = SQLiteStore(store_url or None)
    sieve = Sieve(SieveConfig(gate=config, guard=guard), gate=Gate(store, config))
    return _observed(PromptSieveLiteLLM(sieve, task=task))


def _observed(handler: PromptSieveLiteLLM) -> PromptSieveLiteLLM:
    """Attach the observers the environment asks for (savings ledger, OpenTelemetry)."""
    savings = os.environ.get("PROMPTSIEVE_SAVINGS", "").strip()
    if savings:
        every = _float("PROMPTSIEVE_SAVINGS_FLUSH_S")
        ledger = SavingsLedger(savings, flush_interval_s=10.0 if every is None else every)
        handler.sieve.add_observer(ledger)
    if os.environ.get("PROMPTSIEVE_OTEL", "").strip().lower() in ("1", "true", "yes"):
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
