"""The instance guard on passage-level output, on the real MiniLM proxy (onnxruntime).

The coarse-to-fine budget drops whole passages; the whole-text cosine then falls with every
irrelevant passage it drops, and the guard vetoed most of the default's multi-document
compressions (``python -m benchmarks.guard_calibration``). The guard now tests the cosine
over the kept passages (``Compression.passage_similarity``); on the word path nothing
changes.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from promptsieve import Request, Sieve, SieveConfig
from promptsieve.compressor import Compressor, CompressorConfig, _within_kept_passages
from promptsieve.prompt import Message
from promptsieve.proxy import Proxy, TokenScores

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DOCS = (
    "The Amazon rainforest covers much of the Amazon basin of South America. Most of the "
    "forest is in Brazil, with smaller parts in Peru and Colombia. It holds about ten percent "
    "of the species known on Earth, and deforestation has grown with cattle ranching.",
    "The Rhine rises in the Swiss Alps and flows north through Germany before it reaches the "
    "North Sea in the Netherlands. Barges carry coal, grain and chemicals along it, and the "
    "river has been a border between peoples since Roman times.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. It happens "
    "in the chloroplasts of plant cells, where chlorophyll absorbs red and blue light. Almost "
    "all the oxygen in the air was released by it.",
    "The Normans were descended from Norse raiders who settled in northern France. Their "
    "duke William conquered England in 1066, and Norman French shaped the English language, "
    "its law and its castles for centuries afterwards.",
    "Jazz grew out of the blues and ragtime in New Orleans early in the twentieth century. "
    "Louis Armstrong made the improvised solo central to it, and swing bands later filled "
    "the dance halls of Chicago and New York.",
)
QUESTION = "Question: In which country does the Rhine reach the North Sea?\nAnswer:"


def _prompt() -> str:
    docs = "".join(f"Document [{i + 1}]\n{d}\n\n" for i, d in enumerate(DOCS))
    return docs + QUESTION


@pytest.fixture(scope="module")
def default(proxy: Proxy) -> Compressor:
    return Compressor(CompressorConfig(model="gpt-4o"), proxy=proxy)


def _sieve(compressor: Any, ratio: float = 0.25, **kw: Any) -> Sieve:
    cfg = SieveConfig(verify=False, ratio=ratio, scoring_budget_ms=60e3, **kw)
    return Sieve(cfg, compressor=compressor)


def _request() -> Request:
    return Request((Message.text("user", _prompt()),), "gpt-4o")


def test_dropping_whole_passages_no_longer_trips_the_guard(default: Compressor) -> None:
    """At 4x the default drops whole distractor documents: the whole-text cosine falls under
    the 0.8 threshold (the old guard sent the original), the kept-passage cosine does not."""
    r = default.compress([Message.text("user", _prompt())], ratio=0.25)
    assert r.decisions.get("passage", 0) > 0
    assert "Netherlands" in r.text
    assert r.similarity is not None and r.passage_similarity is not None
    assert r.similarity < 0.8 <= r.passage_similarity
    plan = _sieve(default).prepare(_request())
    assert plan.reason == "applied" and plan.is_compressed
    assert plan.similarity == pytest.approx(r.passage_similarity)
    assert plan.sent.prompt != _request().prompt


def test_threshold_still_applies_to_the_kept_passage_cosine(default: Compressor) -> None:
    r = default.compress([Message.text("user", _prompt())], ratio=0.25)
    assert r.passage_similarity is not None and r.passage_similarity < 0.9999
    sieve = _sieve(default, guard_threshold=0.9999)
    plan = sieve.prepare(_request())
    assert plan.reason == "guard" and not plan.is_compressed
    assert plan.sent.prompt == _request().prompt and sieve.stats.guard_skips == 1


@pytest.mark.parametrize("scorer", ["head", "sentence"])
def test_word_path_guard_is_unchanged(proxy: Proxy, scorer: str) -> None:
    """No passage dropped whole (the word path): the guard tests exactly the old cosine."""
    comp = Compressor(CompressorConfig(scorer=scorer, model="gpt-4o"), proxy=proxy)  # type: ignore[arg-type]
    for ratio in (0.5, 0.25):
        r = comp.compress(_prompt(), ratio=ratio)
        assert r.changed and not r.decisions
        assert r.passage_similarity == r.similarity


def test_thinning_inside_kept_passages_lowers_the_cosine(default: Compressor) -> None:
    """One passage (nothing to drop whole): the coarse path thins sentences and words, and the
    kept-passage cosine is the whole-text cosine, falling as more is cut."""
    text = " ".join(DOCS) + "\n\n" + QUESTION
    sims = []
    for ratio in (0.6, 0.2):
        r = default.compress(text, ratio=ratio)
        assert r.decisions.get("passage", 0) == 0
        assert r.passage_similarity == r.similarity
        sims.append(r.passage_similarity)
    assert sims[0] > sims[1]  # type: ignore[operator]


def test_within_kept_passages_leaves_dropped_passages_out_of_both_sides() -> None:
    """Rows weighted by characters (``TokenScores.pooled_states``): the original's side
    keeps only units not dropped as a whole passage."""
    states = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    ts = TokenScores("aa bbbb cc", np.array([[0, 2], [3, 7], [8, 10]]), np.ones(3), "t", states)
    units = [_Unit(0, 2), _Unit(3, 7), _Unit(8, 10)]
    kept = ts.pooled_states([(0, 2), (3, 5)])  # "aa" and half of "bbbb"; "cc" gone
    scope, part = _within_kept_passages(ts, units, ("", "word", "passage"), kept)  # type: ignore[misc, arg-type]
    assert scope.tolist() == [2.0, 4.0] and part.tolist() == [2.0, 2.0]
    # no passage dropped whole: the pooled states as they were
    assert _within_kept_passages(ts, units, ("", "word", "word"), kept) is kept  # type: ignore[arg-type]
    assert _within_kept_passages(ts, units, ("", "", "passage"), None) is None  # type: ignore[arg-type]


class _Unit:
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end


def test_verdicts_of_the_coarse_path_are_keyed_apart(proxy: Proxy) -> None:
    """The guard's meaning changed on the coarse path only: its fingerprint moves (verdicts
    screened under the whole-text cosine are not reused), the word path's does not."""
    assert "guard:passages" in CompressorConfig().settings_key()
    assert "guard:passages" in CompressorConfig(scorer="relevance").settings_key()
    assert "guard:passages" not in CompressorConfig(scorer="head").settings_key()


class _Wrapped:
    """A real compressor whose compression's guard cosine is replaced or made to raise."""

    def __init__(self, inner: Compressor, value: float | None, *, fail: bool = False) -> None:
        self.inner, self.value, self.fail = inner, value, fail
        self.fingerprint = inner.fingerprint

    def similarity(self, a: str, b: str) -> float:
        return self.inner.similarity(a, b)

    def compress(self, prompt: Any, *, ratio: float | None = None) -> Any:
        r = self.inner.compress(prompt, ratio=ratio)
        if not self.fail:
            return replace(r, passage_similarity=self.value)
        outer = self

        class Broken:
            changed, prompt = r.changed, r.prompt

            @property
            def passage_similarity(self) -> float:
                raise RuntimeError(f"broken guard {outer.value}")

        return Broken()


def test_guard_fails_safe(default: Compressor) -> None:
    """A NaN cosine vetoes, a failing one sends the original (reason "error")."""
    plan = _sieve(_Wrapped(default, math.nan)).prepare(_request())
    assert plan.reason == "guard" and plan.sent.prompt == _request().prompt
    sieve = _sieve(_Wrapped(default, 0.99, fail=True))
    plan = sieve.prepare(_request())
    assert plan.reason == "error" and plan.sent.prompt == _request().prompt
    assert sieve.stats.errors == 1
