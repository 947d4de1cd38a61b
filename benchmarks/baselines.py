"""Compression methods under test, all behind one interface: ``compress(item, ratio) -> str``.

Every method keeps ``ratio`` of the item's compressible context (tiktoken gpt-4o tokens)
and appends the item's question verbatim, so methods differ only in what they keep:

* ``none`` — the original prompt;
* ``random`` — seeded random word pruning;
* ``truncate`` — keep the head and the tail of the context;
* ``selfinfo`` — Selective Context / LLMLingua-1 style: drop the words with the lowest
  self-information under the target's own ``echo`` log-probabilities;
* ``attribution`` / ``head`` / ``sentence`` / ``relevance`` — the project's scorers through
  ``promptsieve.Compressor`` (``relevance``: the coarse-to-fine budget).
"""

from __future__ import annotations

import functools
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from .data import BenchItem
from .target import CallCache, LogprobSource, TokenLogprobs, token_starts

__all__ = [
    "CachedMethod",
    "Compressed",
    "Method",
    "NoCompression",
    "ProjectMethod",
    "RandomPrune",
    "SelfInformation",
    "Truncate",
    "build_methods",
    "context_ratio",
    "count",
]

COUNT_MODEL = "gpt-4o"
ProjectScorer = Literal["head", "attribution", "sentence", "relevance"]
_WORD = re.compile(r"\S+")


@functools.lru_cache(maxsize=200_000)
def _count_cached(text: str) -> int:
    from promptsieve.tokens import count_tokens

    return count_tokens(text, COUNT_MODEL)


def count(text: str) -> int:
    """Tokens by tiktoken (gpt-4o); the unit of every ratio in the benchmark."""
    return _count_cached(text) if text else 0


def context_ratio(item: BenchItem, prompt: str) -> float:
    """Share of the item's context tokens that ``prompt`` kept (the question excluded)."""
    before = count(item.context)
    kept = prompt[: len(prompt) - len(item.question)] if prompt.endswith(item.question) else prompt
    return count(kept) / before if before else 1.0


@dataclass(frozen=True)
class Compressed:
    prompt: str
    score_s: float  # time spent scoring (the proxy, or the target's logprob call)
    total_s: float  # the whole compression


class Method:
    """Base class: subclasses implement :meth:`timed`; :meth:`compress` is the interface."""

    name: str = "method"
    available: bool = True
    reason: str = ""  # why a method is unavailable
    fingerprint: str = "v1"  # changes when the method's output would change

    def compress(self, item: BenchItem, ratio: float) -> str:
        return self.timed(item, ratio).prompt

    def timed(self, item: BenchItem, ratio: float) -> Compressed:
        raise NotImplementedError

    def peek(self, item: BenchItem, ratio: float) -> str | None:
        """The compressed prompt if it is known without compressing (a cache hit), else
        ``None``; the bench's ETA uses it to tell cached target calls from new ones."""
        return None


# -- word-level helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Words:
    text: str
    spans: tuple[tuple[int, int], ...]
    costs: np.ndarray  # tokens per word, counted with a leading space

    @classmethod
    def of(cls, text: str) -> _Words:
        spans = tuple((m.start(), m.end()) for m in _WORD.finditer(text))
        costs = np.array([count(" " + text[s:e]) for s, e in spans], dtype=np.int64)
        return cls(text, spans, costs)

    def budget(self, ratio: float) -> int:
        return round(ratio * count(self.text))

    def join(self, keep: np.ndarray) -> str:
        """Kept words in order; glue keeps paragraph/line breaks of the dropped stretch."""
        out: list[str] = []
        prev_end = 0
        lead = self.text[: self.spans[0][0]] if self.spans else ""
        for i in np.flatnonzero(keep):
            s, e = self.spans[i]
            gap = self.text[prev_end:s]
            if out:
                nl = min(gap.count("\n"), 2)
                direct = prev_end == self.spans[i - 1][1] and keep[i - 1]
                out.append(gap if direct else ("\n" * nl if nl else " "))
            out.append(self.text[s:e])
            prev_end = e
        trail = self.text[self.spans[-1][1] :] if self.spans else self.text
        return lead + "".join(out) + trail if out else lead + trail


def _keep_by_priority(words: _Words, order: Sequence[int], budget: int) -> np.ndarray:
    """Take words in ``order`` while they fit ``budget`` tokens (skipping ones that do not)."""
    keep = np.zeros(len(words.spans), dtype=bool)
    used = 0
    for i in order:
        c = int(words.costs[i])
        if used + c <= budget:
            keep[i] = True
            used += c
    return keep


class NoCompression(Method):
    name = "none"

    def timed(self, item: BenchItem, ratio: float) -> Compressed:
        return Compressed(item.prompt, 0.0, 0.0)


class RandomPrune(Method):
    """Keeps a seeded random subset of words; the seed mixes item id and ratio."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.fingerprint = f"v1:seed={seed}"

    def timed(self, item: BenchItem, ratio: float) -> Compressed:
        t0 = time.perf_counter()
        words = _Words.of(item.context)
        order = list(range(len(words.spans)))
        random.Random(f"{self.seed}:{item.id}:{ratio}").shuffle(order)
        keep = _keep_by_priority(words, order, words.budget(ratio))
        return Compressed(words.join(keep) + item.question, 0.0, time.perf_counter() - t0)


class Truncate(Method):
    """Keeps the head and the tail of the context, half the budget each."""

    name = "truncate"

    def timed(self, item: BenchItem, ratio: float) -> Compressed:
        t0 = time.perf_counter()
        words = _Words.of(item.context)
        budget = words.budget(ratio)
        n = len(words.spans)
        keep = np.zeros(n, dtype=bool)
        cum = np.cumsum(words.costs)
        head = int(np.searchsorted(cum, budget // 2, side="right"))
        keep[:head] = True
        used = int(cum[head - 1]) if head else 0
        for i in range(n - 1, head - 1, -1):
            if used + int(words.costs[i]) > budget:
                break
            keep[i] = True
            used += int(words.costs[i])
        return Compressed(words.join(keep) + item.question, 0.0, time.perf_counter() - t0)


class SelfInformation(Method):
    """Selective Context / LLMLingua-1 style, on the target's own log-probabilities.

    A word's self-information is the sum of −log p over the target tokens it overlaps;
    the lowest-information words are dropped until the budget is met. One echo call per
    context (cached), shared by all ratios.
    """

    name = "selfinfo"

    def __init__(self, source: LogprobSource) -> None:
        self.source = source
        self.fingerprint = f"v1:{getattr(source, 'identity', type(source).__name__)}"

    def timed(self, item: BenchItem, ratio: float) -> Compressed:
        t0 = time.perf_counter()
        lp = self.source.prompt_logprobs(item.context)
        words = _Words.of(item.context)
        scores = word_self_information(item.context, lp, words.spans)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        keep = _keep_by_priority(words, order, words.budget(ratio))
        local = time.perf_counter() - t0
        if lp.cached:  # report the original call's latency, not the cache's
            local += lp.latency_s
        return Compressed(words.join(keep) + item.question, lp.latency_s, local)


def word_self_information(
    text: str, lp: TokenLogprobs, spans: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Σ −log p of the tokens overlapping each span; the unscored first token counts high."""
    starts = np.asarray(lp.offsets, dtype=np.int64)
    if len(starts) != len(lp.tokens) or np.any(np.diff(starts) < 0) or starts[-1] > len(text):
        starts = token_starts(text, lp.tokens)
    vals = np.array([-(x if x is not None else np.nan) for x in lp.logprobs], dtype=float)
    fill = np.nanmax(vals) if np.isfinite(vals).any() else 0.0
    vals = np.where(np.isfinite(vals), vals, fill)
    ends = np.append(starts[1:], len(text))
    out = np.zeros(len(spans))
    for k, (s, e) in enumerate(spans):
        lo = int(np.searchsorted(ends, s, side="right"))
        hi = int(np.searchsorted(starts, e, side="left"))
        out[k] = vals[lo:hi].sum()
    return out


class ProjectMethod(Method):
    """A project scorer through ``promptsieve.Compressor``.

    The item is passed as one user message whose question is a protected part, so the
    Compressor prunes only the context, exactly as the baselines do; the segmenter's own
    question protection is off because the question is already protected, and the budget is
    counted with tiktoken like the baselines'.
    """

    def __init__(
        self,
        scorer: ProjectScorer | None,
        *,
        coarse: bool = False,
        reorder: bool = False,
        name: str = "",
    ) -> None:
        self.name = name or scorer or "default"
        self._compressor: object | None = None
        try:
            self._compressor = _make_compressor(scorer, coarse=coarse, reorder=reorder)
            self.fingerprint = str(self._compressor.fingerprint)  # type: ignore[attr-defined]
        except Exception as exc:  # the module or the scorer has not landed yet
            self.available = False
            self.reason = f"{type(exc).__name__}: {exc}"

    def timed(self, item: BenchItem, ratio: float) -> Compressed:
        from promptsieve.prompt import Message, TextPart

        if self._compressor is None:
            raise RuntimeError(f"{self.name} unavailable: {self.reason}")
        msg = Message(role="user", parts=(TextPart(item.context), TextPart(item.question, True)))
        t0 = time.perf_counter()
        comp = self._compressor.compress(  # type: ignore[attr-defined]
            [msg], ratio=ratio, question=query(item)
        )
        total = time.perf_counter() - t0
        out = comp.prompt[0].content
        timings = getattr(comp, "timings", {}) or {}
        return Compressed(out, float(timings.get("score", total)), total)


class CachedMethod(Method):
    """Memoises another method's compressions (with their original timings) in the cache.

    Re-running a report then costs neither target calls nor proxy time; the key holds the
    method's fingerprint, so a changed scorer or proxy compresses afresh.
    """

    def __init__(self, inner: Method, cache: CallCache) -> None:
        self.inner, self.cache = inner, cache
        self.name, self.available, self.reason = inner.name, inner.available, inner.reason
        self.fingerprint = inner.fingerprint

    def timed(self, item: BenchItem, ratio: float) -> Compressed:
        key = self._key(item, ratio)
        hit = self.cache.get(key)
        if hit is not None:
            return Compressed(**hit[0])
        out = self.inner.timed(item, ratio)
        self.cache.put(key, asdict(out), out.total_s)
        return out

    def peek(self, item: BenchItem, ratio: float) -> str | None:
        hit = self.cache.get(self._key(item, ratio))
        return None if hit is None else str(hit[0]["prompt"])

    def _key(self, item: BenchItem, ratio: float) -> str:
        body = {"prompt": item.prompt, "question": item.question, "ratio": ratio}
        return CallCache.key(f"compress:{self.name}:{self.fingerprint}", "", body)


def query(item: BenchItem) -> str:
    """What the scorers rank the context against: the question itself, without the answer
    cue or the instruction ("Question: X\nAnswer:" → X; "Q: X\nA:" → X)."""
    q = item.question.strip()
    m = re.search(r"(?:^|\n)Question: (.*?)\nAnswer:$", q, flags=re.S)
    if m:
        return m.group(1).strip()
    m = re.fullmatch(r"Q: (.*)\nA:", q, flags=re.S)
    return m.group(1).strip() if m else q


def _make_compressor(
    scorer: ProjectScorer | None, *, coarse: bool = False, reorder: bool = False
) -> object:
    from promptsieve.compressor import Compressor, CompressorConfig
    from promptsieve.segment import SegmentConfig

    extra: dict[str, bool] = {"coarse_to_fine": True} if coarse else {}
    if reorder:
        extra["reorder"] = True
    cfg = CompressorConfig(
        scorer=scorer,
        model=COUNT_MODEL,
        segment=SegmentConfig(protect_question=False),
        **extra,
    )
    comp = Compressor(cfg)
    actual = comp.scorer.name
    if scorer is not None and actual.split("-")[0] != scorer:
        raise RuntimeError(f"Compressor gave scorer {actual!r} for {scorer!r}")
    comp.compress("Warm-up so that loading the proxy is not timed as scoring.", ratio=0.5)
    return comp


#: Every method :func:`build_methods` knows, in the order the reports list them.
METHOD_NAMES = (
    "none", "random", "truncate", "selfinfo", "attribution", "head", "sentence", "relevance",
    "coarse", "coarse-reorder", "default",
)  # fmt: skip


def build_methods(
    names: Sequence[str],
    logprobs: LogprobSource,
    *,
    seed: int = 0,
    cache: CallCache | None = None,
) -> list[Method]:
    """The methods named, in order; project methods that cannot load are marked unavailable.

    ``logprobs`` feeds ``selfinfo`` (the target's echo, or the local GGUF in-process).
    """
    makers: dict[str, Callable[[], Method]] = {
        "none": NoCompression,
        "random": lambda: RandomPrune(seed),
        "truncate": Truncate,
        "selfinfo": lambda: SelfInformation(logprobs),
        "attribution": lambda: ProjectMethod("attribution"),
        "head": lambda: ProjectMethod("head"),
        "sentence": lambda: ProjectMethod("sentence"),
        # the coarse-to-fine compressor (passages, then sentences, then words) on the
        # relevance scorer, when it is in the installed promptsieve
        "relevance": lambda: ProjectMethod("relevance"),
        # the coarse-to-fine budget on the sentence scorer (passages, sentences, words)
        "coarse": lambda: ProjectMethod("sentence", coarse=True, name="coarse"),
        # the same, with the kept passages put most relevant first (LongLLMLingua's document
        # reordering; CompressorConfig(reorder=True), off in the SDK by default)
        "coarse-reorder": lambda: ProjectMethod(
            "sentence", coarse=True, reorder=True, name="coarse-reorder"
        ),
        # the SDK's default Compressor (scorer=None: chosen per part, see CompressorConfig)
        "default": lambda: ProjectMethod(None),
    }
    assert set(makers) == set(METHOD_NAMES)
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(METHOD_NAMES)}")
    methods = [makers[n]() for n in names]
    if cache is None:
        return methods
    return [m if m.name == "none" else CachedMethod(m, cache) for m in methods]
