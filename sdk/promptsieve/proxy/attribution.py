"""Attribution scorer: perturbation-based token importance on the proxy (the paper's method).

Units (words by default) are dropped from the text and the proxy measures how much each
drop moves the text's embedding away from a reference — the question's embedding when a
question is given, else the unperturbed text's own embedding. Importance is either

* ``loo`` (default): ``sim(full) - sim(full minus unit)``, one perturbation per unit; or
* ``lime``: a kernel-SHAP weighted linear fit ``sim(coalition) ~ b + sum(phi_i z_i)`` over
  seeded random coalitions. Small unit counts are enumerated exactly with Shapley kernel
  weights (exact Shapley values); otherwise coalition sizes are sampled from the Shapley
  kernel distribution (which makes the per-sample weights uniform) in complementary pairs.

All perturbed texts of a call go through one :meth:`Proxy.embed` call. Cost is bounded: above
``max_units`` units, adjacent units are grouped into equal chunks and every unit gets its
chunk's score. Tokens outside every unit score 0. Deterministic for the same input.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from promptsieve._config_types import check_field_types
from promptsieve._errors import ConfigError
from promptsieve.proxy._runtime import Proxy
from promptsieve.proxy._scores import TokenScores

__all__ = ["AttributionConfig", "AttributionScorer", "whitespace_units"]

_VERSION = 1
_WORD = re.compile(r"\S+")
_EXACT_MAX_UNITS = 10  # enumerate all 2^M - 2 coalitions up to this many groups


@dataclass(frozen=True)
class AttributionConfig:
    """``samples`` (lime only): coalitions to evaluate; default ``max(4 * groups, 64)``."""

    method: Literal["loo", "lime"] = "loo"
    max_units: int = 256
    samples: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.max_units < 1:
            raise ConfigError("max_units must be >= 1")
        if self.samples is not None and self.samples < 2:
            raise ConfigError("samples must be >= 2")


def whitespace_units(text: str) -> list[tuple[int, int]]:
    """Default units: maximal runs of non-whitespace characters."""
    return [m.span() for m in _WORD.finditer(text)]


class AttributionScorer:
    """Scores tokens by perturbing units and watching the proxy embedding (see module doc)."""

    def __init__(self, proxy: Proxy, config: AttributionConfig | None = None) -> None:
        self.proxy = proxy
        self.config = config or AttributionConfig()
        self.name = f"attribution-{self.config.method}"
        c = self.config
        blob = f"{proxy.fingerprint}|{c.method}|{c.max_units}|{c.samples}|{c.seed}|{_VERSION}"
        self.fingerprint = hashlib.sha256(blob.encode()).hexdigest()[:16]

    def score(
        self,
        text: str,
        *,
        question: str | None = None,
        units: Sequence[tuple[int, int]] | None = None,
    ) -> TokenScores:
        _, offsets = self.proxy.tokenize(text)
        spans = _check_units(text, whitespace_units(text) if units is None else units)
        groups = _group(len(spans), self.config.max_units)
        unit_scores = np.zeros(len(spans), dtype=np.float64)
        if groups:
            group_scores = self._group_scores(text, spans, groups, question)
            for g, (a, b) in enumerate(groups):
                unit_scores[a:b] = group_scores[g]
        scores = _token_scores(offsets, spans, unit_scores)
        return TokenScores(text=text, offsets=offsets, scores=scores, scorer=self.name)

    def _group_scores(
        self,
        text: str,
        spans: list[tuple[int, int]],
        groups: list[tuple[int, int]],
        question: str | None,
    ) -> np.ndarray:
        m = len(groups)
        if self.config.method == "loo":
            keep = ~np.eye(m, dtype=bool)
            weights = None
        else:
            keep, weights = _coalitions(m, self.config.samples, self.config.seed)
        # head: [reference?, full text, empty text] then one row per coalition
        head = ([question] if question is not None else []) + [text]
        n_head = len(head)
        masks = np.vstack([np.zeros((1, m), dtype=bool), keep])
        texts = _Perturbed(text, spans, groups, masks, head)
        emb = self.proxy.embed(texts)
        ref = emb[0]
        sims = emb[n_head:] @ ref
        full = float(emb[n_head - 1] @ ref)
        empty, y = float(sims[0]), sims[1:].astype(np.float64)
        if self.config.method == "loo":
            return full - y
        return _fit(keep, y, weights, full, empty)


class _Perturbed(Sequence[str]):
    """Lazy list of texts: ``head`` then the text with unkept groups dropped, one per mask row.

    Built on access so huge prompts never hold all perturbations in memory at once.
    """

    def __init__(
        self,
        text: str,
        spans: list[tuple[int, int]],
        groups: list[tuple[int, int]],
        masks: np.ndarray,
        head: list[str],
    ) -> None:
        self._text = text
        self._spans = spans
        self._group_of = np.repeat(np.arange(len(groups)), [b - a for a, b in groups])
        self._masks = masks
        self._head = head

    def __len__(self) -> int:
        return len(self._head) + len(self._masks)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if i < len(self._head):
            return self._head[i]
        return _drop(self._text, self._spans, ~self._masks[i - len(self._head)][self._group_of])


def _drop(text: str, spans: list[tuple[int, int]], dropped: np.ndarray) -> str:
    """``text`` without the dropped spans; a space keeps two neighbours from fusing."""
    parts: list[str] = []
    pos = 0
    for (s, e), d in zip(spans, dropped, strict=True):
        if not d:
            continue
        parts.append(text[pos:s])
        if s > 0 and e < len(text) and not text[s - 1].isspace() and not text[e].isspace():
            parts.append(" ")
        pos = e
    parts.append(text[pos:])
    return "".join(parts)


def _check_units(text: str, units: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    spans = sorted((int(s), int(e)) for s, e in units)
    prev = 0
    for s, e in spans:
        if not (0 <= s <= e <= len(text)) or s < prev:
            raise ValueError(f"units must be non-overlapping spans inside the text, got {(s, e)}")
        prev = e
    return spans


def _group(n_units: int, max_units: int) -> list[tuple[int, int]]:
    """Adjacent units in equal chunks so that there are at most ``max_units`` groups."""
    size = max(1, math.ceil(n_units / max_units))
    return [(a, min(a + size, n_units)) for a in range(0, n_units, size)]


def _coalitions(m: int, samples: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean keep-masks (rows) and their regression weights for kernel SHAP."""
    if m == 1:
        return np.zeros((0, 1), dtype=bool), np.zeros(0)
    if m <= _EXACT_MAX_UNITS and (samples is None or samples >= 2**m - 2):
        codes = np.arange(1, 2**m - 1)
        keep = ((codes[:, None] >> np.arange(m)) & 1).astype(bool)
        z = keep.sum(1)
        weights = (m - 1) / (np.array([math.comb(m, int(k)) for k in z]) * z * (m - z))
        return keep, weights
    n = samples if samples is not None else max(4 * m, 64)
    rng = np.random.default_rng(seed)
    sizes = np.arange(1, m)
    p = (m - 1) / (sizes * (m - sizes))
    half = (n + 1) // 2
    drawn = rng.choice(sizes, size=half, p=p / p.sum())
    keep = np.zeros((2 * half, m), dtype=bool)
    for r, k in enumerate(drawn):
        idx = rng.permutation(m)[:k]
        keep[2 * r, idx] = True
        keep[2 * r + 1] = ~keep[2 * r]  # complementary pair: lowers variance
    keep = keep[:n]
    return keep, np.ones(n)


def _fit(
    keep: np.ndarray, y: np.ndarray, weights: np.ndarray | None, full: float, empty: float
) -> np.ndarray:
    """Weighted least squares; full/empty coalitions pinned by large weights (efficiency)."""
    m = keep.shape[1]
    if len(y) == 0:
        return np.full(m, full - empty)
    w = np.ones(len(y)) if weights is None else weights / weights.mean()
    big = 1e4 * len(y)
    x = np.vstack([np.ones((1, m)), np.zeros((1, m)), keep.astype(np.float64)])
    x = np.hstack([np.ones((len(x), 1)), x])
    t = np.concatenate([[full, empty], y])
    sw = np.sqrt(np.concatenate([[big, big], w]))
    # small ridge on phi (not the intercept): keeps few-sample fits from exploding
    ridge = math.sqrt(1e-3 * len(y)) * np.eye(m + 1)[1:]
    a = np.vstack([x * sw[:, None], ridge])
    b = np.concatenate([t * sw, np.zeros(m)])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    return np.asarray(coef[1:], dtype=np.float64)


def _token_scores(
    offsets: np.ndarray, spans: list[tuple[int, int]], unit_scores: np.ndarray
) -> np.ndarray:
    """Each token takes the score of the unit containing its first character (0 if none)."""
    if len(offsets) == 0 or not spans:
        return np.zeros(len(offsets), dtype=np.float32)
    starts = np.array([s for s, _ in spans])
    ends = np.array([e for _, e in spans])
    tok = offsets[:, 0]
    idx = np.searchsorted(starts, tok, side="right") - 1
    ok = (idx >= 0) & (tok < ends[np.clip(idx, 0, None)])
    out = np.where(ok, unit_scores[np.clip(idx, 0, None)], 0.0)
    return out.astype(np.float32)
