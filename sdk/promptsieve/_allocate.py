"""Coarse-to-fine budget: whole passages first, then whole sentences, then words.

The scheme follows LongLLMLingua's coarse-to-fine compression (Jiang et al., ACL 2024,
arXiv 2310.06839): rank documents by relevance to the question, then sentences, and only
then thin tokens. Here one budget is allocated top-down over every compressible text part of
a prompt, in three stages, each walking its items from the least relevant up:

1. **Passages** (:mod:`promptsieve._passages`), by passage score (the best sentence score
   of the passage). A passage is dropped whole while its cost fits into what is still to be
   dropped; the walk stops at the first one that does not fit. Never dropped whole: the best
   passage of the prompt, a passage holding the final question, or a user pin (keep-marker
   / ``keep_patterns``). A passage dropped whole takes its automatic protections (numbers,
   URLs, ...) with it, as a dropped demonstration does; otherwise protected text stays.
   The best-scoring word of the best passage is never dropped, so a prompt is never emptied.
2. **Sentences** of the passages still kept, by sentence key (``sentence score +
   passage_weight × passage score``), the same fit-then-stop walk.
3. **Words**, only inside kept sentences: the words of the lowest-keyed sentence first
   (lowest word score first), then the next sentence's. With ``word_thinning=False`` this
   stage drops whole sentences instead (the budget is then met to a sentence).

Ties drop the later item first. The walk runs on per-unit token estimates and yields every
part's own budget; each part is then cut exactly by :func:`prune_in_order` — the same
measured search and glue rebuilding as :func:`promptsieve.prune.prune` — over the part's share
of the same drop order, so the whole prompt lands within a few per cent of the budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from promptsieve._passages import Structure
from promptsieve.prune import (
    MIN_TOKENS,
    Budget,
    PruneResult,
    _Assembler,
    _estimates,
    _keep_mask,
    _search,
)
from promptsieve.segment import Segmentation

__all__ = ["PartScores", "Plan", "plan", "prune_in_order"]

log = logging.getLogger(__name__)

#: what a dropped unit was dropped as (for the heat map and ``Compression.decisions``)
PASSAGE, SENTENCE, WORD = "passage", "sentence", "word"


@dataclass(frozen=True)
class PartScores:
    """One text part ready for allocation: its units, structure and scores.

    ``unit_scores`` (n_units,), ``sentence_scores`` (n_sentences,) and ``passage_scores``
    (n_passages,) are relevance scores, higher = keep; only their order matters.
    """

    seg: Segmentation
    struct: Structure
    unit_scores: np.ndarray
    sentence_scores: np.ndarray
    passage_scores: np.ndarray


@dataclass(frozen=True)
class Plan:
    """The drop order of every part (items of unit indices, first dropped first), the stage of
    each item, and each part's budget for :func:`prune_in_order`."""

    orders: tuple[tuple[tuple[int, ...], ...], ...]
    stages: tuple[tuple[str, ...], ...]
    budgets: tuple[Budget | None, ...]  # None: the part stays untouched


@dataclass(frozen=True)
class _Item:
    part: int
    units: tuple[int, ...]
    cost: float
    stage: str


def plan(
    parts: Sequence[PartScores],
    budget: Budget,
    count: Callable[[str], int],
    *,
    passage_weight: float = 0.5,
    word_thinning: bool = True,
) -> Plan:
    """Allocate ``budget`` over ``parts`` top-down (see module docstring).

    ``budget.ratio`` keeps that share of all parts' compressible tokens (protected text does
    not count, as in ``prune``); ``budget.target_tokens`` is the wanted total size of all
    parts' texts together. Raises ``ValueError`` on scores of the wrong shape or with NaN.
    """
    by_ratio = budget.ratio is not None
    sizes: list[int] = []  # measured size of each part (compressible or whole text)
    ests: list[list[float]] = []
    for p in parts:
        _check(p)
        asm = _Assembler(p.seg)
        size = count(asm.build([True] * len(p.seg.units))[1]) if by_ratio else count(p.seg.text)
        sizes.append(size)
        ests.append(_estimates(p.seg, count, size, by_ratio) if p.seg.units else [])
    total = float(sum(sizes))
    if budget.ratio is not None:
        need = (1.0 - budget.ratio) * total
    else:
        need = total - float(budget.target_tokens or 0)
    items = _order(parts, ests, need, passage_weight, word_thinning)
    dropped = [0.0] * len(parts)
    left = need
    for it in items:  # the estimated cut of the global order
        if left <= 0:
            break
        dropped[it.part] += it.cost
        left -= it.cost
    orders: list[tuple[tuple[int, ...], ...]] = []
    stages: list[tuple[str, ...]] = []
    budgets: list[Budget | None] = []
    for k in range(len(parts)):
        mine = [it for it in items if it.part == k]
        orders.append(tuple(it.units for it in mine))
        stages.append(tuple(it.stage for it in mine))
        if dropped[k] <= 0 or sizes[k] == 0:
            budgets.append(None)
        elif by_ratio:
            budgets.append(Budget(ratio=float(min(1.0, max(1e-3, 1.0 - dropped[k] / sizes[k])))))
        else:
            budgets.append(Budget(target_tokens=max(1, round(sizes[k] - dropped[k]))))
    return Plan(tuple(orders), tuple(stages), tuple(budgets))


def _check(p: PartScores) -> None:
    n_u, n_s, n_p = len(p.seg.units), len(p.struct.sentences), len(p.struct.passages)
    for name, arr, n in (
        ("unit_scores", p.unit_scores, n_u),
        ("sentence_scores", p.sentence_scores, n_s),
        ("passage_scores", p.passage_scores, n_p),
    ):
        if np.asarray(arr).shape != (n,):
            raise ValueError(f"{name} has shape {np.asarray(arr).shape}, expected ({n},)")
        if np.isnan(np.asarray(arr, dtype=np.float64)).any():
            raise ValueError(f"{name} contain NaN")


def _order(
    parts: Sequence[PartScores],
    ests: Sequence[Sequence[float]],
    need: float,
    passage_weight: float,
    word_thinning: bool,
) -> list[_Item]:
    """The global drop order over all parts (see module docstring)."""
    # members: droppable units per (part, sentence) and per (part, passage)
    sent_units: list[list[list[int]]] = []
    pass_all: list[list[list[int]]] = []  # every unit of a passage (protected included)
    locked: list[set[int]] = []  # passages never dropped whole
    for p in parts:
        st, seg = p.struct, p.seg
        su: list[list[int]] = [[] for _ in st.sentences]
        pa: list[list[int]] = [[] for _ in st.passages]
        for i, u in enumerate(seg.units):
            s = int(st.sentence_of[i])
            if s < 0:
                continue
            pa[int(st.passage_of[s])].append(i)
            if not u.protected:
                su[s].append(i)
        lock: set[int] = set()
        for j, (a, b) in enumerate(st.passages):
            if any(s < b and e > a for s, e in seg.pinned):
                lock.add(j)
            if seg.question is not None and seg.question[0] < b and seg.question[1] > a:
                lock.add(j)
        sent_units.append(su)
        pass_all.append(pa)
        locked.append(lock)

    candidates = [  # passages with something droppable
        (float(p.passage_scores[j]), k, j)
        for k, p in enumerate(parts)
        for j in range(len(p.struct.passages))
        if any(not parts[k].seg.units[i].protected for i in pass_all[k][j])
    ]
    best = max(candidates, key=lambda c: (c[0], -c[1], -c[2]), default=None)
    if best is not None:  # never emptied: the best word of the best passage always stays
        _, bk, bj = best
        scores_b = parts[bk].unit_scores
        keep_i = max(
            (i for i in pass_all[bk][bj] if not parts[bk].seg.units[i].protected),
            key=lambda i: (float(scores_b[i]), -i),
        )
        for units in sent_units[bk]:
            if keep_i in units:
                units.remove(keep_i)
    items: list[_Item] = []
    gone: set[tuple[int, int]] = set()  # (part, passage) dropped whole
    left = need
    if len(candidates) > 1:
        for score, k, j in sorted(candidates, key=lambda c: (c[0], -c[1], -c[2])):
            if (score, k, j) == best or j in locked[k]:
                continue
            units = pass_all[k][j]
            cost = sum(ests[k][i] for i in units)
            if cost > left:
                break
            items.append(_Item(k, tuple(units), cost, PASSAGE))
            gone.add((k, j))
            left -= cost

    sentences = []
    for k, p in enumerate(parts):
        for s, units in enumerate(sent_units[k]):
            j = int(p.struct.passage_of[s])
            if not units or (k, j) in gone:
                continue
            key = float(p.sentence_scores[s]) + passage_weight * float(p.passage_scores[j])
            sentences.append((key, k, s))
    sentences.sort(key=lambda c: (c[0], -c[1], -c[2]))
    whole: set[tuple[int, int]] = set()
    for _, k, s in sentences:
        units = sent_units[k][s]
        cost = sum(ests[k][i] for i in units)
        if cost > left:
            break
        items.append(_Item(k, tuple(units), cost, SENTENCE))
        whole.add((k, s))
        left -= cost

    rest = [(key, k, s) for key, k, s in sentences if (k, s) not in whole]
    for _, k, s in rest:
        units = sent_units[k][s]
        if not word_thinning:
            items.append(_Item(k, tuple(units), sum(ests[k][i] for i in units), SENTENCE))
            continue
        scores = parts[k].unit_scores
        for i in sorted(units, key=lambda i: (float(scores[i]), -i)):
            items.append(_Item(k, (i,), ests[k][i], WORD))
    return items


def prune_in_order(
    seg: Segmentation,
    order: Sequence[Sequence[int]],
    budget: Budget,
    count: Callable[[str], int],
) -> PruneResult:
    """Drop the items of ``order`` (first first) until ``budget`` is met, measured exactly.

    The counterpart of :func:`promptsieve.prune.prune` for a given drop order: the cut point is
    found with a handful of real counts and the glue is rebuilt the same way. Units in no item
    are never dropped.
    """
    units = seg.units
    asm = _Assembler(seg)
    tokens_before = count(seg.text)
    comp_before = count(asm.build([True] * len(units))[1])
    by_ratio = budget.ratio is not None
    if budget.ratio is not None:
        before, target = comp_before, budget.ratio * comp_before
    else:
        before, target = tokens_before, float(budget.target_tokens or 0)
    items = [list(item) for item in order if item]
    if before <= target or not items or comp_before < MIN_TOKENS:
        idx = tuple(range(len(units)))
        return PruneResult(
            seg.text, idx, (), tokens_before, tokens_before, comp_before, comp_before
        )
    est = _estimates(seg, count, before, by_ratio)
    cum = np.concatenate([[0.0], np.cumsum([sum(est[i] for i in item) for item in items])])

    def measure(m: int) -> tuple[float, list[bool]]:
        keep = _keep_mask(len(units), items, m)
        text, comp = asm.build(keep)
        return float(count(comp if by_ratio else text)), keep

    value, keep = _search(measure, cum, before, target, len(items))
    keep = keep or [True] * len(units)  # [] is the search's "drop nothing" cut
    text, comp = asm.build(keep)
    kept = tuple(i for i, k in enumerate(keep) if k)
    dropped = tuple(i for i, k in enumerate(keep) if not k)
    after = count(text)
    comp_after = int(value) if by_ratio else count(comp)
    return PruneResult(text, kept, dropped, tokens_before, after, comp_before, comp_after)
