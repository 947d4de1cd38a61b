"""The coarse-to-fine compression step: score every part, allocate one budget, cut, reorder.

Called by :class:`promptsieve.compressor.Compressor` when ``CompressorConfig.coarse_to_fine``
is on. Parts holding few-shot demonstrations are not handled here: they keep the
demonstration-level path (whole demonstrations by their mean score, then words), which the
benchmark shows is what few-shot and GSM8K prompts need (``python -m
benchmarks.default_scorer``: scored by the sentence scorer, GSM8K demonstrations were thinned
instead of dropped whole).
"""

from __future__ import annotations

import bisect
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from promptsieve._allocate import PASSAGE, SENTENCE, WORD, PartScores, plan, prune_in_order
from promptsieve._passages import Structure, structure
from promptsieve.proxy import Scorer, TokenScores
from promptsieve.prune import Budget, PruneResult
from promptsieve.segment import Segmentation

__all__ = ["CoarseResult", "coarse_prune", "level_counts", "score_part", "whole_groups"]

log = logging.getLogger(__name__)

_BLANK_RUN = re.compile(r"\n[ \t]*\r?\n\s*")


@dataclass(frozen=True)
class CoarseResult:
    """One part after the coarse-to-fine cut."""

    result: PruneResult
    scores: PartScores
    token_scores: TokenScores
    #: per unit: "" (kept), "passage", "sentence" or "word" — what it was dropped as
    dropped_as: tuple[str, ...]

    @property
    def decisions(self) -> dict[str, int]:
        """Passages, sentences and words dropped (:func:`level_counts`)."""
        return level_counts(self.scores.seg, self.scores.struct, self.dropped_as)


def whole_groups(dropped: Iterable[int], members: Counter[int]) -> tuple[int, int]:
    """``(groups gone whole, units gone from groups partly kept)`` for the group index of
    each dropped unit (``-1``: in no group, counted as a unit); ``members``: units per group.
    """
    gone = Counter(dropped)
    whole = sum(1 for g, n in gone.items() if g >= 0 and n == members[g])
    return whole, sum(n for g, n in gone.items() if g < 0 or n != members[g])


def level_counts(seg: Segmentation, struct: Structure, dropped_as: Sequence[str]) -> dict[str, int]:
    """What a coarse-to-fine cut dropped, counted at each level (``Compression.decisions``).

    ``{"passage": passages dropped whole, "sentence": sentences of kept passages dropped
    whole (by the sentence stage, or by word thinning that reached the sentence's last
    word), "word": words dropped from sentences partly kept}``; protected text is not
    counted (it goes with a passage, or stays where a sentence went); levels with nothing
    dropped are left out.
    """
    sentence_of = struct.sentence_of
    passages = {
        int(struct.passage_of[sentence_of[i]])
        for i, kind in enumerate(dropped_as)
        if kind == PASSAGE and sentence_of[i] >= 0
    }
    free = [not u.protected for u in seg.units]
    rest = [
        int(sentence_of[i])
        for i, kind in enumerate(dropped_as)
        if kind and free[i] and (kind != PASSAGE or sentence_of[i] < 0)
    ]
    members = Counter(int(s) for s, f in zip(sentence_of, free, strict=True) if f and s >= 0)
    sentences, words = whole_groups(rest, members)
    counts = {PASSAGE: len(passages), SENTENCE: sentences, WORD: words}
    return {k: n for k, n in counts.items() if n}


def score_part(
    seg: Segmentation,
    scorer: Scorer,
    question: str | None,
    language: str,
    *,
    whole: bool = False,
    keep_protected: bool = False,
) -> tuple[PartScores, TokenScores]:
    """Token scores of one part pooled to units, sentences and passages.

    Sentence relevance uses the scorer's own ``pool`` when it has one (the relevance scorer's
    learned mean/max pooling), else the mean token score. A passage scores as its best
    sentence, so one answer-bearing sentence keeps its passage ahead of distractors.
    ``whole``: the part is one passage (a retrieved document), blank lines or not.
    ``keep_protected``: protected units (numbers, URLs, code, quotes, ...) belong to no
    sentence, so the allocator never drops them, not even with their passage or sentence
    (the word path's promise); off, they go with a passage dropped whole.
    """
    st = structure(seg, language)
    if whole and len(st.passages) > 1:
        span = (st.passages[0][0], st.passages[-1][1])
        st = Structure((span,), st.sentences, np.zeros_like(st.passage_of), st.sentence_of)
    if keep_protected:
        prot = np.fromiter((u.protected for u in seg.units), dtype=bool, count=len(seg.units))
        if prot.any():
            st = Structure(
                st.passages, st.sentences, st.passage_of, np.where(prot, -1, st.sentence_of)
            )
    spans = [(u.start, u.end) for u in seg.units]
    ts = scorer.score(seg.text, question=question, units=spans)
    units = np.asarray(ts.unit_scores(spans), dtype=np.float64)
    pool: Callable[[TokenScores, Sequence[tuple[int, int]]], np.ndarray] | None = getattr(
        scorer, "pool", None
    )
    if pool is not None:
        sents = np.asarray(pool(ts, list(st.sentences)), dtype=np.float64)
    else:
        sents = np.asarray(ts.unit_scores(list(st.sentences)), dtype=np.float64)
    passages = np.full(len(st.passages), -np.inf)
    if len(sents):
        np.maximum.at(passages, st.passage_of, sents)
    floor = float(sents.min()) if len(sents) else 0.0
    passages = np.where(np.isfinite(passages), passages, floor)
    return PartScores(seg, st, units, sents, passages), ts


def coarse_prune(
    scored: Sequence[tuple[PartScores, TokenScores]],
    budget: Budget,
    count: Callable[[str], int],
    *,
    passage_weight: float,
    word_thinning: bool,
    reorder: bool,
    questions: Sequence[str | None] | None = None,
) -> list[CoarseResult]:
    """Allocate ``budget`` over the scored parts and cut each (see :mod:`_allocate`).

    ``questions``: each part's question (what its passages were ranked against), for
    ``reorder`` (see :func:`_reorder`); ``None``: the segmenter's question only."""
    parts = [ps for ps, _ in scored]
    pl = plan(parts, budget, count, passage_weight=passage_weight, word_thinning=word_thinning)
    out: list[CoarseResult] = []
    for k, (ps, ts) in enumerate(scored):
        b = pl.budgets[k]
        if b is None:
            idx = tuple(range(len(ps.seg.units)))
            n = count(ps.seg.text)
            res = PruneResult(ps.seg.text, idx, (), n, n, 0, 0)
        else:
            res = prune_in_order(ps.seg, pl.orders[k], b, count)
        stage_of: dict[int, str] = {}
        for item, stage in zip(pl.orders[k], pl.stages[k], strict=True):
            for i in item:
                stage_of.setdefault(i, stage)
        gone = set(res.dropped)
        dropped_as = tuple(
            stage_of.get(i, WORD) if i in gone else "" for i in range(len(ps.seg.units))
        )
        if reorder and res.dropped:
            res = _reorder(ps, res, gone, questions[k] if questions is not None else "")
        out.append(CoarseResult(res, ps, ts, dropped_as))
    return out


def passage_of_units(st: Structure, seg: Segmentation) -> np.ndarray:
    """The passage index of each unit: (n_units,) int64, ``-1`` for a unit in no sentence.
    A protected unit that ``keep_protected`` took out of its sentence still belongs to the
    passage it sits in (the block it is printed in), found by its offset."""
    has = st.sentence_of >= 0
    out = np.full(len(seg.units), -1, dtype=np.int64)
    out[has] = st.passage_of[st.sentence_of[has]]
    starts = [a for a, _ in st.passages]
    for i in np.nonzero(~has)[0]:
        u = seg.units[int(i)]
        if u.protected:
            out[i] = bisect.bisect_right(starts, u.start) - 1
    return out


def _reorder(ps: PartScores, res: PruneResult, gone: set[int], question: str | None) -> PruneResult:
    """Kept passages most relevant first (LongLLMLingua's document reordering).

    Only passages before the one holding the part's question move; that one and any after it
    (an instruction after the question) keep their place. The question's passage is the
    segmenter's question, else the last verbatim occurrence of ``question`` in the part; a
    part whose question is elsewhere (a separate message or part) has all its passages
    ranked. Skipped (logged): without any question (``None``: the passages were ranked by
    query-free importance, and one of them may be the question), or when the output's
    blank-line blocks do not match the kept passages one to one.
    """
    st, seg = ps.struct, ps.seg
    if question is None and seg.question is None:
        log.debug("reorder skipped: no question to rank the passages against")
        return res
    unit_passage = passage_of_units(st, seg)
    kept_idx = np.array([i for i in range(len(seg.units)) if i not in gone], dtype=np.int64)
    kept_set = {int(j) for j in unit_passage[kept_idx] if j >= 0} if len(kept_idx) else set()
    kept_passages = sorted(kept_set)
    text = res.text
    seps = list(_BLANK_RUN.finditer(text.strip()))
    body = text.strip()
    blocks = _BLANK_RUN.split(body)
    if len(blocks) != len(kept_passages) or len(blocks) < 2:
        log.debug(
            "reorder skipped: %d blocks for %d kept passages", len(blocks), len(kept_passages)
        )
        return res
    span = seg.question
    if span is None and question and (at := seg.text.rfind(question.strip())) >= 0:
        span = (at, at + len(question.strip()))
    fixed = len(blocks)
    if span is not None:
        fixed = next(
            (
                pos
                for pos, j in enumerate(kept_passages)
                if span[0] < st.passages[j][1] and span[1] > st.passages[j][0]
            ),
            len(blocks),
        )
    movable = sorted(
        range(fixed), key=lambda pos: (-float(ps.passage_scores[kept_passages[pos]]), pos)
    )
    new_blocks = [blocks[pos] for pos in movable] + blocks[fixed:]
    glue = [m.group() for m in seps]
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    joined = new_blocks[0] + "".join(g + b for g, b in zip(glue, new_blocks[1:], strict=True))
    new_text = lead + joined + trail
    return PruneResult(
        new_text,
        res.kept,
        res.dropped,
        res.tokens_before,
        res.tokens_after,
        res.compressible_before,
        res.compressible_after,
    )
