"""Verdict keys from fingerprints and settings: no Sieve, no proxy load.

A verdict is about (task, target model, proxy fingerprint, settings). The settings part covers
only what changes the *meaning* of the test: the metric, the instance guard, τ, δ, the ladder
(and how its rungs share δ, when not in fixed sequence) and, in labelled mode, the mode and
its margin. Rates, budgets and TTLs do not, so an offline
``promptsieve screen --store`` and a live sieve with the same test find the same verdict.

Agreement-mode keys are byte-for-byte the ones earlier releases computed in
``SieveConfig.settings_key``, so existing stores keep their verdicts.
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
    screened again, never wrongly reused). Anything else raises ConfigError."""
    if metric is None or isinstance(metric, str):
        return metric
    if isinstance(metric, functools.partial):
        keywords = dict(sorted(metric.keywords.items()))
        return f"{metric_name(metric.func)}(*{metric.args!r}, **{keywords!r})"
    if callable(metric):
        owner = metric if hasattr(metric, "__qualname__") else type(metric)
        return f"{owner.__module__}.{owner.__qualname__}"
    raise ConfigError(f"metric must be a name or a callable, got {type(metric).__name__}")


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
