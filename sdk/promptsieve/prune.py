"""Budgeted selection of units and reassembly of the kept text.

Selection rule (deterministic):

1. Whole demonstrations first. A demo's score is the mean of its units' scores. Walking the
   demos from the lowest score (ties: the later demo first), each is dropped whole while its
   estimated cost fits into what is still to be dropped; the walk stops at the first demo that
   does not fit. The best-scoring demo is never dropped whole in this step, nor is a demo
   holding a user pin (keep-marker / keep_pattern). A dropped demo takes its automatic
   protections (numbers, labels, code ...) with it.
2. Then single words: compressible units from the lowest score up; ties drop the LATER unit
   first (earlier units are kept first).
   Under ``target_tokens`` only, when dropping every word is not enough, the remaining demos'
   protected parts follow (lowest score first, pinned demos never).
3. The cut point in that drop order is found with a handful of real counts (secant steps on
   per-unit estimates, kept inside a bracket), so the result lands within about 1 % of the
   budget for prompts of a few hundred tokens; the whole text is never counted per unit.

Never emptied: a text whose compressible part is under ``MIN_TOKENS`` tokens comes back unchanged
(nothing worth saving; "hello", "ok", "Thanks!"), "drop nothing" is always a candidate cut, and
when no unit is protected the best-scoring word is never dropped.

Budgets: ``ratio`` is the share of *compressible* tokens kept. Compressible tokens are counted
by ``count`` over the text with every protected unit replaced by a space (protected units never
count toward the ratio). ``target_tokens`` is the wanted size of the whole text; when even
dropping everything droppable stays above it, everything droppable is dropped.

Reassembly keeps the original glue between two kept neighbours byte for byte. Where units were
dropped, the glue of the gap is rebuilt: unmatched brackets/quotes, the strongest punctuation
mark (sentence end > ; : > comma), the largest line break with the next line's prefix (indent,
bullet, heading marks), else one space (none between two CJK characters).
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from promptsieve._config_types import check_field_types
from promptsieve._errors import ConfigError
from promptsieve._regions import NOSPACE
from promptsieve.segment import Segmentation

__all__ = ["MIN_TOKENS", "Budget", "PruneResult", "prune"]

log = logging.getLogger(__name__)

_TOLERANCE = 0.01  # stop searching once within 1 % of the budget
_MAX_COUNTS = 12  # real counts spent on the search at most
#: Texts with fewer compressible tokens than this (by ``count``) are returned unchanged.
MIN_TOKENS = 8


@dataclass(frozen=True)
class Budget:
    """How much to keep: exactly one of ``ratio`` and ``target_tokens``."""

    ratio: float | None = None  # share of compressible tokens kept, in (0, 1]
    target_tokens: int | None = None  # total tokens wanted for the text (protected included)

    def __post_init__(self) -> None:
        """Raises ``ConfigError`` naming the type or range expected; a ratio is stored as a
        ``float`` and a token count as an ``int`` (numpy and ``fractions`` numbers fit, a bool
        does not: :func:`~promptsieve._config_types.check_field_types`, as for configs)."""
        if (self.ratio is None) == (self.target_tokens is None):
            raise ConfigError("Budget needs exactly one of ratio and target_tokens")
        check_field_types(self)
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio!r}")
        if self.target_tokens is not None and self.target_tokens <= 0:
            raise ConfigError(f"target_tokens must be > 0, got {self.target_tokens!r}")


@dataclass(frozen=True)
class PruneResult:
    text: str
    kept: tuple[int, ...]  # unit indices
    dropped: tuple[int, ...]
    tokens_before: int  # whole text, by `count`
    tokens_after: int
    compressible_before: int
    compressible_after: int


def prune(
    seg: Segmentation,
    unit_scores: np.ndarray | Sequence[float],
    budget: Budget,
    count: Callable[[str], int],
) -> PruneResult:
    """Drop the lowest-scoring units of ``seg`` until ``budget`` is met; see module docstring."""
    scores = np.asarray(unit_scores, dtype=np.float64).reshape(-1)
    units = seg.units
    if scores.shape[0] != len(units):
        raise ValueError(f"got {scores.shape[0]} scores for {len(units)} units")
    if np.isnan(scores).any():
        raise ValueError("unit_scores contain NaN")
    asm = _Assembler(seg)
    all_kept = [True] * len(units)
    tokens_before = count(seg.text)
    comp_before = count(asm.build(all_kept)[1])

    def unchanged() -> PruneResult:
        idx = tuple(range(len(units)))
        return PruneResult(
            seg.text, idx, (), tokens_before, tokens_before, comp_before, comp_before
        )

    droppable = [i for i, u in enumerate(units) if not u.protected]
    if not droppable or budget.ratio == 1.0:
        return unchanged()
    by_ratio = budget.ratio is not None
    if budget.ratio is not None:
        before, target = comp_before, budget.ratio * comp_before
    else:
        before, target = tokens_before, float(budget.target_tokens or 0)
    if before <= target or comp_before < MIN_TOKENS:
        return unchanged()

    est = _estimates(seg, count, before, by_ratio)
    order = _drop_order(seg, scores, est, before - target, by_ratio)
    if len(droppable) == len(units):  # nothing protected: the best word stays (never emptied)
        order = order[:-1]
    cum = np.concatenate([[0.0], np.cumsum([sum(est[i] for i in item) for item in order])])

    def measure(m: int) -> tuple[float, list[bool]]:
        keep = _keep_mask(len(units), order, m)
        text, comp = asm.build(keep)
        return float(count(comp if by_ratio else text)), keep

    best = _search(measure, cum, before, target, len(order))
    keep = best[1] or all_kept  # [] is the "drop nothing" cut
    text, comp = asm.build(keep)
    kept = tuple(i for i, k in enumerate(keep) if k)
    dropped = tuple(i for i, k in enumerate(keep) if not k)
    after = count(text)
    comp_after = int(best[0]) if by_ratio else count(comp)
    if after > target and not by_ratio:
        log.debug("target_tokens not reachable: %d tokens left after dropping all droppable", after)
    return PruneResult(text, kept, dropped, tokens_before, after, comp_before, comp_after)


# ---------------------------------------------------------------------------- selection


def _estimates(
    seg: Segmentation, count: Callable[[str], int], before: int, by_ratio: bool
) -> list[float]:
    """Per-unit token estimates, scaled so that they sum to the measured total."""
    cache: dict[str, int] = {}
    est: list[float] = []
    for u in seg.units:
        if by_ratio and u.protected:
            est.append(0.0)
            continue
        word = seg.text[u.start : u.end]
        n = cache.get(word)
        if n is None:
            n = cache[word] = count(" " + word) if len(word) < 64 else count(word)
        est.append(float(n))
    total = sum(est)
    scale = before / total if total > 0 else 1.0
    return [e * scale for e in est]


def _drop_order(
    seg: Segmentation, scores: np.ndarray, est: list[float], to_drop: float, by_ratio: bool
) -> list[list[int]]:
    """Items (lists of unit indices) in the order they are dropped; see module docstring."""
    units = seg.units
    members: list[list[int]] = [[] for _ in seg.demos]
    for i, u in enumerate(units):
        if u.demo is not None:
            members[u.demo].append(i)
    candidates = []
    for d, idx in enumerate(members):
        start, end = seg.demos[d]
        if not idx or any(s < end and e > start for s, e in seg.pinned):
            continue
        candidates.append((float(np.mean(scores[idx])), -d, d))
    candidates.sort()
    whole: list[int] = []
    if len(members) > 1:
        left = to_drop
        for _, _, d in candidates[: len(candidates) - (len(candidates) == len(members))]:
            cost = sum(est[i] for i in members[d])
            if cost > left:
                break
            whole.append(d)
            left -= cost
    gone = {i for d in whole for i in members[d]}
    words = [i for i, u in enumerate(units) if not u.protected and i not in gone]
    words.sort(key=lambda i: (scores[i], -i))
    order = [members[d] for d in whole] + [[i] for i in words]
    if not by_ratio:  # target_tokens: whole remaining demos can go last (their protections)
        rest = [d for _, _, d in candidates if d not in whole]
        order += [[i for i in members[d] if units[i].protected] for d in rest]
    return [item for item in order if item]


def _keep_mask(n: int, order: list[list[int]], m: int) -> list[bool]:
    keep = [True] * n
    for item in order[:m]:
        for i in item:
            keep[i] = False
    return keep


def _search(
    measure: Callable[[int], tuple[float, list[bool]]],
    cum: np.ndarray,
    before: float,
    target: float,
    n_items: int,
) -> tuple[float, list[bool]]:
    """Find the cut ``m`` in the drop order whose measured size is closest to ``target``.

    ``m = 0`` (drop nothing, size ``before``) is a candidate too: when one dropped item
    overshoots by more than keeping everything does, nothing is dropped."""
    lo, hi = 0, n_items  # measure(lo) > target is known; measure(hi) is not
    tol = max(0.5, _TOLERANCE * target)
    m = max(1, _cut_for(cum, before - target))
    seen: set[int] = {0}
    best: tuple[float, float, int, list[bool]] | None = (before - target, before, 0, [])
    if n_items == 0:
        return before, []
    for _ in range(_MAX_COUNTS):
        value, keep = measure(m)
        seen.add(m)
        err = abs(value - target)
        if best is None or (err, m) < (best[0], best[2]):
            best = (err, value, m, keep)
        if err <= tol:
            break
        if value > target:
            lo = m
            if m == n_items:  # infeasible: everything droppable is gone already
                break
        else:
            hi = m
        if hi - lo <= 1:
            if hi in seen:
                break
            m = hi
            continue
        bias = value - (before - cum[m])  # measured minus estimated
        nxt = _cut_for(cum, before + bias - target)
        m = nxt if lo < nxt < hi else (lo + hi) // 2
    assert best is not None
    return best[1], best[3]


def _cut_for(cum: np.ndarray, amount: float) -> int:
    """Smallest m with cum[m] >= amount (clamped to the order's length)."""
    return min(int(np.searchsorted(cum, amount, side="left")), len(cum) - 1)


# ---------------------------------------------------------------------------- reassembly

_OPENERS = {"(": ")", "[": "]", "{": "}", "“": "”", "‘": "’", "«": "»", "「": "」", "『": "』"}
_CLOSERS = {v: k for k, v in _OPENERS.items()}
_QUOTES = "\"'`"
_RANKS = {
    **dict.fromkeys(".!?…。！？", 3),
    **dict.fromkeys(";:；：", 2),
    **dict.fromkeys(",，、", 1),
}
_NEWLINES = re.compile(r"\r\n|\r|\n")
_LINE_PREFIX = re.compile(r"[ \t]*(?:(?:[-*+•>]|#{1,6})[ \t]+)*")


class _Assembler:
    """Rebuilds text from a keep-mask: original glue between kept neighbours, rebuilt glue
    across gaps. Also returns the compressible portion (protected units -> one space)."""

    def __init__(self, seg: Segmentation) -> None:
        self.seg = seg
        text = seg.text
        units = seg.units
        self.words = [text[u.start : u.end] for u in units]
        bounds = [0, *(x for u in units for x in (u.start, u.end)), len(text)]
        self.glue = [text[bounds[2 * k] : bounds[2 * k + 1]] for k in range(len(units) + 1)]
        self.protected = [u.protected for u in units]
        self._memo: dict[tuple[int, int], str] = {}  # gap glue, shared by the search's builds
        # Glue inside a protected range (the question's final "?") is locked: kept verbatim
        # next to its kept unit. lock_pre/lock_suf: locked chars at the start/end of each glue.
        self.lock_pre = [0] * len(self.glue)
        self.lock_suf = [0] * len(self.glue)
        starts = [a for a, _ in seg.protected]
        for k in range(len(self.glue)):
            gs, ge = bounds[2 * k], bounds[2 * k + 1]
            if ge <= gs:
                continue
            j = bisect.bisect_right(starts, gs) - 1
            if j >= 0 and seg.protected[j][1] > gs:
                self.lock_pre[k] = min(seg.protected[j][1], ge) - gs
            j = bisect.bisect_left(starts, ge) - 1
            if j >= 0 and starts[j] >= gs and seg.protected[j][1] >= ge:
                self.lock_suf[k] = min(ge - starts[j], ge - gs - self.lock_pre[k])

    def build(self, keep: list[bool]) -> tuple[str, str]:
        words, glue, prot = self.words, self.glue, self.protected
        out: list[str] = []
        comp: list[str] = []
        prev = -1  # index of the last kept unit
        for k, kept in enumerate(keep):
            if not kept:
                continue
            if prev == k - 1:
                g = glue[k]
                out.append(g)
                if not (prev >= 0 and prot[prev] and prot[k]):
                    comp.append(g)
            else:
                g = self._compose(prev, k)
                out.append(g)
                comp.append(g)
            out.append(words[k])
            comp.append(" " if prot[k] else words[k])
            prev = k
        n = len(keep)
        g = glue[n] if prev == n - 1 else self._compose(prev, n)
        out.append(g)
        comp.append(g)
        text = "".join(out)
        if prev < 0:
            text = text.strip()
        return text, "".join(comp)

    def _compose(self, prev: int, nxt: int) -> str:
        """Glue for the gap between kept units ``prev`` and ``nxt`` (-1 / n: text edges)."""
        key = (prev, nxt)
        cached = self._memo.get(key)
        if cached is not None:
            return cached
        glues = self.glue[prev + 1 : nxt + 1]
        at_start, at_end = prev < 0, nxt >= len(self.words)
        if not (at_start or at_end) and all(g == " " for g in glues):
            self._memo[key] = " "  # the common case: words dropped inside a line
            return " "
        pre = suf = ""
        if not at_start and self.lock_pre[prev + 1]:
            pre, glues[0] = glues[0][: self.lock_pre[prev + 1]], glues[0][self.lock_pre[prev + 1] :]
        if not at_end and self.lock_suf[nxt]:
            cut = len(glues[-1]) - self.lock_suf[nxt]
            glues[-1], suf = glues[-1][:cut], glues[-1][cut:]
        out = self._memo[key] = pre + self._rebuild(glues, prev, nxt) + suf
        return out

    def _rebuild(self, glues: list[str], prev: int, nxt: int) -> str:
        at_start, at_end = prev < 0, nxt >= len(self.words)
        consumed = (-1, 0, 0)  # (glue index, start, end) taken verbatim as a line prefix
        nl_glues = [i for i, g in enumerate(glues) if "\n" in g or "\r" in g]
        if nl_glues:
            best = max(nl_glues, key=lambda i: (len(_NEWLINES.findall(glues[i])), i))
            g = glues[best]
            first = min(p for p in (g.find("\n"), g.find("\r")) if p >= 0)
            last = max(g.rfind("\n"), g.rfind("\r")) + 1
            last_g = glues[nl_glues[-1]]
            after = max(last_g.rfind("\n"), last_g.rfind("\r")) + 1
            prefix = _LINE_PREFIX.match(last_g, after)
            assert prefix is not None
            consumed = (nl_glues[-1], after, prefix.end())
            nl = "".join(c for c in g[first:last] if c in "\r\n")
            ws = ("" if at_start else nl) + prefix.group()
        elif at_start:
            prefix = _LINE_PREFIX.match(glues[0])
            assert prefix is not None
            consumed = (0, 0, prefix.end())
            ws = prefix.group()
        else:
            ws = " " if any(_has_space(g) for g in glues) else ""
        if at_end:
            tail = glues[-1]
            ws = tail[len(tail.rstrip()) :]

        opens: list[str] = []
        closers: list[str] = []
        mark, rank = "", 0
        for gi, g in enumerate(glues):
            for ci, c in enumerate(g):
                if gi == consumed[0] and consumed[1] <= ci < consumed[2]:
                    continue
                if c in _QUOTES:
                    before = g[ci - 1] if ci > 0 else ("" if at_start and gi == 0 else "w")
                    if opens and opens[-1] == c:
                        opens.pop()
                    elif before == "" or before.isspace() or before in _OPENERS:
                        opens.append(c)
                    else:
                        closers.append(c)
                elif c in _OPENERS:
                    opens.append(c)
                elif c in _CLOSERS:
                    if opens and opens[-1] == _CLOSERS[c]:
                        opens.pop()
                    else:
                        closers.append(c)
                elif _RANKS.get(c, 0) > rank:
                    mark, rank = c, _RANKS[c]
        if at_start:
            return ws + "".join(opens)
        if at_end:
            return "".join(closers) + mark + ws
        if not ws and not (
            NOSPACE.match(self.words[prev][-1]) and NOSPACE.match(self.words[nxt][0])
        ):
            ws = " "  # never merge two kept words
        return "".join(closers) + mark + ws + "".join(opens)


def _has_space(g: str) -> bool:
    return any(c.isspace() for c in g)
