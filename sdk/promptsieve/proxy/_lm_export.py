"""Export the LM proxy (Qwen2.5-Coder-0.5B-Instruct) from its GGUF to a cached ONNX decoder.

The build, once per fingerprint (needs ``pip install 'promptsieve[export]'``):

1. transformers' GGUF loader (``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``,
   which needs the ``gguf`` package) dequantises the packaged Q4_K_M GGUF to float32;
2. the model and its tokenizer are saved to a temporary Hugging Face folder;
3. optimum's ONNX exporter (``optimum.exporters.onnx.main_export``, task
   ``text-generation-with-past``) writes one decoder graph with past key/values inputs and
   ``present`` outputs (``model.onnx`` + ``model.onnx_data``, about 2.5 GB in float32);
4. optionally (``int8=True``), onnxruntime's weight-only block quantisation turns the
   MatMul weights into int8 (:func:`quantize_int8`; run on the CPU provider): 1.1 GB on disk
   instead of 2.5 GB. When the float32 export is already cached, the int8 one is quantised
   from it (no torch, about 20 s of CPU) instead of being exported again.

Only :func:`ensure_lm_export` on a cache miss imports torch/transformers/optimum; the
fingerprint and the cache look-up are torch-free. Exports are written to a temporary folder
and moved into place with ``os.replace`` under the same ``flock`` as the encoder export, so
processes starting together export once.

Graph contract (optimum's decoder with past, read by :mod:`promptsieve.proxy.lm`)::

    input_ids, attention_mask, position_ids : (b, s) / (b, past + s) / (b, s) int64
    past_key_values.{i}.key|value           : (b, kv_heads, past, head_dim) float32
    logits                                  : (b, s, vocab) float32
    present.{i}.key|value                   : (b, kv_heads, past + s, head_dim) float32
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from promptsieve._errors import ConfigError
from promptsieve._threads import RUNTIME_DOOR
from promptsieve.proxy._export import _export_lock

__all__ = [
    "DEFAULT_LM",
    "LM_EXPORT_VERSION",
    "LMExportSettings",
    "ensure_lm_export",
    "export_lm_onnx",
    "lm_fingerprint",
    "quantize_int8",
    "resolve_gguf",
]

log = logging.getLogger(__name__)

#: Bump whenever the exported graph changes for the same GGUF and settings.
LM_EXPORT_VERSION = 1
#: The embedded model the LM proxy is built from (``promptsieve.local``'s registry name).
DEFAULT_LM = "qwen2.5-coder-0.5b-instruct"
#: How int8 weights are made (part of an int8 export's fingerprint, see :func:`quantize_int8`):
#: onnxruntime's MatMulNBits, 8-bit symmetric blocks of 32, int8 compute (accuracy level 4).
INT8_SCHEME = "ort-matmulnbits-8bit-block32-sym-acc4"
_EXPORT_HINT = "pip install 'promptsieve[export]'"
_MODEL = "model.onnx"
_TOKENIZER = "tokenizer.json"
_META = "export.json"


@dataclass(frozen=True)
class LMExportSettings:
    """Settings that change the exported LM graph (all part of the fingerprint)."""

    opset: int = 17
    int8: bool = False  # dynamic int8 quantisation of the weights (CPU)


def resolve_gguf(gguf: Path | None, download: bool = True) -> tuple[Path, str]:
    """``(GGUF path, sha256)`` of the proxy's weights.

    ``gguf=None``: the packaged Qwen2.5-Coder-0.5B-Instruct, assembled and verified by
    :func:`promptsieve.local.gguf_path` (its pinned SHA-256 is the digest; nothing is hashed
    again). Another file is hashed once per (path, size, mtime) and the digest remembered in
    a sidecar ``<file>.sha256.json``.

    Raises :class:`ConfigError` for a missing file or a missing/corrupt package part.
    """
    if gguf is None:
        from promptsieve.local import embedded_model, gguf_path

        spec = embedded_model(DEFAULT_LM)
        path = gguf_path(DEFAULT_LM, download=download)
        assert spec.file is not None
        return path, spec.file.sha256
    path = Path(gguf).expanduser()
    if not path.is_file():
        raise ConfigError(f"LM proxy GGUF not found: {path}")
    return path, _cached_digest(path)


def _cached_digest(path: Path) -> str:
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    side = path.with_name(path.name + ".sha256.json")
    try:
        saved = json.loads(side.read_text())
        if saved.get("stamp") == stamp:
            return str(saved["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    with contextlib.suppress(OSError):  # a read-only model folder: hash again next time
        side.write_text(json.dumps({"stamp": stamp, "sha256": digest}))
    return digest


def lm_fingerprint(gguf_sha256: str, settings: LMExportSettings) -> str:
    """sha256 over the GGUF digest, export settings and graph version (16 hex chars); for
    int8, the quantisation scheme too (:data:`INT8_SCHEME`), so int8 and float32 exports,
    and int8 exports of different schemes, never share a folder or an attribution cache."""
    parts: dict[str, Any] = {
        "kind": "lm",
        "gguf": gguf_sha256,
        "settings": asdict(settings),
        "export_version": LM_EXPORT_VERSION,
    }
    if settings.int8:
        parts["int8_scheme"] = INT8_SCHEME
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _import_export_deps() -> tuple[Any, Any]:
    try:
        import transformers
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise ConfigError(
            "exporting the LM proxy to ONNX needs torch, transformers, optimum-onnx, gguf and "
            f"accelerate; install them with: {_EXPORT_HINT}"
        ) from exc
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"transformers' GGUF loader needs the gguf package; install it with: {_EXPORT_HINT}"
        ) from exc
    return transformers, main_export


def export_lm_onnx(gguf: Path, out_dir: Path, settings: LMExportSettings) -> None:
    """Write ``model.onnx`` (+ external data) and ``tokenizer.json`` into ``out_dir``.

    ``out_dir`` must be empty or absent; callers handle atomicity (see module docstring).
    """
    transformers, main_export = _import_export_deps()
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="promptsieve-lm-", dir=out_dir.parent) as tmp:
        hf = Path(tmp) / "hf"
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32
        )
        tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model.save_pretrained(str(hf))
        tok.save_pretrained(str(hf))
        del model
        onnx_dir = Path(tmp) / "onnx"
        main_export(
            str(hf),
            output=str(onnx_dir),
            task="text-generation-with-past",
            opset=settings.opset,
            device="cpu",
            do_validation=False,
            no_post_process=True,  # one decoder with past inputs, no merged if-graph
        )
        graph = onnx_dir / _MODEL
        if not graph.is_file():
            raise ConfigError(f"optimum wrote no {_MODEL} into {onnx_dir}: {os.listdir(onnx_dir)}")
        if settings.int8:
            quantize_int8(graph, out_dir / _MODEL)
        else:
            for f in onnx_dir.iterdir():
                if f.name == _MODEL or f.name.startswith(_MODEL + "_data") or f.suffix == ".data":
                    shutil.move(str(f), str(out_dir / f.name))
        shutil.copyfile(hf / _TOKENIZER, out_dir / _TOKENIZER)
        cfg = json.loads((hf / "config.json").read_text())
        (out_dir / "config.json").write_text(json.dumps(cfg, indent=2))


def quantize_int8(src: Path, dst: Path) -> None:
    """Write the int8-weight version of the ONNX graph ``src`` to ``dst``.

    onnxruntime's weight-only block quantisation
    (``onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer``, 8 bits,
    symmetric, blocks of 32 input channels with one scale each, ``accuracy_level=4``): every
    MatMul with a constant weight (the attention and MLP projections, the LM head) becomes a
    ``MatMulNBits`` node; the embedding stays float32. At accuracy level 4 the CPU kernel
    quantises the activations to int8 per row and block and multiplies in int8, so one
    token's activations never change another's: scores do not depend on how a sequence is
    split into KV-cache chunks or batched (onnxruntime's *dynamic* quantisation, one
    activation scale per tensor, moved a 5-token answer's log-probability by up to 8 nats
    between a full pass and the KV-cache path on this model, so it is not used).

    ``src`` may keep its weights in external data beside it; ``dst``'s go to
    ``<dst name>.data`` beside it. Needs ``onnx`` and ``onnx-ir`` (``promptsieve[export]``),
    not torch. An int8 graph runs on the CPU provider: the int8 compute at accuracy level 4
    is the CPU kernel's (onnxruntime's CUDA MatMulNBits dequantises and multiplies in float).
    """
    try:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import (
            DefaultWeightOnlyQuantConfig,
            MatMulNBitsQuantizer,
        )
    except ImportError as exc:  # the quantizer imports onnx and onnx_ir
        raise ConfigError(
            f"int8 quantisation of the LM proxy needs onnx and onnx-ir; install them with: "
            f"{_EXPORT_HINT}"
        ) from exc
    dst.parent.mkdir(parents=True, exist_ok=True)
    opts = {"bits": 8, "block_size": 32, "is_symmetric": True, "accuracy_level": 4}
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(src)), algo_config=DefaultWeightOnlyQuantConfig(**opts), **opts
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), True)


def _from_float32(folder32: Path, out_dir: Path) -> None:
    """The int8 export built from a cached float32 export: quantise, copy the tokenizer."""
    quantize_int8(folder32 / _MODEL, out_dir / _MODEL)
    for name in (_TOKENIZER, "config.json"):
        shutil.copyfile(folder32 / name, out_dir / name)


def ensure_lm_export(
    gguf: Path | None,
    cache_dir: Path,
    settings: LMExportSettings,
    *,
    allow_export: bool = True,
    download: bool = True,
) -> tuple[Path, str, bool]:
    """Return ``(export folder, fingerprint, exported)``, exporting on a cache miss.

    The folder ``lm-<fingerprint>`` holds ``model.onnx`` (+ data), ``tokenizer.json``,
    ``config.json`` and ``export.json``. ``allow_export=False`` raises :class:`ConfigError`
    on a miss instead of exporting (used by tests that must not spend minutes). An int8
    export is quantised from the cached float32 one when that exists, else exported from
    the GGUF and then quantised.
    """
    path, digest = resolve_gguf(gguf, download=download)
    fp = lm_fingerprint(digest, settings)
    folder = cache_dir / f"lm-{fp}"
    if (folder / _META).is_file():
        return folder, fp, False
    if not allow_export:
        raise ConfigError(
            f"the LM proxy {fp} is not exported in {cache_dir}; export it once with "
            "promptsieve.proxy.lm.LMProxy.load() (needs " + _EXPORT_HINT + ")"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock_dir = cache_dir / f".lm-{fp}.lock.d"
    lock_dir.mkdir(exist_ok=True)
    with _export_lock(lock_dir):  # workers starting together export once, the rest wait
        if (folder / _META).is_file():
            return folder, fp, False
        log.info("exporting the LM proxy %s to ONNX; this happens once (about a minute)", fp)
        tmp = Path(tempfile.mkdtemp(prefix=f".lm-{fp}-", dir=cache_dir))
        try:
            folder32 = cache_dir / f"lm-{lm_fingerprint(digest, replace(settings, int8=False))}"
            with RUNTIME_DOOR:  # the exit hook waits for it (up to DOOR_WAIT_S)
                if settings.int8 and (folder32 / _META).is_file():
                    # the float32 graph is cached: quantise it (seconds to minutes, no torch)
                    _from_float32(folder32, tmp)
                else:
                    export_lm_onnx(path, tmp, settings)
            meta = {
                "fingerprint": fp,
                "gguf_sha256": digest,
                "settings": asdict(settings),
                "version": LM_EXPORT_VERSION,
            }
            (tmp / _META).write_text(json.dumps(meta, indent=2))
            if folder.exists():  # a partial folder from a killed process (no export.json)
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return folder, fp, True
