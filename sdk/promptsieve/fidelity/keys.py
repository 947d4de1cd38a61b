"""Verdict keys from fingerprints and settings: no Sieve, no proxy load.

A verdict is about (task, target model, proxy fingerprint, settings). The settings part covers
only what changes the *meaning* of the test: the metric, the instance guard, τ, δ, the ladder
(and how its rungs share δ, when not in fixed sequence) and, in labelled mode, the mode and
its margin. Rates, budgets and TTLs do not, so an offline
``promptsieve screen --store`` and a live sieve with the same test find the same verdict.

Agreement-mode keys are byte-for-byte the ones earlier releases computed in
``SieveConfig.settings_key``, so existing stores keep their verdicts. Two exceptions are
screened once more: a metric that is a lambda or a nested function, whose name alone was
shared by every such function of its module (it now carries a digest of its code, see
:func:`metric_name`), and a ladder spelt with an int among floats (``(1, 0.5)``, now stored
as ``(1.0, 0.5)``, the key of every other spelling). A live ``target_judge`` is keyed
"judge", as the offline ``metric="judge"`` is (before, ``promptsieve.fidelity.judge.judge``),
so its tasks are screened once more and offline judge verdicts then apply.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import types
import weakref
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
    code, defaults and closed-over values (:func:`_describe`), so editing it, or two of them
    in one module, never shares a verdict; the digest is computed once per function object.
    The target as judge (:class:`~promptsieve.fidelity.judge.TargetJudge`) is "judge", as the
    offline ``metric="judge"`` is, so ``promptsieve screen --metric judge --store`` and a live
    ``SieveConfig(metric=target_judge(complete))`` share verdicts. Anything else raises
    ConfigError."""
    from promptsieve.fidelity.judge import TargetJudge

    if metric is None or isinstance(metric, str):
        return metric
    if isinstance(metric, TargetJudge):
        return "judge"
    if isinstance(metric, functools.partial):
        keywords = dict(sorted(metric.keywords.items()))
        return f"{metric_name(metric.func)}(*{metric.args!r}, **{keywords!r})"
    if callable(metric):
        owner = metric if hasattr(metric, "__qualname__") else type(metric)
        name = f"{owner.__module__}.{owner.__qualname__}"
        if "<" in owner.__qualname__:
            name += f"#{_digest(metric)}"
        return name
    raise ConfigError(f"metric must be a name or a callable, got {type(metric).__name__}")


_PLAIN = (type(None), bool, int, float, complex, str, bytes)
_DEPTH = 5  # how deep closed-over containers and functions are described
#: function object -> its digest: computed once, so a closed-over cache that fills up does
#: not change the key, and the request path does not describe large closures again
_DIGESTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _digest(fn: Any) -> str:
    with contextlib.suppress(TypeError):  # not weakly referenceable, or unhashable
        if fn in _DIGESTS:
            return _DIGESTS[fn]
    digest = hashlib.sha256(repr(_describe(fn, _DEPTH)).encode()).hexdigest()[:12]
    with contextlib.suppress(TypeError):
        _DIGESTS[fn] = digest
    return digest


def _describe(value: Any, depth: int) -> object:
    """A value's description for a metric digest, the same in every process: a plain value
    (and a tuple, list, set, frozenset or dict of them) by value, sets in sorted order; a
    function by its code, defaults and closed-over values; anything whose repr holds no
    memory address (a dataclass, a compiled regex, an enum member, a builtin) by its repr;
    anything else (a model, a client) by its type. ``depth`` bounds the nesting."""
    if isinstance(value, _PLAIN):
        return value
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if depth <= 0:
        return kind
    d = depth - 1
    if isinstance(value, (set, frozenset)):
        return (kind, sorted(repr(_describe(v, d)) for v in value))
    if isinstance(value, (tuple, list)):
        return (kind, [_describe(v, d) for v in value])
    if isinstance(value, dict):
        return (
            kind,
            sorted((repr(_describe(k, d)), repr(_describe(v, d))) for k, v in value.items()),
        )
    if isinstance(value, types.CodeType):
        consts = [_describe(c, d) for c in value.co_consts]
        return (kind, value.co_code, value.co_names, value.co_varnames, consts)
    if isinstance(value, functools.partial):
        return (
            kind,
            _describe(value.func, d),
            _describe(value.args, d),
            _describe(value.keywords, d),
        )
    wrapped = getattr(value, "__wrapped__", None)  # functools.lru_cache, functools.wraps
    if wrapped is not None and wrapped is not value:
        return (kind, _describe(wrapped, d))
    if isinstance(value, types.FunctionType):
        cells: list[object] = []
        for cell in value.__closure__ or ():
            try:
                cells.append(_describe(cell.cell_contents, d))
            except ValueError:  # an empty cell (a name assigned later)
                cells.append(None)
        parts = (value.__code__, value.__defaults__, value.__kwdefaults__)
        return (value.__qualname__, *(_describe(p, d) for p in parts), cells)
    if isinstance(value, types.MethodType):
        return (kind, _describe(value.__func__, d), _describe(value.__self__, d))
    if isinstance(value, (type, types.ModuleType)):
        return (
            kind,
            getattr(value, "__module__", ""),
            value.__qualname__ if isinstance(value, type) else value.__name__,
        )
    try:
        text = repr(value)
    except Exception:  # a broken __repr__: the type still names it
        return kind
    if " at 0x" not in text:
        return (kind, text)
    call = vars(type(value)).get("__call__")
    if "<" in type(value).__qualname__ and isinstance(call, types.FunctionType):
        return (kind, _describe(call, d))  # a callable class defined in a function
    return kind


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
