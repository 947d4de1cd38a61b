"""The LM proxy at run time: a small generative model as an ONNX decoder in onnxruntime.

Qwen2.5-Coder-0.5B-Instruct, exported once from the packaged GGUF (see
:mod:`promptsieve.proxy._lm_export`), scores how likely an answer is after a prompt. It is
used once per task (demonstration attribution, cleaning), never per request.

Cost model (measured on 2 CPU cores, float32): about 155 prompt tokens/s, so the runner
shares work wherever prompts share a prefix: :meth:`LMProxy.extend` returns a KV state that
later calls continue from, and :meth:`LMProxy.score` scores several continuations of one
state as one right-padded batch (padding after the real tokens never changes their logits
under a causal mask).

Torch-free: onnxruntime, tokenizers and numpy only. CUDA first when onnxruntime-gpu sees a
GPU (same provider choice as the encoder proxy), float32 there without TF32
(:func:`promptsieve.proxy._runtime.inference_session`): on an H200, exact Shapley over 8
demonstrations took 8.2 s, and answer log-probabilities stayed within 0.0004 nats of the
CPU's (``benchmarks/results/demos/gpu_timing.json``).

``LMProxyConfig(int8=True)``: int8 weights (onnxruntime's MatMulNBits, 8-bit blocks of 32,
int8 compute; see :func:`promptsieve.proxy._lm_export.quantize_int8`), 1.1 GB instead of
2.5 GB, a distinct fingerprint (so a distinct attribution cache), CPU provider only: the
fingerprint names the CPU kernel's int8 compute (accuracy level 4); onnxruntime's CUDA
MatMulNBits (8 bits since onnxruntime 1.22) dequantises the weights and multiplies in float,
which would give other scores under the same fingerprint. Exact
Shapley over 8 demonstrations x 3 validation requests (256 coalitions, sports_understanding)
took 224 CPU-seconds in float32 (``benchmarks/results/demos/timing.jsonl``; int8 figures and
fidelity in the README's demonstration section).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from promptsieve._config_types import check_field_types
from promptsieve._errors import ConfigError, missing_extra
from promptsieve._threads import RUNTIME_DOOR
from promptsieve.proxy._export import check_opset
from promptsieve.proxy._lm_export import LMExportSettings, ensure_lm_export
from promptsieve.proxy._runtime import CPU, check_cache_dir, check_providers, inference_session

__all__ = ["KVState", "LMProxy", "LMProxyConfig", "chatml", "chatml_turn"]

log = logging.getLogger(__name__)

#: Qwen's default system prompt, which its chat template (and so llama.cpp's server, reading
#: the template from the GGUF) inserts when a request has no system message.
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def chatml_turn(role: str, text: str = "", *, close: bool = True) -> str:
    """One ChatML message as Qwen2.5's chat template writes it:
    ``<|im_start|>{role}\\n{text}<|im_end|>\\n``, or without the ``<|im_end|>`` when not
    ``close`` (a turn that the rest of the prompt, or the model's answer, continues)."""
    return f"<|im_start|>{role}\n{text}" + ("<|im_end|>\n" if close else "")


def chatml(system: str | None = None) -> tuple[str, str]:
    """``(opening, closing)`` of one ChatML user turn: ``opening + user text + closing`` is
    the prompt after which the assistant's answer starts (Qwen2.5's chat template; with
    ``system=None`` its default system message, :data:`QWEN_SYSTEM`)."""
    sys_text = QWEN_SYSTEM if system is None else system
    opening = chatml_turn("system", sys_text) + chatml_turn("user", close=False)
    return opening, "<|im_end|>\n" + chatml_turn("assistant", close=False)


@dataclass(frozen=True)
class LMProxyConfig:
    """How to build and run the LM proxy. Every field has a working default.

    ``gguf=None``: the packaged Qwen2.5-Coder-0.5B-Instruct (``promptsieve.local``), fetched
    and verified on first use. ``int8``: int8 weights (see the module docstring): smaller,
    log-probabilities within about 0.2 nats of float32, a different fingerprint; built from
    the cached float32 export when there is one; always run on the CPU provider (see the
    module docstring), even where CUDA is available; ``providers`` without
    ``"CPUExecutionProvider"`` is then a :class:`ConfigError`. Default False: float32.
    ``allow_export=False``: raise :class:`ConfigError` when the export is not cached instead
    of exporting (export needs ``promptsieve[export]``).
    """

    gguf: Path | None = None
    cache_dir: Path | None = None  # default: <promptsieve cache>/proxy
    providers: tuple[str, ...] | None = None
    intra_op_threads: int | None = None
    int8: bool = False
    opset: int = 17
    batch_size: int = 8  # continuations scored in one run
    allow_export: bool = True
    download: bool = True

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in ("gguf", "cache_dir"):  # a str or os.PathLike is stored as a Path
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser())
        if self.gguf is not None and not self.gguf.is_file():
            raise ConfigError(
                f"LMProxyConfig(gguf=...): no file at {str(self.gguf)!r}; give the path of a "
                "GGUF model file, or leave gguf None for the packaged Qwen2.5-Coder-0.5B-Instruct"
            )
        check_cache_dir("LMProxyConfig", self.cache_dir)
        check_providers("LMProxyConfig", self.providers)
        check_opset("LMProxyConfig", self.opset, LMExportSettings().opset)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ConfigError("intra_op_threads must be >= 1")
        if self.int8 and self.providers is not None and CPU not in self.providers:
            raise ConfigError(
                f"the int8 LM proxy runs on {CPU} only, not on {list(self.providers)}: use "
                f"LMProxyConfig(int8=False) for the GPU, or add {CPU!r} to providers"
            )

    def export_settings(self) -> LMExportSettings:
        return LMExportSettings(opset=self.opset, int8=self.int8)

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        from promptsieve._paths import cache_dir

        return cache_dir() / "proxy"


@dataclass(frozen=True)
class KVState:
    """The decoder's key/value cache after ``length`` tokens (batch 1), reusable.

    ``past``: one array per past input, in the session's input order, each
    ``(1, kv_heads, length, head_dim)`` float32. ``last_logits``: ``(vocab,)`` log-softmax
    of the next token after the state (None for the empty state).
    """

    past: tuple[np.ndarray, ...]
    length: int
    last_logprobs: np.ndarray | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.past)


class LMProxy:
    """The LM proxy's ONNX decoder in onnxruntime. Build with :meth:`load`."""

    def __init__(
        self, session: Any, tokenizer: Any, config: LMProxyConfig, fingerprint: str, folder: Path
    ) -> None:
        self._session = session
        self._tok = tokenizer
        self.config = config
        self.fingerprint = fingerprint
        self.export_dir = folder
        self.exported = False
        self.provider: str = session.get_providers()[0]
        names = [i.name for i in session.get_inputs()]
        self._past_names = [n for n in names if n.startswith("past_key_values")]
        self._has_positions = "position_ids" in names
        self._out_names = [o.name for o in session.get_outputs()]
        shapes = {i.name: i.shape for i in session.get_inputs()}
        first = shapes[self._past_names[0]]
        self._kv_heads, self._head_dim = int(first[1]), int(first[3])
        self.tokens_run = 0  # tokens through the graph since load (cost accounting)
        self.runs = 0

    @classmethod
    def load(cls, config: LMProxyConfig | None = None) -> LMProxy:
        """Open the cached ONNX export (exporting it on first use) in onnxruntime.

        Raises :class:`ConfigError` when onnxruntime is missing, the GGUF cannot be had, or
        the export is missing and cannot be built here.
        """
        config = config or LMProxyConfig()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_extra("onnxruntime", "cpu") from exc
        from tokenizers import Tokenizer

        from promptsieve.proxy._runtime import select_providers

        folder, fp, exported = ensure_lm_export(
            config.gguf,
            config.resolved_cache_dir(),
            config.export_settings(),
            allow_export=config.allow_export,
            download=config.download,
        )
        so = ort.SessionOptions()
        so.intra_op_num_threads = config.intra_op_threads or os.cpu_count() or 1
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        providers = select_providers(ort.get_available_providers(), config.providers)
        if config.int8 and providers != [CPU]:
            log.warning(
                "the int8 LM proxy runs on %s only (its fingerprint names the CPU kernel's "
                "int8 compute), not on %s; use LMProxyConfig(int8=False) for the GPU",
                CPU,
                [p for p in providers if p != CPU],
            )
            providers = [CPU]
        session = inference_session(ort, folder / "model.onnx", so, providers)
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        proxy = cls(session, tok, config, fp, folder)
        proxy.exported = exported
        log.info("LM proxy %s loaded on %s", fp, proxy.provider)
        return proxy

    # -- tokens -------------------------------------------------------------------------------

    def encode(self, text: str) -> np.ndarray:
        """Token ids ``(n,)`` int64 of ``text`` (no special tokens added; ChatML markers in
        the text are recognised as the special tokens they are)."""
        with RUNTIME_DOOR.native():  # Rust; a tokenizers build may release the GIL here
            enc = self._tok.encode(text, add_special_tokens=False)
        return np.asarray(enc.ids, dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        with RUNTIME_DOOR.native():
            return str(self._tok.decode(list(ids), skip_special_tokens=False))

    # -- running ------------------------------------------------------------------------------

    def empty(self) -> KVState:
        z = np.zeros((1, self._kv_heads, 0, self._head_dim), dtype=np.float32)
        return KVState(tuple(z for _ in self._past_names), 0, None)

    def _run(
        self, ids: np.ndarray, mask: np.ndarray, past: Sequence[np.ndarray], start: int
    ) -> list[np.ndarray]:
        b, s = ids.shape
        feeds: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
        if self._has_positions:
            feeds["position_ids"] = np.broadcast_to(
                np.arange(start, start + s, dtype=np.int64), (b, s)
            ).copy()
        feeds.update(zip(self._past_names, past, strict=True))
        self.runs += 1
        self.tokens_run += int(mask[:, start:].sum())
        with RUNTIME_DOOR:  # never inside onnxruntime while the interpreter finalises
            return list(self._session.run(self._out_names, feeds))

    def extend(self, state: KVState | None, ids: np.ndarray) -> KVState:
        """The state after feeding ``ids`` ``(n,)`` on top of ``state`` (None: empty)."""
        state = state or self.empty()
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return state
        total = state.length + len(ids)
        mask = np.ones((1, total), dtype=np.int64)
        outs = self._run(ids[None, :], mask, state.past, state.length)
        logits = outs[0][0, -1]
        return KVState(tuple(outs[1:]), total, _log_softmax(logits))

    def token_logprobs(self, ids: np.ndarray) -> np.ndarray:
        """``(n,)`` log p(token_i | tokens before it) of one sequence; entry 0 is NaN.

        One pass without a cache; memory grows with ``n * vocab`` (about 0.6 MB a token).
        """
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full(len(ids), np.nan)
        if len(ids) < 2:
            return out
        state = self.empty()
        logits = self._run(ids[None, :], np.ones((1, len(ids)), np.int64), state.past, 0)[0][0]
        for i in range(1, len(ids)):
            out[i] = _log_softmax(logits[i - 1])[ids[i]]
        return out

    def score(
        self, state: KVState | None, continuations: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> np.ndarray:
        """``(k,)`` summed log-probabilities (nats) of each target after ``state + context``.

        Each continuation is ``(context ids, target ids)``: the target's tokens are scored,
        the context's are only fed. Continuations run ``batch_size`` at a time, right-padded,
        against a copy of the shared state.
        """
        state = state or self.empty()
        out = np.zeros(len(continuations))
        bs = self.config.batch_size
        for lo in range(0, len(continuations), bs):
            chunk = continuations[lo : lo + bs]
            out[lo : lo + len(chunk)] = self._score_batch(state, chunk)
        return out

    def _score_batch(
        self, state: KVState, chunk: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> np.ndarray:
        seqs = [
            np.concatenate([np.asarray(c, np.int64), np.asarray(t, np.int64)]) for c, t in chunk
        ]
        for (_, t), seq in zip(chunk, seqs, strict=True):
            if len(t) == 0:
                raise ValueError("a continuation has an empty target")
            if len(seq) == 0:
                raise ValueError("empty continuation")
        b, width = len(seqs), max(len(s) for s in seqs)
        ids = np.zeros((b, width), dtype=np.int64)
        mask = np.zeros((b, state.length + width), dtype=np.int64)
        mask[:, : state.length] = 1
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = s
            mask[i, state.length : state.length + len(s)] = 1
        past = [np.repeat(p, b, axis=0) if b > 1 else p for p in state.past]
        logits = self._run(ids, mask, past, state.length)[0]  # (b, width, vocab)
        scores = np.zeros(b)
        for i, ((c, t), s) in enumerate(zip(chunk, seqs, strict=True)):
            n_c, n_t = len(c), len(t)
            total = 0.0
            for j in range(n_t):
                pos = n_c + j  # position of the target token in seq
                if pos == 0:  # predicted by the state's last logits
                    if state.last_logprobs is None:
                        raise ValueError("the first target token needs a non-empty context")
                    total += float(state.last_logprobs[s[0]])
                else:
                    total += float(_log_softmax(logits[i, pos - 1])[s[pos]])
            scores[i] = total
        return scores


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())
