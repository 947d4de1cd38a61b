"""Relevance scorer: question and context read together, one ONNX pass per window batch.

The relevance graph (``_relevance_export``) is the proxy encoder's first ``layers`` layers
plus a trained relevance head (``heads/relevance-v1.safetensors``, trained by
``python -m benchmarks.train_relevance`` on answer-bearing sentences of BIG-bench
``disfl_qa`` train articles, the local target's own leave-one-out attributions on dev
articles, and few-shot / instruction text). Every window is ``[CLS] question [SEP] window
[SEP]``: the question is repeated in each window of at most ``ProxyConfig.window`` (512)
tokens, so every token is scored with the question in view, as Provence / LongLLMLingua's
question-aware coarse stage do. Without a question the windows are ``[CLS] [SEP] window
[SEP]`` and the head falls back to query-free importance (a token's fit to its window).

Per-token logits are returned as :class:`TokenScores`; :meth:`RelevanceScorer.pool` turns
them into sentence (or passage) relevance, ``pool_mean · mean + pool_max · max`` of the
span's token logits, the weights learned with the head. The token states of the same pass
come along for the instance guard. Torch-free: only exporting the graph on a cache miss
needs ``promptsieve[export]``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from promptsieve._config_types import check_field_types
from promptsieve._errors import ConfigError, missing_extra
from promptsieve.proxy._relevance_export import locate_relevance, relevance_metadata
from promptsieve.proxy._runtime import (
    Proxy,
    ProxyConfig,
    Window,
    _cache_dir,
    _session,
    assign_owners,
    plan_windows,
)
from promptsieve.proxy._scores import TokenScores

__all__ = [
    "RelevanceConfig",
    "RelevanceScorer",
    "build_feeds",
    "default_relevance_head",
    "pool_spans",
    "question_ids",
    "windows",
]

log = logging.getLogger(__name__)

_HEADS_DIR = Path(__file__).resolve().parent / "heads"
_VERSION = 1


def default_relevance_head() -> Path:
    """The committed relevance head (``heads/relevance-v1.safetensors``)."""
    return _HEADS_DIR / "relevance-v1.safetensors"


@dataclass(frozen=True)
class RelevanceConfig:
    """``head``: a relevance head file (default: the committed one); ``max_question_tokens``:
    the question is cut to this many proxy tokens (it is repeated in every window)."""

    head: Path | None = None
    max_question_tokens: int = 64

    def __post_init__(self) -> None:
        check_field_types(self)
        if not 1 <= self.max_question_tokens <= 200:
            raise ConfigError("max_question_tokens must be in [1, 200]")


class RelevanceScorer:
    """Per-token question relevance from one pass of the relevance graph (``Scorer``)."""

    name = "relevance"

    def __init__(self, proxy: Proxy, config: RelevanceConfig | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - the proxy already needed it
            raise missing_extra("onnxruntime", "cpu") from exc
        self.proxy = proxy
        self.config = config or RelevanceConfig()
        head = Path(self.config.head or default_relevance_head())
        if not head.is_file():
            raise ConfigError(f"relevance head not found: {head}")
        meta = relevance_metadata(head)
        self.pool_mean = float(meta.get("pool_mean", "0.5"))
        self.pool_max = float(meta.get("pool_max", "0.5"))
        folder, fp, exported = locate_relevance(
            model_dir=proxy.config.model_dir,
            cache_dir=_cache_dir(proxy.config),
            proxy_dir=proxy.config.prebuilt_dir(),
            head=head,
            settings=proxy.config.export_settings(),
        )
        self._session = _session(ort, folder / "model.onnx", proxy.config)
        self.graph_fingerprint, self.exported, self.graph_dir = fp, exported, folder
        blob = f"relevance|{proxy.fingerprint}|{fp}|{self.config.max_question_tokens}|{_VERSION}"
        self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]
        log.info("relevance graph %s loaded", fp)

    def score(
        self,
        text: str,
        *,
        question: str | None = None,
        units: Sequence[tuple[int, int]] | None = None,
    ) -> TokenScores:
        """Per-token relevance logits of ``text`` to ``question`` (``units`` is ignored)."""
        proxy = self.proxy
        ids, offsets = proxy.tokenize(text)
        q = question_ids(proxy, question, self.config.max_question_tokens)
        n = len(ids)
        logits = np.zeros(n, dtype=np.float32)
        states = np.zeros((n, proxy.dim), dtype=np.float32)
        wins = windows(proxy.config, n, len(q))
        bs = proxy.config.batch_size
        base = len(q) + 2  # [CLS] q [SEP]
        for b in range(0, len(wins), bs):
            batch = wins[b : b + bs]
            feeds = build_feeds([ids[w.start : w.end] for w in batch], q, proxy._cls, proxy._sep)
            out_logits, out_states = proxy._run(
                feeds, ["relevance_logits", "token_states"], self._session
            )
            for i, w in enumerate(batch):
                a, z = w.own_start - w.start + base, w.own_end - w.start + base
                logits[w.own_start : w.own_end] = out_logits[i, a:z]
                states[w.own_start : w.own_end] = out_states[i, a:z]
        return TokenScores(text, offsets, logits, self.name, states)

    def pool(self, scores: TokenScores, spans: Sequence[tuple[int, int]]) -> np.ndarray:
        """Relevance of each ``[start, end)`` span: ``pool_mean·mean + pool_max·max`` of the
        logits of the tokens overlapping it (``-inf``-free: a span with no token gets the
        lowest score present). Shape ``(len(spans),)`` float64."""
        return pool_spans(scores, spans, self.pool_mean, self.pool_max)


def question_ids(proxy: Proxy, question: str | None, max_tokens: int) -> np.ndarray:
    """The question's proxy token ids, its *last* ``max_tokens`` (an instruction often comes
    first and the actual question last); empty without a question."""
    if not question or not question.strip():
        return np.zeros(0, dtype=np.int64)
    ids = proxy.tokenize(question)[0]
    return ids[-max_tokens:] if len(ids) > max_tokens else ids


def windows(config: ProxyConfig, n_tokens: int, q_len: int) -> list[Window]:
    """Balanced windows over ``n_tokens`` context tokens next to a ``q_len``-token question."""
    capacity = config.window - 3 - q_len
    return assign_owners(
        plan_windows(n_tokens, capacity, min(config.overlap, capacity - 1)), n_tokens
    )


def build_feeds(
    rows: Sequence[np.ndarray], q: np.ndarray, cls: int, sep: int
) -> dict[str, np.ndarray]:
    """``[CLS] q [SEP] row [SEP]`` per row (types 0 / 1), right-padded with id 0."""
    head = np.concatenate([[cls], q, [sep]]).astype(np.int64)
    lens = [len(head) + len(r) + 1 for r in rows]
    width = max(lens)
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(head)] = head
        ids[i, len(head) : len(head) + len(r)] = r
        ids[i, lens[i] - 1] = sep
        types[i, len(head) : lens[i]] = 1
        mask[i, : lens[i]] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def pool_spans(
    scores: TokenScores, spans: Sequence[tuple[int, int]], w_mean: float, w_max: float
) -> np.ndarray:
    """``w_mean · mean + w_max · max`` of token scores per span (see ``RelevanceScorer.pool``)."""
    if len(spans) == 0:
        return np.zeros(0, dtype=np.float64)
    sp = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    vals = np.asarray(scores.scores, dtype=np.float64)
    if len(vals) == 0:
        return np.zeros(len(sp), dtype=np.float64)
    lo = np.searchsorted(scores.offsets[:, 1], sp[:, 0], side="right")
    hi = np.maximum(np.searchsorted(scores.offsets[:, 0], sp[:, 1], side="left"), lo)
    csum = np.concatenate([[0.0], np.cumsum(vals)])
    cnt = hi - lo
    ok = cnt > 0
    mean = np.divide(csum[hi] - csum[lo], cnt, out=np.zeros(len(sp)), where=ok)
    mx = np.zeros(len(sp))
    for j in np.flatnonzero(ok).tolist():  # a loop over spans (sentences), not tokens
        mx[j] = vals[lo[j] : hi[j]].max()
    out = w_mean * mean + w_max * mx
    if (~ok).any():
        out[~ok] = out[ok].min() if ok.any() else 0.0
    return out
