"""Shapley attribution of demonstrations on the proxy, cached on disk per (demonstration
set, validation set, format, method, proxy fingerprint, ``DEMOS_VERSION``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from promptsieve import _shapley
from promptsieve._demo_scorers import HeadDemoScorer, LMDemoScorer
from promptsieve._demo_types import (
    DEMOS_VERSION,
    CoalitionScorer,
    DemoAttribution,
    DemoAttributionConfig,
    DemoFormat,
    Demonstration,
    ValidationExample,
    checked_inputs,
)
from promptsieve._errors import ConfigError

__all__ = ["attribute_demos"]

log = logging.getLogger(__name__)


def _key(
    demos: Sequence[Demonstration],
    validation: Sequence[ValidationExample],
    fmt: DemoFormat,
    method: str,
    config: DemoAttributionConfig,
    proxy: str,
) -> str:
    blob = {
        "version": DEMOS_VERSION,
        "proxy": proxy,
        "method": method,
        "samples": config.samples if method == "kernel" else None,
        "seed": config.seed if method == "kernel" else None,
        "format": asdict(fmt),
        "demos": [[d.input, d.output] for d in demos],
        "validation": [[v.input, v.answer] for v in validation],
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:32]


def _cache_dir(config: DemoAttributionConfig) -> Path:
    if config.cache_dir is not None:
        return Path(config.cache_dir)
    from promptsieve._paths import cache_dir

    return cache_dir() / "demos"


def _read_cache(path: Path, proxy: str) -> DemoAttribution | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):  # valid JSON of another shape: recompute
        return None
    # never reuse another proxy's or version's values, even under a colliding file name
    if data.get("version") != DEMOS_VERSION or data.get("proxy") != proxy:
        log.info("ignoring demo attribution cache %s (other proxy or version)", path.name)
        return None
    try:
        return DemoAttribution(
            values=tuple(float(v) for v in data["values"]),
            empty_value=float(data["empty_value"]),
            full_value=float(data["full_value"]),
            method=data["method"],
            evaluations=int(data["evaluations"]),
            proxy=proxy,
            key=str(data["key"]),
            seconds=float(data["seconds"]),
            tokens=0,
            cached=True,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _write_cache(path: Path, attr: DemoAttribution) -> None:
    data = asdict(attr)
    data["version"] = DEMOS_VERSION
    data.pop("cached", None)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as exc:  # a read-only cache only costs a recomputation
        log.warning("cannot write demo attribution cache %s: %s", path, exc)


def attribute_demos(
    demos: Sequence[Demonstration],
    validation: Sequence[ValidationExample],
    *,
    fmt: DemoFormat | None = None,
    config: DemoAttributionConfig | None = None,
    scorer: CoalitionScorer | HeadDemoScorer | None = None,
) -> DemoAttribution:
    """Each demonstration's Shapley value on the proxy (see the module docstring).

    Args:
        demos: the task's demonstrations, in prompt order.
        validation: validation requests with answers (gold or the target's own); the first
            ``config.max_validation`` are used.
        fmt: the prompt layout (default :class:`DemoFormat`).
        config: method, Kernel SHAP samples, seed, cache.
        scorer: the value function; None = :class:`LMDemoScorer` (the ONNX LM proxy).

    Returns a :class:`DemoAttribution`; method "none" with zero values when fewer than two
    demonstrations are given (nothing to attribute).

    Raises:
        ConfigError: no validation request, an empty answer, or answers the proxy cannot
            score (a non-finite log-probability; the message names which), or the LM proxy
            cannot be loaded.
    """
    fmt = fmt or DemoFormat()
    config = config or DemoAttributionConfig()
    demos_t, validation_t = checked_inputs("attribution", demos, validation)
    demos = list(demos_t)
    n = len(demos)
    if n < 2:
        return DemoAttribution((0.0,) * n, 0.0, 0.0, "none", 0, "", "", 0.0, 0)
    validation = list(validation_t)[: config.max_validation]
    if scorer is None:
        scorer = _default_scorer(config)
    t0 = time.perf_counter()
    if isinstance(scorer, HeadDemoScorer):
        vals = scorer.scores(demos, validation, fmt)
        key = _key(demos, validation, fmt, "head", config, scorer.fingerprint)
        return DemoAttribution(
            tuple(float(v) for v in vals), 0.0, 0.0, "head", 0, scorer.fingerprint, key,
            time.perf_counter() - t0, 0,
        )  # fmt: skip
    method = config.resolved_method(n)
    proxy = scorer.fingerprint
    key = _key(demos, validation, fmt, method, config, proxy)
    path = _cache_dir(config) / f"{key}.json"
    if config.cache:
        hit = _read_cache(path, proxy)
        if hit is not None:
            return hit
    needed = _shapley.needed(n, method, config.samples, config.seed)
    tokens0 = int(getattr(scorer, "tokens_run", 0))
    if isinstance(scorer, LMDemoScorer):
        mat = scorer.matrix(demos, validation, fmt, needed)
        _check_scorable(mat, validation)
        vals = mat.mean(axis=1)
    else:
        vals = np.asarray(scorer.values(demos, validation, fmt, needed), dtype=float)
        if not np.all(np.isfinite(vals)):
            raise ConfigError("the scorer returned non-finite values for the validation answers")
    table = _shapley.as_table(needed, vals)
    if method == "exact":
        phi = _shapley.exact_shapley(n, table)
    else:
        phi = _shapley.kernel_shap(n, table, config.samples, config.seed)
    attr = DemoAttribution(
        values=tuple(float(v) for v in phi),
        empty_value=table[()],
        full_value=table[tuple(range(n))],
        method=method,
        evaluations=len(needed),
        proxy=proxy,
        key=key,
        seconds=time.perf_counter() - t0,
        tokens=int(getattr(scorer, "tokens_run", 0)) - tokens0,
    )
    if config.cache:
        _write_cache(path, attr)
    log.info(
        "attributed %d demonstrations (%s, %d coalitions) in %.1f s",
        n, method, len(needed), attr.seconds,
    )  # fmt: skip
    return attr


def _default_scorer(config: DemoAttributionConfig) -> CoalitionScorer | HeadDemoScorer:
    lm = LMDemoScorer(config=config.lm)
    try:
        _ = lm.lm  # load (or export) now, so that a missing LM proxy is known here
    except ConfigError as exc:
        if not config.fallback:
            raise
        log.warning("no LM proxy (%s); ranking demonstrations with the MiniLM head", exc)
        return HeadDemoScorer()
    return lm


def _check_scorable(mat: np.ndarray, validation: Sequence[ValidationExample]) -> None:
    bad = sorted({int(j) for j in np.argwhere(~np.isfinite(mat))[:, 1]})
    if bad:
        raise ConfigError(
            f"the proxy cannot score the answers of validation requests {bad} (0-based; "
            "non-finite log-probability)"
        )
