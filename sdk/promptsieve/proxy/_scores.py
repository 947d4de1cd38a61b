"""Per-token importance and the interface every scorer implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Scorer", "TokenScores"]


@dataclass(frozen=True)
class TokenScores:
    """Importance of each proxy token of ``text`` (higher = more important to keep).

    ``offsets[i]`` is the ``[start, end)`` character range of token ``i`` in ``text``;
    tokens are ordered and do not overlap. ``states`` (optional) is the proxy's vector for
    each row from the same pass; it lets the instance guard compare original and compressed
    text without another encoder pass (:meth:`pooled_states`).
    """

    text: str
    offsets: np.ndarray  # (n, 2) int64 char offsets into text
    scores: np.ndarray  # (n,) float32
    scorer: str
    states: np.ndarray | None = None  # (n, d) float32

    def pooled_states(
        self, kept: Sequence[tuple[int, int]]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``(whole, kept)``: the row states summed, weighted by characters — over all rows,
        and over the characters inside the ``kept`` spans only. ``None`` without states.

        Their cosine is the proxy's view of how much of the text the kept part still holds,
        read off the scoring pass (sums, so several parts of a prompt can be added up).
        """
        if self.states is None or len(self.scores) == 0:
            return None
        diff = np.zeros(len(self.text) + 1, dtype=np.int64)
        if len(kept):
            sp = np.asarray(kept, dtype=np.int64).reshape(-1, 2)
            np.add.at(diff, sp[:, 0], 1)
            np.add.at(diff, sp[:, 1], -1)
        inside = np.concatenate([[0], np.cumsum(np.cumsum(diff[:-1]) > 0)])
        starts, ends = self.offsets[:, 0], self.offsets[:, 1]
        whole = (ends - starts).astype(np.float64) @ self.states
        part = (inside[ends] - inside[starts]).astype(np.float64) @ self.states
        return whole, part

    def unit_scores(self, spans: Sequence[tuple[int, int]]) -> np.ndarray:
        """Per ``[start, end)`` span: the mean score of the tokens overlapping it (0 if none).

        Vectorised with binary search so pruning thousands of units stays cheap.
        """
        if len(spans) == 0:
            return np.zeros(0, dtype=np.float32)
        sp = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        n = len(self.scores)
        if n == 0:
            return np.zeros(len(sp), dtype=np.float32)
        starts = self.offsets[:, 0]
        ends = self.offsets[:, 1]
        # first token ending after the span start .. first token starting at/after span end
        lo = np.searchsorted(ends, sp[:, 0], side="right")
        hi = np.searchsorted(starts, sp[:, 1], side="left")
        hi = np.maximum(hi, lo)
        csum = np.concatenate([[0.0], np.cumsum(self.scores, dtype=np.float64)])
        count = hi - lo
        total = csum[hi] - csum[lo]
        out = np.divide(total, count, out=np.zeros(len(sp), dtype=np.float64), where=count > 0)
        return out.astype(np.float32)


@runtime_checkable
class Scorer(Protocol):
    """Scores the tokens of a text; ``fingerprint`` changes whenever the scores could."""

    name: str
    fingerprint: str

    def score(
        self,
        text: str,
        *,
        question: str | None = None,
        units: Sequence[tuple[int, int]] | None = None,
    ) -> TokenScores: ...
