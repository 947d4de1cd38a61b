"""Export the relevance graph (truncated encoder + relevance head) to a cached ONNX file.

Torch-free except :func:`export_relevance_onnx`, which only a cache miss calls. Cached next to
the other graphs in folder ``relevance-<fingerprint>`` (the fingerprint covers the encoder
weights, the head file's bytes, its depth, the export settings and the graph version), with
the same atomic writes and export lock as :mod:`promptsieve.proxy._export`.

Graph contract (inputs int64 ``(b, s)``: ``input_ids``, ``attention_mask``,
``token_type_ids``; dynamic ``batch``/``seq``)::

    relevance_logits  (b, s)       float32  per-token relevance (see _relevance_head)
    token_states      (b, s, 384)  float32  the truncated encoder's states (instance guard)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptsieve.proxy._export import (
    INPUT_NAMES,
    ExportSettings,
    _complete,
    _ensure,
    _identity,
    _match_prebuilt,
    _onnx_export,
    _weights_dir,
    checked_head_metadata,
    head_fingerprint,
    head_graph_module,
    missing_artifact,
    truncated_encoder,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "RELEVANCE_EXPORT_VERSION",
    "RELEVANCE_OUTPUT_NAMES",
    "build_relevance",
    "ensure_relevance_export",
    "export_relevance_onnx",
    "locate_relevance",
    "relevance_fingerprint",
    "relevance_metadata",
]

RELEVANCE_EXPORT_VERSION = 1
RELEVANCE_OUTPUT_NAMES = ("relevance_logits", "token_states")
_FORMAT = "promptsieve-relevance/1"


def relevance_metadata(head: Path) -> dict[str, str]:
    """The head file's metadata (architecture, depth, pooling), checked; torch-free."""
    return checked_head_metadata(head, _FORMAT, "relevance head")


def relevance_fingerprint(model_dir: Path, head: Path, settings: ExportSettings) -> str:
    """sha256 over encoder weights, head bytes and depth, settings and graph version."""
    return head_fingerprint(
        "relevance", model_dir, head, _layers, settings, RELEVANCE_EXPORT_VERSION
    )


def _layers(head: Path) -> int:
    return int(relevance_metadata(head)["layers"])


def export_relevance_onnx(
    model_dir: Path, out_path: Path, head: Path, *, settings: ExportSettings | None = None
) -> None:
    """Export the truncated encoder + the relevance head in ``head`` to ``out_path``."""
    from promptsieve.proxy._relevance_head import load_relevance_head

    settings = settings or ExportSettings()
    head_mod = load_relevance_head(head)
    bert = truncated_encoder(model_dir, head_mod.layers)
    graph = head_graph_module(bert, head_mod, probabilities=False)
    axes = {n: {0: "batch", 1: "seq"} for n in (*INPUT_NAMES, *RELEVANCE_OUTPUT_NAMES)}
    _onnx_export(graph, out_path, RELEVANCE_OUTPUT_NAMES, axes, settings)


def ensure_relevance_export(
    model_dir: Path, cache_dir: Path, head: Path, settings: ExportSettings
) -> tuple[Path, str, bool]:
    """``(folder, fingerprint, exported)`` of the relevance graph, exporting on a cache miss."""
    fp = relevance_fingerprint(model_dir, head, settings)

    def export(out: Path) -> None:
        export_relevance_onnx(model_dir, out, head, settings=settings)

    folder, exported = _ensure(
        cache_dir / f"relevance-{fp}",
        fp,
        model_dir,
        settings,
        export,
        RELEVANCE_EXPORT_VERSION,
        identity=_identity("relevance", model_dir, head, settings, False),
    )
    return folder, fp, exported


def locate_relevance(
    *,
    model_dir: Path | None,
    cache_dir: Path,
    proxy_dir: Path | None,
    head: Path,
    settings: ExportSettings,
) -> tuple[Path, str, bool]:
    """``(folder, fingerprint, exported)`` of the relevance graph, like ``locate_export``:
    read from a prebuilt ``proxy_dir`` (``PROMPTSIEVE_PROXY_DIR``) and never exported there;
    else from ``cache_dir``, exported on a miss. Without the weights package the folder is
    matched by the identity its ``export.json`` records.

    Raises :class:`ConfigError` when the graph is neither there nor buildable.
    """
    root = proxy_dir if proxy_dir is not None else cache_dir
    weights = _weights_dir(model_dir)
    if weights is None:
        hit = _match_prebuilt(root, "relevance", head, settings, False)
        if hit is None:
            raise missing_artifact("relevance graph", root, proxy_dir is not None)
        return hit[0], hit[1], False
    fp = relevance_fingerprint(weights, head, settings)
    folder = root / f"relevance-{fp}"
    if _complete(folder):
        return folder, fp, False
    if proxy_dir is not None:
        raise missing_artifact("relevance graph", proxy_dir, True)
    return ensure_relevance_export(weights, cache_dir, head, settings)


def build_relevance(out: Path, config: Any) -> Path:
    """``promptsieve export`` hook (``proxy._artifacts.ARTIFACTS``): the relevance graph of the
    committed head (or ``RelevanceConfig().head``) into ``out``; returns its folder."""
    from promptsieve.proxy.relevance import default_relevance_head

    weights = _weights_dir(config.model_dir)
    if weights is None:
        raise missing_artifact("relevance graph", out, False)
    folder, _, _ = ensure_relevance_export(
        weights, out, default_relevance_head(), config.export_settings()
    )
    return folder
