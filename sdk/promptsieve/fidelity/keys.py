"""Verdict keys from fingerprints and settings: no Sieve, no proxy load.

A verdict is about (task, target model, proxy fingerprint, settings). The settings part covers
only what changes the *meaning* of the test: the metric, the instance guard, τ, δ, the ladder
(and how its rungs share δ, when not in fixed sequence) and, in labelled mode, the mode and
its margin. Rates, budgets and TTLs do not, so an offline
``promptsieve screen --store`` and a live sieve with the same test find the same verdict.

Agreement-mode keys are byte-for-byte the ones earlier releases computed in
``SieveConfig.settings_key``, so existing stores keep their verdicts; the one exception is a
metric that is a lambda or a nested function, whose name alone was shared by every such
function of its module (it now carries a digest of its code, see :func:`metric_name`), so
such a task is screened once more.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from promptsieve._errors import ConfigError
from promptsieve.fidelity.gate import GateConfig
from promptsieve.fidelity.store import VerdictKey

__all__ = ["metric_name", "settings_key", "verdict_key"]


def metric_name(metric: str | Callable[..., Any] | None) -> str | None:
    """The stable name of a metric spec: the spec string, ``module.qualname`` of a function
    (of its class, for a callable object), or None (auto). A ``functools.partial`` adds its
    arguments' reprs, so two partials of one function are two metrics (an argument whose
    repr holds a memory address then makes a key no other process shares: the verdict is
    screened again, never wrongly reused). A lambda or a nested function (its qualname
    holds ``<lambda>`` or ``<locals>``, so it names no one function) adds a digest of its
    code and of the values it closes over, so editing it, or two of them in one module, never
    shares a verdict. Anything else raises ConfigError."""
    if metric is None or isinstance(metric, str):
        return metric
    if isinstance(metric, functools.partial):
        keywords = dict(sorted(metric.keywords.items()))
        return f"{metric_name(metric.func)}(*{metric.args!r}, **{keywords!r})"
    if callable(metric):
        owner = metric if hasattr(metric, "__qualname__") else type(metric)
        name = f"{owner.__module__}.{owner.__qualname__}"
        code = getattr(metric, "__code__", None)
        if "<" in owner.__qualname__ and code is not None:
            name += f"#{_code_digest(code, getattr(metric, '__closure__', None))}"
        return name
    raise ConfigError(f"metric must be a name or a callable, got {type(metric).__name__}")


_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def _code_digest(code: Any, closure: tuple[Any, ...] | None) -> str:
    """12 hex characters over a function's bytecode, constants, names and closed-over
    values: a plain value (number, string, or a tuple, list, set or dict of them) by its
    repr, a function by its name and code, anything else (a model, a client) by its type,
    so that a key stays the same across processes."""
    parts: list[object] = [code.co_code, code.co_names, code.co_varnames]
    parts += [_code_digest(c, None) if hasattr(c, "co_code") else c for c in code.co_consts]
    for cell in closure or ():
        try:
            parts.append(_closed_over(cell.cell_contents))
        except ValueError:  # an empty cell (a name assigned later)
            parts.append(None)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def _closed_over(value: Any) -> object:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (tuple, list, set, frozenset)):
        items = [_closed_over(v) for v in value]
        return (
            type(value).__name__,
            sorted(map(repr, items)) if isinstance(value, (set, frozenset)) else items,
        )
    if isinstance(value, dict):
        return (
            "dict",
            sorted((repr(_closed_over(k)), repr(_closed_over(v))) for k, v in value.items()),
        )
    code = getattr(value, "__code__", None)
    if code is not None and hasattr(code, "co_code"):  # a function: its code, not its closure
        return (getattr(value, "__qualname__", ""), _code_digest(code, None))
    return f"{type(value).__module__}.{type(value).__qualname__}"


def settings_key(
    gate: GateConfig | None = None,
    *,
    metric: str | Callable[..., Any] | None = None,
    guard: bool = True,
    guard_threshold: float | None = None,
) -> str:
    """The settings part of a verdict key (16 hex characters).

    ``gate``: τ, δ, ladder, ladder test and mode (default ``GateConfig()``);
    ``guard_threshold`` None means the gate's. Raises ConfigError for a metric that is
    neither a name nor callable.
    """
    gate = gate or GateConfig()
    threshold = gate.guard_threshold if guard_threshold is None else guard_threshold
    fields: tuple[Any, ...] = (
        metric_name(metric),
        guard,
        threshold,
        gate.tau,
        gate.delta,
        tuple(gate.ratios),
    )
    if gate.mode != "agreement":  # agreement keys stay what they always were
        fields = (*fields, gate.mode, gate.epsilon, gate.rho)
    if gate.ladder_test != "fixed_sequence":  # fixed-sequence keys stay what they were
        fields = (*fields, gate.ladder_test)
    return hashlib.sha256(repr(fields).encode()).hexdigest()[:16]


def verdict_key(
    task: str,
    target_model: str,
    proxy_fingerprint: str,
    gate: GateConfig | None = None,
    *,
    metric: str | Callable[..., Any] | None = None,
    guard: bool = True,
    guard_threshold: float | None = None,
) -> VerdictKey:
    """The key a gate keeps ``task``'s verdict under, for ``target_model`` and a compressor
    whose fingerprint is ``proxy_fingerprint`` (``Compressor.fingerprint``). Raises
    ConfigError on an empty task or model, or a bad metric spec."""
    if not task.strip() or not target_model.strip():
        raise ConfigError("a verdict key needs a non-empty task and target model")
    return VerdictKey(
        task=task,
        target_model=target_model,
        proxy_fingerprint=proxy_fingerprint,
        settings=settings_key(gate, metric=metric, guard=guard, guard_threshold=guard_threshold),
    )
