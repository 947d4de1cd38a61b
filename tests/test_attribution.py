"""AttributionScorer on the real proxy."""

from __future__ import annotations

import numpy as np
import pytest

from promptsieve._errors import ConfigError
from promptsieve.proxy import AttributionConfig, AttributionScorer, Proxy, Scorer, TokenScores
from promptsieve.proxy.attribution import _coalitions, _drop, _group, whitespace_units

TEXT = (
    "The weather was mild and people walked slowly in the green park. "
    "The capital of France is Paris, a large city. "
    "Many small birds sang loudly in the old trees near the river."
)
QUESTION = "What is the capital of France?"
FILLER = ("weather", "mild", "walked", "slowly", "green", "birds", "sang", "loudly", "trees")


def _word_scores(ts: TokenScores) -> dict[str, float]:
    spans = whitespace_units(ts.text)
    vals = ts.unit_scores(spans)
    return {ts.text[s:e].strip(".,"): float(v) for (s, e), v in zip(spans, vals, strict=True)}


@pytest.mark.parametrize("method", ["loo", "lime"])
def test_question_words_rank_above_filler(proxy: Proxy, method: str) -> None:
    scorer = AttributionScorer(proxy, AttributionConfig(method=method))  # type: ignore[arg-type]
    ws = _word_scores(scorer.score(TEXT, question=QUESTION))
    top_filler = max(ws[w] for w in FILLER)
    assert ws["capital"] > top_filler
    assert ws["France"] > top_filler


def test_is_a_scorer_and_deterministic(proxy: Proxy) -> None:
    for method in ("loo", "lime"):
        cfg = AttributionConfig(method=method, samples=40)  # type: ignore[arg-type]
        a = AttributionScorer(proxy, cfg)
        assert isinstance(a, Scorer)
        assert a.name == f"attribution-{method}"
        r1 = a.score(TEXT, question=QUESTION)
        r2 = AttributionScorer(proxy, cfg).score(TEXT, question=QUESTION)
        assert np.array_equal(r1.scores, r2.scores)
        assert np.array_equal(r1.offsets, r2.offsets)
    other = AttributionScorer(proxy, AttributionConfig(seed=1))
    assert other.fingerprint != AttributionScorer(proxy).fingerprint


def test_token_alignment_and_units(proxy: Proxy) -> None:
    scorer = AttributionScorer(proxy)
    ts = scorer.score(TEXT)  # no question: reference is the text itself
    ids, offsets = proxy.tokenize(TEXT)
    assert ts.scores.shape == (len(ids),) and ts.offsets.shape == (len(ids), 2)
    assert np.array_equal(ts.offsets, offsets)
    assert ts.text == TEXT and ts.scorer == "attribution-loo"
    # tokens of one word share its score ("Paris," -> "paris", ",")
    i = TEXT.index("Paris,")
    toks = [k for k, (s, _) in enumerate(ts.offsets) if i <= s < i + len("Paris,")]
    assert len(toks) == 2 and ts.scores[toks[0]] == ts.scores[toks[1]]
    # explicit units: tokens outside every unit score 0
    j = TEXT.index("capital")
    units = [(j, j + len("capital"))]
    one = scorer.score(TEXT, units=units)
    inside = (one.offsets[:, 0] >= j) & (one.offsets[:, 0] < j + 7)
    assert inside.sum() >= 1 and not one.scores[~inside].any()
    assert one.unit_scores(units)[0] == one.scores[inside].mean()


def test_empty_and_bad_units(proxy: Proxy) -> None:
    scorer = AttributionScorer(proxy)
    empty = scorer.score("")
    assert empty.scores.shape == (0,) and empty.offsets.shape == (0, 2)
    assert scorer.score("   ").scores.shape == (0,)
    with pytest.raises(ValueError):
        scorer.score("abc def", units=[(0, 5), (4, 7)])
    with pytest.raises(ConfigError):
        AttributionConfig(method="shap")  # type: ignore[arg-type]


def test_many_units_grouped_to_max_units(proxy: Proxy) -> None:
    text = " ".join(f"word{i}" for i in range(50))
    calls: list[int] = []
    real_embed = proxy.embed

    class Counting:
        def __getattr__(self, name: str) -> object:
            return getattr(proxy, name)

        def embed(self, texts: list[str]) -> np.ndarray:
            calls.append(len(texts))
            return real_embed(texts)

    scorer = AttributionScorer(Counting(), AttributionConfig(max_units=8))  # type: ignore[arg-type]
    ts = scorer.score(text)
    assert calls == [1 + 1 + 8]  # one batched call: reference/full text, empty text, 8 groups
    spans = whitespace_units(text)
    per_word = ts.unit_scores(spans)
    groups = _group(len(spans), 8)
    assert len(groups) <= 8
    for a, b in groups:  # every word of a chunk carries the chunk's score
        assert np.allclose(per_word[a:b], per_word[a])


def test_helpers() -> None:
    text = "aa bb,cc dd"
    spans = [(0, 2), (3, 5), (5, 8), (9, 11)]
    assert _drop(text, spans, np.array([False, True, False, False])) == "aa ,cc dd"
    assert _drop(text, [(0, 2), (3, 5), (5, 6), (6, 8)], np.array([0, 0, 1, 0], bool)) == (
        "aa bb cc dd"
    )
    assert _group(10, 3) == [(0, 4), (4, 8), (8, 10)]
    keep, w = _coalitions(3, None, 0)  # exact enumeration: all 6 proper coalitions
    assert keep.shape == (6, 3) and np.allclose(w, 1 / 3)
    keep, w = _coalitions(20, 30, 0)
    assert keep.shape == (30, 20) and np.array_equal(keep[1], ~keep[0])
    assert np.array_equal(keep, _coalitions(20, 30, 0)[0])
