"""The compression facade: segment → score on the proxy → prune to a budget.

This is the only place that knows how the three steps fit together; adapters and the
sieve call :meth:`Compressor.compress` and never touch segments or scores themselves.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, overload

import numpy as np

from promptsieve._allocate import PartScores
from promptsieve._coarse import coarse_prune, score_part, whole_groups
from promptsieve._config_types import (
    check_field_types,
    check_instance,
    check_members,
    check_not_config,
)
from promptsieve._errors import ConfigError
from promptsieve._passages import split_passages
from promptsieve.prompt import COMPRESSIBLE_ROLES, Message, Span, TextPart, as_messages
from promptsieve.proxy import (
    AttributionScorer,
    HeadScorer,
    Proxy,
    ProxyConfig,
    Scorer,
    SentenceScorer,
    TokenScores,
)
from promptsieve.proxy.relevance import RelevanceScorer
from promptsieve.prune import Budget, PruneResult, prune
from promptsieve.segment import Segmentation, SegmentConfig, Unit, check_text, segment
from promptsieve.tokens import TokenCounter

__all__ = ["Compression", "Compressor", "CompressorConfig", "Decision", "Explanation"]

log = logging.getLogger(__name__)

ScorerName = Literal["head", "attribution", "sentence", "relevance"]
_SCORERS = ("head", "attribution", "sentence", "relevance")
#: The default's scorers (``CompressorConfig(scorer=None)``), picked by the benchmarks:
#: parts without demonstrations / parts holding demonstrations.
DEFAULT_SCORER: ScorerName = "sentence"
DEFAULT_DEMO_SCORER: ScorerName = "head"

_MIN_RATIO = 1e-3  # the smallest share of compressible tokens a target_tokens budget asks for
_FIT_TOLERANCE = 0.02  # target_tokens: stop refining within 2 % (the promise is ±5 %)
_FIT_STEPS = 8  # target_tokens: re-prunes at most
_QUERY_CONTEXT = 300  # characters of the question's block on each side (coarse path query)
#: Languages ``CompressorConfig(language=...)`` accepts as a primary subtag: every ISO 639-1
#: code, and any three-letter ISO 639-2/3 code (sentencex gives a language without rules of
#: its own English rules, as it did before). Two-letter codes outside ISO 639-1 are refused
#: (``xx``, ``jp``): they are typos far more often than intent.
_ISO_639_1 = frozenset(
    """
    aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv
    cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr
    ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw
    ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mo mr ms mt my na nb nd ne ng nl nn no nr
    nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg sh si sk sl sm sn so
    sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo
    xh yi yo za zh zu
""".split()  # noqa: SIM905 - a table of codes reads best as words
)
#: Common mistakes and old spellings, for the error message.
_LANGUAGE_HINTS = {"jp": "ja", "iw": "he", "in": "id", "ji": "yi", "cn": "zh", "gr": "el"}


def _checked_language(code: object) -> str:
    """The code sentencex is given: the primary subtag of ``code`` in lower case (``"en-US"``
    → ``"en"``, ``"DE"`` → ``"de"``: sentencex matches codes case-sensitively and gives a
    region it does not list English rules). Raises :class:`ConfigError` for anything that is
    not a language tag (BCP 47 shape, ``-`` or ``_`` between subtags)."""
    if not isinstance(code, str):
        raise ConfigError(f"language must be a string such as 'en', not {type(code).__name__}")
    primary, *rest = code.strip().lower().replace("_", "-").split("-")
    shaped = primary.isascii() and primary.isalpha() and len(primary) in (2, 3)
    subtags = all(s.isascii() and s.isalnum() and 1 <= len(s) <= 8 for s in rest)
    if shaped and subtags and (len(primary) == 3 or primary in _ISO_639_1):
        return primary
    hint = _LANGUAGE_HINTS.get(primary)
    raise ConfigError(
        f"CompressorConfig(language=...) must be a language code such as 'en', 'de', 'zh' or "
        f"'pt-BR' (ISO 639; its primary subtag picks the sentence rules), got {code!r}"
        + (f"; did you mean {hint!r}?" if hint else "")
    )


@dataclass(frozen=True)
class CompressorConfig:
    """Settings that change what a compression produces (they go into the fingerprint).

    **The default** (``scorer=None``) is picked by the benchmarks, per text part:

    * parts without few-shot demonstrations (retrieved documents, passages, long context,
      needles) get the cosine ``sentence`` scorer with the coarse-to-fine budget, ranked
      against the question's block, protected text kept (``keep_protected``). Multi-document
      QA test articles: the gold answer stays in 0.91 of 100 items at 4x, the old default
      ``head`` 0.32 (``python -m benchmarks.answer_retention``); on the 1.5B target the same
      scorer and budget answer 56 % / 57 % at 2x / 4x against 50 % uncompressed and the
      head's 40 % / 29 % (``promptsieve bench --profile headline``, method ``coarse``;
      McNemar vs head p = 0.004 / < 0.001); needles and
      one-string multi-document prompts: ``python -m benchmarks.default_scorer``
      (``benchmarks/results/default_scorer.md``, paired against ``head``);
    * parts holding demonstrations keep the ``head`` scorer's demonstration-level path, byte
      for byte the old default: scored by the sentence scorer instead, GSM8K's
      demonstrations were thinned instead of dropped whole (clean prompts 0/24 vs 19/24 at
      0.25, McNemar p = 4e-6, same benchmark).

    An explicit ``scorer`` is used for every part, with ``coarse_to_fine`` following it (on
    for ``relevance`` only) unless set: ``CompressorConfig(scorer="head")`` is the old default
    exactly, fingerprint included. Costs of the default: about 2.4x the head's CPU time per
    token (see the README, "The default scorer"). The sieve's instance guard tests its
    ``Compression.passage_similarity`` (passages dropped whole leave both sides of the cosine;
    ``python -m benchmarks.guard_calibration``).
    """

    ratio: float = 0.5
    #: "head" | "attribution" | "sentence" | "relevance"; None: the default described above.
    scorer: ScorerName | None = None
    #: Model whose tokenizer counts the budget (tiktoken for OpenAI names, else an estimate).
    model: str | None = None
    #: Share of a word's score taken from its sentence's mean (0 = pure word-level pruning).
    sentence_weight: float = 0.7
    roles: frozenset[str] = COMPRESSIBLE_ROLES
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    #: Coarse-to-fine budget (``promptsieve._allocate``): whole passages, then sentences, then
    #: words inside kept sentences. ``None``: on for the default and the ``relevance``
    #: scorer, off for an explicit ``head``, ``attribution`` or ``sentence`` scorer.
    #: Parts holding few-shot demonstrations keep the demonstration-level path either way.
    coarse_to_fine: bool | None = None
    #: Sentence key = sentence score + ``passage_weight`` x its passage's score.
    passage_weight: float = 0.5
    #: Thin words inside the least relevant kept sentence to meet the budget exactly; off:
    #: whole sentences only (the budget is then met to a sentence, not within 5 %).
    word_thinning: bool = True
    #: Put kept passages most relevant first, as LongLLMLingua does (off: order can matter).
    #: The passage holding the question, and any after it, stay in place. Applied only when
    #: the compression drops something (a prompt that compresses to itself goes out as it
    #: was) and there is a question to rank against (an explicit ``question=`` or one the
    #: segmenter finds). Coarse path only: ``True`` with the coarse-to-fine budget off
    #: raises ConfigError.
    reorder: bool = False
    #: Language code for sentence boundaries (sentencex; CJK full stops work under any code).
    language: str = "en"
    #: Coarse path: each text part is one passage (a caller that sends one retrieved
    #: document per part), not one passage per blank-line block of the part. ``True`` with
    #: the coarse-to-fine budget off raises ConfigError.
    part_passages: bool = False
    #: Coarse path: protected text (numbers, URLs, code, quotes, ...) stays even when its
    #: passage or sentence is dropped, as on the word path. ``None``: on for the default,
    #: off for an explicit scorer (a passage dropped whole takes its protections with it).
    keep_protected: bool | None = None

    def __post_init__(self) -> None:
        check_field_types(self)
        Budget(ratio=self.ratio)  # raises ValueError with the allowed range
        if not 0.0 <= self.sentence_weight <= 1.0:
            raise ConfigError(f"sentence_weight must be in [0, 1], got {self.sentence_weight!r}")
        _check_scorer(self.scorer)
        if not 0.0 <= self.passage_weight <= 10.0:
            raise ConfigError(f"passage_weight must be in [0, 10], got {self.passage_weight!r}")
        if not self.roles or not all(isinstance(r, str) and r.strip() for r in self.roles):
            raise ConfigError(
                "CompressorConfig(roles=...) must name at least one message role (non-empty "
                f"strings; default: {', '.join(sorted(COMPRESSIBLE_ROLES))}), got {self.roles!r}"
            )
        object.__setattr__(self, "language", _checked_language(self.language))
        off = [f"{f}=True" for f in ("reorder", "part_passages") if getattr(self, f)]
        if off and not self.coarse:
            raise ConfigError(
                f"CompressorConfig({', '.join(off)}) works on the coarse-to-fine budget, which "
                + (
                    "coarse_to_fine=False turns off: set coarse_to_fine=True or leave it unset"
                    if self.coarse_to_fine is False
                    else f"is off for scorer={self.scorer!r}: set coarse_to_fine=True, or use "
                    "the default or the 'relevance' scorer"
                )
            )

    @property
    def scorer_name(self) -> ScorerName:
        """The scorer of parts without demonstrations (``sentence`` by default)."""
        return self.scorer or DEFAULT_SCORER

    @property
    def demo_scorer_name(self) -> ScorerName:
        """The scorer of parts holding demonstrations (``head`` by default)."""
        return self.scorer or DEFAULT_DEMO_SCORER

    def settings_key(self) -> str:
        """What besides the proxy decides the output (the ratio is a verdict's own field)."""
        base: tuple[object, ...] = (
            self.scorer_name,
            self.model,
            self.sentence_weight,
            sorted(self.roles),
            self.segment,
            # segmentation revision 2: a final query block is never taken for one more
            # demonstration (revision 1 could drop it whole); verdicts screened under
            # revision 1 are not reused
            "segment:2",
        )
        if self.demo_scorer_name != self.scorer_name:  # the default: two scorers
            base = (*base, "demos", self.demo_scorer_name)
        if not self.coarse:
            return repr(base)
        coarse: tuple[object, ...] = (
            self.passage_weight,
            self.word_thinning,
            self.reorder,
            self.language,
        )
        if self.part_passages:  # only when set: other settings keep their verdicts
            coarse = (*coarse, "part_passages")
        if self.protected_kept:  # likewise
            coarse = (*coarse, "keep_protected")
        # the instance guard tests ``passage_similarity`` on this path: verdicts screened
        # under the whole-text cosine (a smaller population of compressions) are not reused
        coarse = (*coarse, "guard:passages")
        return repr((*base, "coarse", coarse))

    @property
    def protected_kept(self) -> bool:
        """Whether the coarse path keeps protected text (see ``keep_protected``)."""
        if self.keep_protected is not None:
            return self.keep_protected
        return self.scorer is None

    @property
    def coarse(self) -> bool:
        """Whether the coarse-to-fine budget is on (see ``coarse_to_fine``)."""
        if self.coarse_to_fine is not None:
            return self.coarse_to_fine
        return self.scorer in (None, "relevance")


@dataclass(frozen=True)
class Compression:
    """The result of one compression; ``prompt`` has the shape the caller passed in."""

    prompt: str | tuple[Message, ...]
    text: str
    tokens_before: int
    tokens_after: int
    kept: tuple[Span, ...]
    dropped: tuple[Span, ...]
    timings: dict[str, float]  # seconds per stage (the CLI's --json gives timings_ms)
    scorer: str
    #: The proxy's cosine between the original and the compressed text, read off the scoring
    #: pass (pooled token states, see ``TokenScores.pooled_states``); the instance guard
    #: uses it instead of embedding both texts again. ``None`` when the scorer has no states
    #: (attribution) or nothing changed.
    similarity: float | None = None
    #: ``similarity`` over the passages the coarse-to-fine budget kept: passages dropped whole
    #: are left out of the original's side too, so the cosine measures what was thinned
    #: inside the kept text (sentences, words), not the choice of passages. Equal to
    #: ``similarity`` when no passage was dropped whole (the word and demonstration paths).
    #: The sieve's instance guard reads it first (``python -m benchmarks.guard_calibration``).
    passage_similarity: float | None = None
    #: What the coarse-to-fine budget dropped, counted at its own level: ``{"passage":
    #: passages dropped whole, "sentence": sentences of kept passages dropped whole, "word":
    #: words thinned from sentences partly kept, "demo": demonstrations dropped whole}``
    #: (counts of those units, not tokens; a level with nothing dropped is left out); empty
    #: on the word path.
    decisions: Mapping[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Tokens after / tokens before over the whole prompt (1.0 when nothing changed)."""
        return self.tokens_after / self.tokens_before if self.tokens_before else 1.0

    @property
    def tokens_saved(self) -> int:
        return self.tokens_before - self.tokens_after

    @property
    def changed(self) -> bool:
        return bool(self.dropped)


@dataclass(frozen=True)
class Decision:
    """One passage, sentence or word of an explained text: ``[start, end)`` characters, its
    relevance score, and ``status``: ``"kept"``, ``"thinned"`` (a kept sentence or passage
    that lost words), or what it was dropped as (``"passage"``, ``"sentence"``, ``"word"``,
    ``"demo"``)."""

    start: int
    end: int
    score: float
    status: str


@dataclass(frozen=True)
class Explanation:
    """:meth:`Compressor.explain_decisions`: the decisions at every level for one text."""

    text: str
    question: str | None
    ratio: float
    token_scores: TokenScores
    passages: tuple[Decision, ...]
    sentences: tuple[Decision, ...]
    words: tuple[Decision, ...]


@dataclass(frozen=True)
class _Part:
    message: int
    part: int
    seg: Segmentation
    question: str | None
    #: What the coarse path ranks passages against: ``question``, or, when the question was
    #: found in the text, the question with its blank-line block around it (see ``_query``).
    query: str | None = None


class Compressor:
    """Compresses prompts with the proxy; thread-safe, the proxy loads on first use."""

    def __init__(
        self,
        config: CompressorConfig | None = None,
        *,
        proxy: Proxy | None = None,
        scorer: Scorer | None = None,
    ):
        check_instance("Compressor", "config", config, CompressorConfig)
        check_not_config("Compressor", "proxy", proxy, ProxyConfig, "a loaded Proxy",
                         "CompressorConfig(proxy=...)")  # fmt: skip
        check_members("Compressor", "scorer", scorer, ("name", "fingerprint", "score"), "a Scorer")
        self.config = config or CompressorConfig()
        self._scorer = scorer
        self._demo_scorer: Scorer | None = None
        self._proxy = proxy
        self._lock = threading.Lock()
        self._count = TokenCounter.for_model(self.config.model)

    # -- loading ---------------------------------------------------------------------------
    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            with self._lock:
                if self._proxy is None:
                    self._proxy = Proxy.load(self.config.proxy)
        return self._proxy

    @property
    def scorer(self) -> Scorer:
        """The scorer of parts without demonstrations (``config.scorer_name``)."""
        if self._scorer is None:
            self._scorer = _make_scorer(self.config.scorer_name, self.proxy)
        return self._scorer

    @property
    def demo_scorer(self) -> Scorer:
        """The scorer of parts holding demonstrations: ``scorer`` itself, except under the
        default config (``head``, see :class:`CompressorConfig`)."""
        if self.config.demo_scorer_name == self.config.scorer_name:
            return self.scorer
        if self._demo_scorer is None:
            self._demo_scorer = _make_scorer(self.config.demo_scorer_name, self.proxy)
        return self._demo_scorer

    @property
    def fingerprint(self) -> str:
        """Proxy weights + scorer(s) + settings: a change in any of them re-screens a task."""
        raw = f"{self.scorer.fingerprint}|{self.config.settings_key()}"
        if self.demo_scorer is not self.scorer:
            raw += f"|{self.demo_scorer.fingerprint}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of the proxy's embeddings (instance guard, cosine metric)."""
        return self.proxy.similarity(a, b)

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    # -- compress --------------------------------------------------------------------------
    @overload
    def compress(
        self,
        prompt: str,
        *,
        ratio: float | None = ...,
        target_tokens: int | None = ...,
        question: str | None = ...,
    ) -> Compression: ...
    @overload
    def compress(
        self,
        prompt: Sequence[Message],
        *,
        ratio: float | None = ...,
        target_tokens: int | None = ...,
        question: str | None = ...,
    ) -> Compression: ...
    def compress(
        self,
        prompt: str | Sequence[Message],
        *,
        ratio: float | None = None,
        target_tokens: int | None = None,
        question: str | None = None,
    ) -> Compression:
        """Drop the least important units of the compressible text to meet the budget.

        ``ratio`` keeps that share of the compressible tokens; ``target_tokens`` aims at a
        total prompt size (within ±5 % whenever dropping is enough to reach it). Protected
        text (system prompts, tools, code, numbers, the final question, ...) is never altered
        (an explicit coarse-to-fine config with ``keep_protected`` off drops it with a whole
        passage).

        Raises ``ConfigError`` when ``prompt`` is neither a ``str`` nor a sequence of
        :class:`Message`, when ``ratio`` is not a number in (0, 1] or ``target_tokens`` not a
        whole number > 0, when a message holds text that is not valid Unicode (a lone
        surrogate), and when ``question`` does; the sieve catches it and sends the original
        request.
        """
        if ratio is None and target_tokens is None:
            ratio = self.config.ratio
        budget = Budget(ratio=ratio, target_tokens=target_tokens)  # validates
        t0 = time.perf_counter()
        messages, was_str = as_messages(prompt)
        for m in messages:
            check_text(m.content)  # ConfigError on lone surrogates, before any counter sees them
        _check_question(question)
        parts = self._segment(messages, question)
        t_seg = time.perf_counter()

        tokens_before = sum(self._count(m.content) for m in messages)
        ratio_eff = self._effective_ratio(budget, parts, tokens_before)
        if self.config.coarse and ratio_eff < 1.0:
            return self._compress_coarse(
                messages, was_str, parts, budget, ratio_eff, tokens_before, (t0, t_seg)
            )
        t_score = 0.0
        scored: list[tuple[_Part, np.ndarray, TokenScores]] = []
        for p in parts:
            if ratio_eff >= 1.0 or not any(not u.protected for u in p.seg.units):
                continue
            ts = time.perf_counter()
            scores, token_scores = self._unit_scores(p.seg, p.question, self._scorer_for(p))
            t_score += time.perf_counter() - ts
            scored.append((p, scores, token_scores))
        results = [prune(p.seg, s, Budget(ratio=ratio_eff), self._count) for p, s, _ in scored]
        if budget.target_tokens is not None and scored:
            results = self._fit_target(messages, scored, budget.target_tokens, ratio_eff, results)
        entries = [
            (p, scores, token_scores, result, _drop_kinds(p, result))
            for (p, scores, token_scores), result in zip(scored, results, strict=True)
        ]
        return self._compression(
            messages, was_str, entries, tokens_before, (t0, t_seg, t_score), decisions={}
        )

    def _compress_coarse(
        self,
        messages: Sequence[Message],
        was_str: bool,
        parts: Sequence[_Part],
        budget: Budget,
        ratio_eff: float,
        tokens_before: int,
        clock: tuple[float, float],
    ) -> Compression:
        """The coarse-to-fine path (``promptsieve._allocate``); demo parts keep theirs."""
        t0, t_seg = clock
        cfg = self.config
        live = [p for p in parts if any(not u.protected for u in p.seg.units)]
        demo_parts = [p for p in live if p.seg.demos]
        plain = [p for p in live if not p.seg.demos]
        if budget.ratio is not None or demo_parts:
            plain_budget = Budget(ratio=budget.ratio if budget.ratio is not None else ratio_eff)
        else:  # whole-prompt target: what the plain parts may keep besides everything else
            assert budget.target_tokens is not None
            sizes = sum(self._count(p.seg.text) for p in plain)
            other = max(0, tokens_before - sizes)
            plain_budget = Budget(target_tokens=max(1, budget.target_tokens - other))
        t_score = 0.0
        entries: list[tuple[_Part, np.ndarray, TokenScores, PruneResult, tuple[str, ...]]] = []
        counts: Counter[str] = Counter()
        if plain:
            scored = []
            for p in plain:
                ts = time.perf_counter()
                scored.append(
                    score_part(
                        p.seg,
                        self.scorer,
                        p.query,
                        cfg.language,
                        whole=cfg.part_passages,
                        keep_protected=cfg.protected_kept,
                    )
                )
                t_score += time.perf_counter() - ts
            results = coarse_prune(
                scored,
                plain_budget,
                self._count,
                passage_weight=cfg.passage_weight,
                word_thinning=cfg.word_thinning,
                reorder=cfg.reorder,
                questions=[p.question for p in plain],
            )
            for p, r in zip(plain, results, strict=True):
                entries.append((p, r.scores.unit_scores, r.token_scores, r.result, r.dropped_as))
                counts.update(r.decisions)
        for p in demo_parts:  # the demonstration-level path
            ts = time.perf_counter()
            scores, token_scores = self._unit_scores(p.seg, p.question, self.demo_scorer)
            t_score += time.perf_counter() - ts
            res = prune(p.seg, scores, Budget(ratio=ratio_eff), self._count)
            entries.append((p, scores, token_scores, res, _drop_kinds(p, res)))
            counts.update(_demo_counts(p, res))
        return self._compression(
            messages, was_str, entries, tokens_before, (t0, t_seg, t_score), decisions=counts
        )

    def _compression(
        self,
        messages: Sequence[Message],
        was_str: bool,
        entries: Sequence[tuple[_Part, np.ndarray, TokenScores, PruneResult, tuple[str, ...]]],
        tokens_before: int,
        clock: tuple[float, float, float],
        *,
        decisions: Mapping[str, int],
    ) -> Compression:
        """The result of both paths: each entry is a pruned part (its unit scores, token scores,
        prune result, and per unit the level that dropped it, ``""`` when kept); ``clock``:
        start, end of segmentation, seconds spent scoring; ``decisions``: what was dropped per
        level (the coarse-to-fine path; the word path passes none)."""
        t0, t_seg, t_score = clock
        new_texts: dict[tuple[int, int], str] = {}
        kept: list[Span] = []
        dropped: list[Span] = []
        pooled: list[tuple[np.ndarray, np.ndarray] | None] = []
        scoped: list[tuple[np.ndarray, np.ndarray] | None] = []  # over kept passages only
        for p, scores, token_scores, res, kinds in entries:
            units = p.seg.units
            new_texts[(p.message, p.part)] = res.text
            if res.dropped:
                states = token_scores.pooled_states(
                    [(units[i].start, units[i].end) for i in res.kept]
                )
                pooled.append(states)
                scoped.append(_within_kept_passages(token_scores, units, kinds, states))
            for i, u in enumerate(units):
                was_dropped = bool(kinds[i])
                kind = kinds[i] if was_dropped else ("demo" if u.demo is not None else "word")
                (dropped if was_dropped else kept).append(
                    Span(
                        message=p.message,
                        part=p.part,
                        start=u.start,
                        end=u.end,
                        text=p.seg.text[u.start : u.end],
                        score=float(scores[i]),
                        kind="sentence" if kind == "passage" else kind,  # type: ignore[arg-type]
                    )
                )
        t_prune = time.perf_counter()
        out_messages = _rebuild(messages, new_texts)
        tokens_after = sum(self._count(m.content) for m in out_messages)
        return Compression(
            prompt=out_messages[0].content if was_str else out_messages,
            text="\n\n".join(m.content for m in out_messages),
            tokens_before=tokens_before,
            tokens_after=tokens_after,
            kept=tuple(kept),
            dropped=tuple(dropped),
            timings={
                "segment": t_seg - t0,
                "score": t_score,
                "prune": t_prune - t_seg - t_score,
                "total": time.perf_counter() - t0,
            },
            scorer="+".join(dict.fromkeys(self._scorer_for(e[0]).name for e in entries))
            or self.scorer.name,
            similarity=_pooled_cosine(pooled) if dropped else None,
            passage_similarity=_pooled_cosine(scoped) if dropped else None,
            decisions={k: n for k, n in sorted(decisions.items()) if n},
        )

    def explain(
        self, text: str, *, question: str | None = None, scorer: ScorerName | None = None
    ) -> TokenScores:
        """Per-token importance of ``text`` (the heat map behind ``promptsieve explain``).

        ``scorer`` None: the scorer that compressing ``text`` would use (the demonstrations'
        scorer when the text holds demonstrations). Raises ``ConfigError`` for a scorer name
        not in ``("head", "attribution", "sentence", "relevance")`` and for a ``text`` or
        ``question`` that is not a ``str`` of valid Unicode."""
        _check_question(question)
        seg = segment(text, replace(self.config.segment, protect_question=False))
        sc = self._explain_scorer(scorer, seg)
        if question is None and seg.question is not None:
            question = seg.text[seg.question[0] : seg.question[1]]
        return sc.score(seg.text, question=question, units=[(u.start, u.end) for u in seg.units])

    def explain_decisions(
        self,
        text: str,
        *,
        question: str | None = None,
        ratio: float | None = None,
        scorer: ScorerName | None = None,
    ) -> Explanation:
        """What compressing ``text`` at ``ratio`` decides, at every level (the HTML heat map).

        Passages, sentences and words with their scores and whether each was kept or what it
        was dropped as (``"passage"``, ``"sentence"``, ``"word"``, ``"demo"``). The coarse path
        is used when ``CompressorConfig.coarse_to_fine`` is on (or ``scorer="relevance"``) and
        the text holds no demonstrations; otherwise the word path's decisions are shown.
        """
        checked = Budget(ratio=self.config.ratio if ratio is None else ratio).ratio  # validates
        assert checked is not None
        ratio = checked
        _check_question(question)
        seg = segment(text, self.config.segment)
        sc = self._explain_scorer(scorer, seg)
        coarse = (
            self.config.coarse
            if scorer in (None, self.config.scorer_name)
            else scorer == "relevance"
        )
        coarse = coarse and not seg.demos
        if question is None and seg.question is not None:
            question = seg.text[seg.question[0] : seg.question[1]]
            query = _query(seg) if coarse else question
        else:
            query = question
        ps, ts = score_part(
            seg, sc, query, self.config.language, keep_protected=self.config.protected_kept
        )
        droppable = any(not u.protected for u in seg.units)
        if coarse and droppable:
            (res,) = coarse_prune(
                [(ps, ts)],
                Budget(ratio=ratio),
                self._count,
                passage_weight=self.config.passage_weight,
                word_thinning=self.config.word_thinning,
                reorder=False,
            )
            unit_scores, dropped_as = ps.unit_scores, res.dropped_as
        else:
            unit_scores = _blend_sentences(
                ts.unit_scores([(u.start, u.end) for u in seg.units]),
                seg,
                self.config.sentence_weight,
            )
            gone: set[int] = set()
            if droppable and ratio < 1.0:
                gone = set(prune(seg, unit_scores, Budget(ratio=ratio), self._count).dropped)
            dropped_as = tuple(
                ("demo" if u.demo is not None else "word") if i in gone else ""
                for i, u in enumerate(seg.units)
            )
        return _explanation(seg.text, question, ts, ratio, ps, unit_scores, dropped_as)

    # -- helpers ---------------------------------------------------------------------------
    def _explain_scorer(self, scorer: ScorerName | None, seg: Segmentation) -> Scorer:
        _check_scorer(scorer)
        if scorer is None:
            return self.demo_scorer if seg.demos else self.scorer
        if scorer == self.config.scorer_name:
            return self.scorer
        return _make_scorer(scorer, self.proxy)

    def _segment(self, messages: Sequence[Message], question: str | None) -> list[_Part]:
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        parts: list[_Part] = []
        for i, m in enumerate(messages):
            if m.role not in self.config.roles:
                continue
            for j, part in enumerate(m.parts):
                if not isinstance(part, TextPart) or part.protected or not part.text.strip():
                    continue
                cfg = self.config.segment
                if i != last_user:  # older turns carry no final question to protect
                    cfg = replace(cfg, protect_question=False)
                seg = segment(part.text, cfg)
                q = question
                if q is None and seg.question is not None:
                    q = seg.text[seg.question[0] : seg.question[1]]
                parts.append(_Part(i, j, seg, q, question if question is not None else _query(seg)))
        if question is None:  # one question for the whole request: the final one
            final = next((p for p in reversed(parts) if p.question), None)
            q, query = (final.question, final.query) if final else (None, None)
            parts = [replace(p, question=q, query=query) for p in parts]
        return parts

    def _effective_ratio(self, budget: Budget, parts: Sequence[_Part], total: int) -> float:
        if budget.ratio is not None:
            return budget.ratio
        assert budget.target_tokens is not None
        compressible = 0
        for p in parts:
            for u in p.seg.units:
                if not u.protected:
                    compressible += self._count(p.seg.text[u.start : u.end])
        if compressible == 0:
            return 1.0
        need = total - budget.target_tokens  # tokens to remove
        return float(min(1.0, max(_MIN_RATIO, 1.0 - need / compressible)))

    def _fit_target(
        self,
        messages: Sequence[Message],
        scored: Sequence[tuple[_Part, np.ndarray, TokenScores]],
        target: int,
        ratio: float,
        results: list[PruneResult],
    ) -> list[PruneResult]:
        """Adjust the shared ratio until the whole prompt measures ``target`` tokens (±5 %).

        The first ratio comes from per-word estimates; each further step prunes every part again
        (scores are reused) and counts the rebuilt prompt with the real counter: secant steps
        inside a bracket, at most ``_FIT_STEPS`` of them. Unreachable targets keep the smallest.
        """

        def total(res: Sequence[PruneResult]) -> int:
            texts = {(p.message, p.part): r.text for (p, _, _), r in zip(scored, res, strict=True)}
            return sum(self._count(m.content) for m in _rebuild(messages, texts))

        hi_r, hi_t = 1.0, float(sum(self._count(m.content) for m in messages))
        lo_r, lo_t = 0.0, 0.0
        r, t = ratio, float(total(results))
        best = (abs(t - target), results)
        for _ in range(_FIT_STEPS):
            if abs(t - target) <= _FIT_TOLERANCE * target:
                break
            if t > target:
                hi_r, hi_t = r, t
            else:
                lo_r, lo_t = r, t
            if hi_r <= _MIN_RATIO:
                break  # everything droppable is gone: unreachable
            step = lo_r + (target - lo_t) * (hi_r - lo_r) / max(hi_t - lo_t, 1e-9)
            nxt = step if lo_r < step < hi_r else (lo_r + hi_r) / 2
            r = max(_MIN_RATIO, min(nxt, 1.0))
            res = [prune(p.seg, s, Budget(ratio=r), self._count) for p, s, _ in scored]
            t = float(total(res))
            if abs(t - target) < best[0]:
                best = (abs(t - target), res)
        return best[1]

    def _scorer_for(self, p: _Part) -> Scorer:
        return self.demo_scorer if p.seg.demos else self.scorer

    def _unit_scores(
        self, seg: Segmentation, question: str | None, scorer: Scorer
    ) -> tuple[np.ndarray, TokenScores]:
        spans = [(u.start, u.end) for u in seg.units]
        ts = scorer.score(seg.text, question=question, units=spans)
        return _blend_sentences(ts.unit_scores(spans), seg, self.config.sentence_weight), ts


def _check_scorer(scorer: object) -> None:
    """ConfigError unless ``scorer`` is None or one of the scorer names (``_SCORERS``)."""
    if scorer is not None and scorer not in _SCORERS:
        raise ConfigError(f"scorer must be one of {_SCORERS} or None, not {scorer!r}")


def _check_question(question: object) -> None:
    """ConfigError unless ``question`` is None or valid Unicode text, as for the prompt
    (:func:`~promptsieve.segment.check_text`): the tokenizer cannot encode a lone surrogate."""
    if question is None:
        return
    if not isinstance(question, str):
        raise ConfigError(f"question must be a string or None, got {type(question).__name__}")
    check_text(question, "question")


def _query(seg: Segmentation) -> str | None:
    """The question found in ``seg`` with up to ``_QUERY_CONTEXT`` characters of its
    blank-line block on each side (None without a question).

    The segmenter's question is the last sentence ending in "?", which can be as empty as
    "What is it?" (the needles' "Recall the special magic number that was stated for indigo.
    What is it?\nAnswer: The special magic number for indigo ... is"). Ranking passages
    against the block around it kept the asked needle in 20/20 and 19/20 prompts at 0.5 /
    0.25 instead of 17/20 and 16/20 (``benchmarks/results/default_scorer.md``).
    """
    if seg.question is None:
        return None
    qa, qb = seg.question
    a, b = next(((a, b) for a, b in split_passages(seg.text) if a <= qa and qb <= b), (qa, qb))
    return seg.text[max(a, qa - _QUERY_CONTEXT) : min(b, qb + _QUERY_CONTEXT)].strip()


def _within_kept_passages(
    token_scores: TokenScores,
    units: Sequence[Unit],
    kinds: Sequence[str],
    states: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scope, kept)`` states: the original's side restricted to the units not dropped as a
    whole passage; ``states`` unchanged when no passage was dropped whole (or no states)."""
    if states is None or "passage" not in kinds:
        return states
    scope = token_scores.pooled_states(
        [(u.start, u.end) for u, k in zip(units, kinds, strict=True) if k != "passage"]
    )
    return None if scope is None else (scope[1], states[1])


def _pooled_cosine(pooled: Sequence[tuple[np.ndarray, np.ndarray] | None]) -> float | None:
    """Cosine of the summed (whole, kept) states over every changed part; None if one lacks them."""
    if not pooled or any(p is None for p in pooled):
        return None
    whole = sum(p[0] for p in pooled if p is not None)
    kept = sum(p[1] for p in pooled if p is not None)
    norm = float(np.linalg.norm(whole) * np.linalg.norm(kept))
    return float(np.dot(whole, kept) / norm) if norm > 0 else 0.0


def _demo_counts(p: _Part, res: PruneResult) -> dict[str, int]:
    """``{"demo": demonstrations dropped whole, "word": other words dropped}`` (the
    demonstration-level path's ``Compression.decisions``; levels at 0 left out)."""
    units = p.seg.units
    members = Counter(u.demo for u in units if u.demo is not None and not u.protected)
    demo_of = [  # protected text goes with its demonstration, and is not counted
        -1 if (d := units[i].demo) is None else d for i in res.dropped if not units[i].protected
    ]
    demos, words = whole_groups(demo_of, members)
    return {k: n for k, n in (("demo", demos), ("word", words)) if n}


def _drop_kinds(p: _Part, res: PruneResult) -> tuple[str, ...]:
    """Per unit of ``p``: ``"demo"`` or ``"word"`` when ``res`` dropped it, else ``""``."""
    gone = set(res.dropped)
    return tuple(
        ("demo" if u.demo is not None else "word") if i in gone else ""
        for i, u in enumerate(p.seg.units)
    )


def _rebuild(
    messages: Sequence[Message], new_texts: dict[tuple[int, int], str]
) -> tuple[Message, ...]:
    out: list[Message] = []
    for i, m in enumerate(messages):
        if not any(k[0] == i for k in new_texts):
            out.append(m)
            continue
        parts = [
            TextPart(new_texts[(i, j)]) if (i, j) in new_texts else p for j, p in enumerate(m.parts)
        ]
        out.append(m.with_parts(parts))
    return tuple(out)


def _blend_sentences(scores: np.ndarray, seg: Segmentation, weight: float) -> np.ndarray:
    """Mix each word's score with its sentence's mean score.

    Word-level pruning alone thins every sentence a little, which breaks the one sentence
    that carries the answer (a small target then misreads it). Sharing the sentence mean
    makes whole unimportant sentences go first and keeps important ones readable.
    """
    if weight <= 0 or not len(scores):
        return scores
    sent = np.fromiter((u.sentence for u in seg.units), dtype=np.int64, count=len(seg.units))
    totals = np.bincount(sent, weights=scores)
    sizes = np.bincount(sent)
    means = totals[sent] / np.maximum(sizes[sent], 1)
    return np.asarray((1.0 - weight) * scores + weight * means, dtype=np.float64)


def _make_scorer(name: str, proxy: Proxy) -> Scorer:
    if name == "attribution":
        return AttributionScorer(proxy)
    if name == "sentence":
        return SentenceScorer(proxy)
    if name == "relevance":
        return RelevanceScorer(proxy)
    return HeadScorer(proxy)


def _explanation(
    text: str,
    question: str | None,
    ts: TokenScores,
    ratio: float,
    ps: PartScores,
    unit_scores: np.ndarray,
    dropped_as: Sequence[str],
) -> Explanation:
    seg, st = ps.seg, ps.struct
    words = tuple(
        Decision(u.start, u.end, float(unit_scores[i]), dropped_as[i] or "kept")
        for i, u in enumerate(seg.units)
    )

    def status(members: list[int]) -> str:
        gone = [dropped_as[i] for i in members if dropped_as[i]]
        if not gone:
            return "kept"
        if len(gone) < len(members):
            return "thinned"
        return next(k for k in ("passage", "demo", "sentence", "word") if k in gone)

    by_sent: list[list[int]] = [[] for _ in st.sentences]
    by_pass: list[list[int]] = [[] for _ in st.passages]
    for i, s in enumerate(st.sentence_of.tolist()):
        if s >= 0:
            by_sent[s].append(i)
            by_pass[int(st.passage_of[s])].append(i)
    sentences = tuple(
        Decision(a, b, float(ps.sentence_scores[k]), status(by_sent[k]))
        for k, (a, b) in enumerate(st.sentences)
    )
    passages = tuple(
        Decision(a, b, float(ps.passage_scores[k]), status(by_pass[k]))
        for k, (a, b) in enumerate(st.passages)
    )
    return Explanation(text, question, ratio, ts, passages, sentences, words)
