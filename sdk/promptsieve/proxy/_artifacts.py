"""Every proxy artifact ``promptsieve export`` builds, and the build itself.

A fleet builds the artifacts once (in an image build step, with ``promptsieve[export]``)::

    promptsieve export --out /opt/promptsieve-proxy

and runs with ``PROMPTSIEVE_PROXY_DIR=/opt/promptsieve-proxy`` (or
``ProxyConfig(proxy_dir=...)``) on an install without torch, transformers or the weights
package. Without ``--out`` the artifacts go to the export cache the request path reads anyway.

To add an artifact (the LM proxy, ...), append one :class:`Artifact` line to
:data:`ARTIFACTS`: its ``build`` names a ``"module:function"`` with the signature
``function(out: Path, config: ProxyConfig) -> Path`` that builds the artifact under ``out``
(idempotently: a second call finds it and returns at once) and returns its folder. The
module is imported only when that artifact is built, so this table costs nothing to import.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from promptsieve._errors import ConfigError
from promptsieve.proxy._export import default_model_dir, ensure_export, ensure_scorer_export
from promptsieve.proxy._runtime import ProxyConfig, _cache_dir, default_head_path

__all__ = ["ARTIFACTS", "Artifact", "Built", "build_encoder", "build_scorer", "export_all"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """One buildable proxy artifact. ``build``: ``"module:function"`` (see module doc)."""

    name: str
    build: str
    description: str


@dataclass(frozen=True)
class Built:
    """What one build produced: the artifact, its folder, whether it was built just now."""

    name: str
    folder: Path
    built: bool
    seconds: float


#: Built in this order by ``promptsieve export``; append a line to add an artifact.
ARTIFACTS: list[Artifact] = [
    Artifact(
        "encoder",
        "promptsieve.proxy._artifacts:build_encoder",
        "all-MiniLM-L6-v2 encoder graph (embeddings, attribution, sentence scorer)",
    ),
    Artifact(
        "scorer",
        "promptsieve.proxy._artifacts:build_scorer",
        "truncated encoder + query head graph (the default head scorer)",
    ),
    Artifact(
        "relevance",
        "promptsieve.proxy._relevance_export:build_relevance",
        "truncated encoder + relevance head graph (question-aware coarse-to-fine scorer)",
    ),
]


def _weights(config: ProxyConfig) -> Path:
    return Path(config.model_dir) if config.model_dir is not None else default_model_dir()


def build_encoder(out: Path, config: ProxyConfig) -> Path:
    """Export the full encoder graph (with ``config.head``) into ``out``; returns its folder."""
    folder, _, _ = ensure_export(_weights(config), out, config.head, config.export_settings())
    return folder


def build_scorer(out: Path, config: ProxyConfig) -> Path:
    """Export the scorer graph (``config.scorer_head`` or the default head) into ``out``."""
    head = Path(config.scorer_head or default_head_path())
    if not head.is_file():
        raise ConfigError(f"scorer head not found: {head}")
    folder, _, _ = ensure_scorer_export(
        _weights(config), out, head, config.export_settings(), int8=config.scorer_int8
    )
    return folder


def _resolve(target: str) -> Callable[[Path, ProxyConfig], Path]:
    module, _, name = target.partition(":")
    fn: Callable[[Path, ProxyConfig], Path] = getattr(importlib.import_module(module), name)
    return fn


def export_all(
    out: Path | None = None,
    config: ProxyConfig | None = None,
    *,
    only: Sequence[str] | None = None,
) -> list[Built]:
    """Build every artifact of :data:`ARTIFACTS` (or those named in ``only``) into ``out``.

    ``out``: a folder to point ``PROMPTSIEVE_PROXY_DIR`` at; None: the export cache.
    ``config``: the settings the request path will use (fp16, int8, heads must match).
    Builds that find their artifact already there return at once (``built=False``).

    Raises :class:`ConfigError` for an unknown name or when the ``export`` extra (torch,
    transformers, the weights package) is missing.
    """
    config = config or ProxyConfig()
    names = [a.name for a in ARTIFACTS]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ConfigError(f"unknown artifact(s) {unknown}; known: {names}")
    root = Path(out).expanduser() if out is not None else _cache_dir(config)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {root}: {exc.strerror}") from exc
    done: list[Built] = []
    for art in ARTIFACTS:
        if only and art.name not in only:
            continue
        build = _resolve(art.build)
        started, t0 = time.time(), time.perf_counter()
        folder = build(root, config)
        seconds = time.perf_counter() - t0
        built = _written_since(folder, started)
        log.info("artifact %s: %s (%.1f s)", art.name, folder, seconds)
        done.append(Built(art.name, folder, built, seconds))
    return done


def _written_since(folder: Path, since: float) -> bool:
    """Whether the build wrote any file of ``folder`` (it found it complete otherwise)."""
    return any(
        p.is_file() and p.stat().st_mtime >= since - 1.0 and p.name != ".lock"
        for p in folder.rglob("*")
    )
