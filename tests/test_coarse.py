"""Coarse-to-fine budget: passages → sentences → words (allocation on hand-set scores, and the
whole path on the real proxy with the committed relevance head)."""

from __future__ import annotations

import html
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from promptsieve._allocate import PartScores, plan, prune_in_order
from promptsieve._passages import split_sentences, structure
from promptsieve.compressor import Compressor, CompressorConfig
from promptsieve.prompt import Message, TextPart
from promptsieve.proxy import Proxy
from promptsieve.prune import Budget
from promptsieve.segment import SegmentConfig, segment
from promptsieve.tokens import count_tokens


def count(text: str) -> int:
    return count_tokens(text, "gpt-4o")


def sentences_of(text: str, language: str = "en") -> list[str]:
    return [text[a:b] for a, b in split_sentences(text, language=language)]


# -- sentence and passage boundaries ----------------------------------------------------------


def test_cjk_full_stops_split_sentences() -> None:
    assert sentences_of("北京是中国的首都。它有很多人口！你去过吗？我没有。") == [
        "北京是中国的首都。",
        "它有很多人口！",
        "你去过吗？",
        "我没有。",
    ]
    assert sentences_of("東京は日本の首都です。人口は多い。", "ja") == [
        "東京は日本の首都です。",
        "人口は多い。",
    ]


def test_abbreviations_do_not_end_sentences() -> None:
    text = "Dr. Smith met Mr. Jones, e.g. at 3 p.m. in the U.S. office. They talked."
    assert sentences_of(text) == [
        "Dr. Smith met Mr. Jones, e.g. at 3 p.m. in the U.S. office.",
        "They talked.",
    ]
    assert sentences_of("Das ist z.B. ein Test. Und noch einer.", "de") == [
        "Das ist z.B. ein Test.",
        "Und noch einer.",
    ]


def test_line_breaks_and_blank_lines() -> None:
    text = "Title line\n- first item\n- second item\n\nNext passage. Two sentences."
    seg = segment(text, SegmentConfig(protect_question=False))
    st = structure(seg)
    assert [text[a:b] for a, b in st.passages] == [
        "Title line\n- first item\n- second item",
        "Next passage. Two sentences.",
    ]
    assert [text[a:b] for a, b in st.sentences] == [
        "Title line",
        "- first item",
        "- second item",
        "Next passage.",
        "Two sentences.",
    ]
    assert list(st.passage_of) == [0, 0, 0, 1, 1]
    assert len(st.sentence_of) == len(seg.units) and (st.sentence_of >= 0).all()


# -- allocation on hand-set scores -------------------------------------------------------------

DOCS = [
    "Bananas grow in tropical regions. They are yellow when ripe. Farmers harvest them green.",
    "The Eiffel Tower is in Paris. It is 330 metres tall. It opened to visitors in 1889.",
    "Coffee beans are roasted seeds. Roasting changes their taste. Espresso is strong coffee.",
    "Rivers carry water to the sea. Some rivers freeze in winter. The Nile is very long.",
]


def scored(text: str, passage_scores: list[float], best_sentence: int | None = None) -> PartScores:
    seg = segment(text, SegmentConfig(protect_question=False))
    st = structure(seg)
    sent = np.array([passage_scores[int(p)] for p in st.passage_of], dtype=float)
    if best_sentence is not None:
        sent[best_sentence] += 5.0
    units = np.array([sent[int(s)] for s in st.sentence_of], dtype=float)
    return PartScores(seg, st, units, sent, np.array(passage_scores, dtype=float))


def cut(ps: PartScores, budget: Budget, **kw: object) -> tuple[str, dict[str, int]]:
    pl = plan([ps], budget, count, **kw)  # type: ignore[arg-type]
    assert pl.budgets[0] is not None
    res = prune_in_order(ps.seg, pl.orders[0], pl.budgets[0], count)
    stages: dict[str, int] = {}
    gone = set(res.dropped)
    for item, stage in zip(pl.orders[0], pl.stages[0], strict=True):
        if all(i in gone for i in item):
            stages[stage] = stages.get(stage, 0) + 1
    return res.text, stages


def test_least_relevant_passages_go_first_and_whole() -> None:
    text = "\n\n".join(DOCS)
    ps = scored(text, [0.1, 0.9, 0.3, 0.2])
    out, stages = cut(ps, Budget(ratio=0.5))
    assert DOCS[1] in out and DOCS[2] in out
    assert DOCS[0] not in out and "Bananas" not in out  # the least relevant: gone whole
    assert "Nile" not in out  # the next least relevant: its sentences go before others'
    assert stages.get("passage", 0) >= 1


def test_then_sentences_then_words_inside_kept_sentences() -> None:
    text = "\n\n".join(DOCS)
    ps = scored(text, [0.1, 0.9, 0.3, 0.2], best_sentence=4)  # "It is 330 metres tall."
    out, stages = cut(ps, Budget(ratio=0.12))
    assert "It is 330 metres tall." in out
    assert stages.get("passage") == 3
    assert stages.get("sentence", 0) >= 1


@pytest.mark.parametrize("ratio", [0.8, 0.5, 0.33, 0.25])
def test_ratio_met_within_five_percent(ratio: float) -> None:
    text = "\n\n".join(DOCS * 5)
    ps = scored(text, [0.1 * (i % 7) for i in range(20)])
    pl = plan([ps], Budget(ratio=ratio), count)
    b = pl.budgets[0]
    assert b is not None
    res = prune_in_order(ps.seg, pl.orders[0], b, count)
    assert res.compressible_after == pytest.approx(ratio * res.compressible_before, rel=0.05)


@pytest.mark.parametrize("target", [300, 200, 100])
def test_target_tokens_met_within_five_percent(target: int) -> None:
    text = "\n\n".join(DOCS * 5)
    ps = scored(text, [0.1 * (i % 7) for i in range(20)])
    pl = plan([ps], Budget(target_tokens=target), count)
    b = pl.budgets[0]
    assert b is not None
    res = prune_in_order(ps.seg, pl.orders[0], b, count)
    assert res.tokens_after == pytest.approx(target, rel=0.05)


def test_single_passage_keeps_protected_content_and_is_never_emptied() -> None:
    text = "The order 4711 shipped on 2024-03-05 to bob@example.org via https://x.example/t."
    ps = scored(text, [0.0])
    pl = plan([ps], Budget(ratio=0.01), count)
    b = pl.budgets[0]
    assert b is not None
    res = prune_in_order(ps.seg, pl.orders[0], b, count)
    for kept in ("4711", "2024-03-05", "bob@example.org", "https://x.example/t"):
        assert kept in res.text
    plain = scored("Nothing here is protected at all, just words.", [0.0])
    pl = plan([plain], Budget(ratio=0.01), count)
    assert pl.budgets[0] is not None
    res = prune_in_order(plain.seg, pl.orders[0], pl.budgets[0], count)
    assert res.text.strip()


def test_pinned_passage_is_never_dropped_whole() -> None:
    text = "\n\n".join([DOCS[0].replace("yellow", "<keep>yellow</keep>"), *DOCS[1:]])
    seg = segment(text, SegmentConfig(protect_question=False))
    st = structure(seg)
    sent = np.array([[0.0, 0.9, 0.3, 0.2][int(p)] for p in st.passage_of])
    units = np.array([sent[int(s)] for s in st.sentence_of])
    ps = PartScores(seg, st, units, sent, np.array([0.0, 0.9, 0.3, 0.2]))
    out, _ = cut(ps, Budget(ratio=0.3))
    assert "yellow" in out


def test_allocation_is_deterministic_and_checks_shapes() -> None:
    text = "\n\n".join(DOCS)
    ps = scored(text, [0.5, 0.5, 0.5, 0.5])  # all ties: later passages go first
    a, _ = cut(ps, Budget(ratio=0.5))
    b, _ = cut(ps, Budget(ratio=0.5))
    assert a == b
    assert DOCS[0] in a and DOCS[3] not in a
    bad = PartScores(ps.seg, ps.struct, ps.unit_scores[:-1], ps.sentence_scores, ps.passage_scores)
    with pytest.raises(ValueError, match="unit_scores"):
        plan([bad], Budget(ratio=0.5), count)


def test_budget_is_shared_across_parts() -> None:
    low = scored("\n\n".join(DOCS[:2]), [0.1, 0.2])
    high = scored("\n\n".join(DOCS[2:]), [0.8, 0.9])
    pl = plan([low, high], Budget(ratio=0.5), count)
    assert pl.budgets[0] is not None  # the low-relevance part pays first
    assert pl.budgets[1] is None or (pl.budgets[1].ratio or 1.0) > (pl.budgets[0].ratio or 0.0)


# -- the whole path on the real proxy ------------------------------------------------------------

QUESTION = "How tall is the Eiffel Tower?"


@pytest.fixture(scope="module")
def relevance(proxy: Proxy) -> Compressor:
    return Compressor(CompressorConfig(scorer="relevance", model="gpt-4o"), proxy=proxy)


def multidoc(docs: list[str]) -> str:
    return "".join(f"Document [{i + 1}]\n{d}\n\n" for i, d in enumerate(docs))


def test_relevance_keeps_the_answer_and_drops_distractors(relevance: Compressor) -> None:
    docs = [DOCS[0], DOCS[2], DOCS[1], DOCS[3]]
    msg = Message("user", (TextPart(multidoc(docs)), TextPart(f"Question: {QUESTION}", True)))
    r = relevance.compress([msg], ratio=0.4, question=QUESTION)
    out = r.prompt[0].content  # type: ignore[index]
    assert "330 metres" in out
    assert out.endswith(f"Question: {QUESTION}")
    assert r.decisions.get("passage", 0) > 0
    assert r.scorer == "relevance"
    assert relevance.config.coarse


def test_no_question_gets_query_free_importance(relevance: Compressor) -> None:
    text = "\n\n".join(DOCS)
    a = relevance.compress(text, ratio=0.5)
    b = relevance.compress(text, ratio=0.5)
    assert a.text == b.text and a.text.strip()
    assert a.tokens_after < a.tokens_before


def test_reorder_puts_the_relevant_passage_first(proxy: Proxy) -> None:
    comp = Compressor(
        CompressorConfig(scorer="relevance", model="gpt-4o", reorder=True), proxy=proxy
    )
    text = "\n\n".join([DOCS[0], DOCS[2], DOCS[1], f"Question: {QUESTION}"])
    r = comp.compress(text, ratio=0.7)
    assert isinstance(r.prompt, str)
    assert r.prompt.index("Eiffel") < min(
        (r.prompt.find(w) for w in ("Bananas", "Coffee", "Roasting") if w in r.prompt),
        default=len(r.prompt),
    )
    assert r.prompt.rstrip().endswith(QUESTION)


@pytest.mark.parametrize("keep_protected", [True, False])
def test_reorder_with_protected_text_kept(proxy: Proxy, keep_protected: bool) -> None:
    # the default keeps protected text (the question, numbers) out of its sentence; reorder
    # must still see those units in their passage, or it finds a block too many and skips
    comp = Compressor(CompressorConfig(reorder=True, keep_protected=keep_protected), proxy=proxy)
    assert comp.config.coarse and comp.config.protected_kept == keep_protected
    text = "\n\n".join([DOCS[0], DOCS[2], DOCS[1], f"Question: {QUESTION}"])
    r = comp.compress(text, ratio=0.8)
    assert isinstance(r.prompt, str) and r.prompt.startswith("The Eiffel Tower")
    assert r.prompt.rstrip().endswith(f"Question: {QUESTION}")
    plain = Compressor(CompressorConfig(keep_protected=keep_protected), proxy=proxy)
    assert sorted(plain.compress(text, ratio=0.8).text.split()) == sorted(r.text.split())


def test_many_passages_and_a_long_passage_stay_bounded(relevance: Compressor) -> None:
    many = "\n\n".join(f"Passage {i}: " + DOCS[i % 4] for i in range(200))
    long_one = " ".join(DOCS * 110)  # one passage of about 10k tokens
    for text in (many, long_one):
        tracemalloc.start()
        r = relevance.compress(text + f"\n\nQuestion: {QUESTION}", ratio=0.3)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert r.tokens_after < r.tokens_before
        assert "330" in r.text
        # windows run a batch at a time: memory grows with the text, not the text squared
        assert peak < 400 * len(text) + 64_000_000


def test_demonstrations_keep_the_demo_level_path(relevance: Compressor) -> None:
    demos = "\n\n".join(
        f"Q: What is {a} plus {b}?\nA: {a} plus {b} is {a + b}. The answer is {a + b}."
        for a, b in ((2, 3), (4, 5), (6, 7), (8, 9))
    )
    r = relevance.compress(demos + "\n\nQ: What is 10 plus 11?\nA:", ratio=0.5)
    gone = [q for q in ("2 plus 3", "4 plus 5", "6 plus 7", "8 plus 9") if q not in r.text]
    assert gone and r.decisions.get("demo") == len(gone)  # demonstrations, not their words
    assert r.text.rstrip().endswith("Q: What is 10 plus 11?\nA:")


#: every word of these documents occurs once in the prompt, so a sentence is gone whole
#: exactly when none of its words is left (numbers are protected, and may stay)
UNIQUE_DOCS = [
    "Bananas ripen slowly. Farmers harvest 40 bunches early. Markets sell yellow fruit.",
    "Coffee beans get roasted. Roasting changes flavour 3 ways. Espresso tastes strong.",
    "The Eiffel Tower stands 330 metres tall. Visitors climb its stairs. Lifts opened in 1889.",
    "Rivers carry water seaward. Winter freezes 7 streams. Salmon swim 12 miles upstream.",
]


@pytest.mark.parametrize("keep_protected", [False, True])
@pytest.mark.parametrize("ratio", [0.8, 0.6, 0.4, 0.25])
def test_decisions_count_passages_and_sentences_not_their_words(
    proxy: Proxy, ratio: float, keep_protected: bool
) -> None:
    cfg = CompressorConfig(scorer="relevance", model="gpt-4o", keep_protected=keep_protected)
    r = Compressor(cfg, proxy=proxy).compress(
        multidoc(UNIQUE_DOCS) + f"Question: {QUESTION}", ratio=ratio, question=QUESTION
    )
    context = r.text.split("Question:")[0]
    left = {w.lower() for w in re.findall(r"[A-Za-z]+", context)}

    def words(text: str) -> set[str]:
        return {w.lower() for w in re.findall(r"[A-Za-z]+", text)}

    kept = [d for d in UNIQUE_DOCS if words(d) & left]  # ("Document [i]" may stay, protected)
    gone = len(UNIQUE_DOCS) - len(kept)  # each dropped whole, or as its 3 sentences one by one
    passages = r.decisions.get("passage", 0)
    assert 0 <= passages <= gone, (r.decisions, context)
    sentences = [t for d in kept for t in sentences_of(d)]
    whole = [t for t in sentences if not words(t) & left]
    assert r.decisions.get("sentence", 0) == len(whole) + 3 * (gone - passages), r.decisions
    thinned = sum(len(words(t) - left) for t in sentences if t not in whole)
    assert r.decisions.get("word", 0) == thinned, (r.decisions, context)


def test_decisions_see_whole_sentences_and_passages(proxy: Proxy) -> None:
    """The counts above are not vacuous: each level shows up on this prompt."""
    cfg = CompressorConfig(scorer="relevance", model="gpt-4o")
    comp = Compressor(cfg, proxy=proxy)
    prompt = multidoc(UNIQUE_DOCS) + f"Question: {QUESTION}"
    seen = {
        k for ratio in (0.8, 0.6, 0.4, 0.25) for k in comp.compress(prompt, ratio=ratio).decisions
    }
    assert seen == {"passage", "sentence", "word"}


def test_explain_heat_map_shows_passage_sentence_and_token_decisions(
    relevance: Compressor,
) -> None:
    from promptsieve._heatmap import render_decisions_html

    text = multidoc([DOCS[0], DOCS[1], DOCS[2]]) + f"Question: {QUESTION}"
    expl = relevance.explain_decisions(text, ratio=0.4)
    assert expl.question is not None and QUESTION in expl.question
    statuses = {d.status for d in expl.passages}
    assert "passage" in statuses and statuses & {"kept", "thinned"}
    eiffel = next(d for d in expl.sentences if "330 metres" in text[d.start : d.end])
    assert eiffel.status in ("kept", "thinned")
    assert len(expl.words) == len(segment(text).units)
    page = render_decisions_html(expl, title="t")
    assert page.startswith("<!doctype html>")
    assert "passage dropped" in page and "line-through" in page
    assert 'title="sentence ' in page and 'title="token ' in page
    body = re.sub(r"<[^>]+>", "", page)
    assert "It is 330 metres tall." in html.unescape(body)


def test_relevance_graph_is_read_from_a_prebuilt_folder(
    relevance: Compressor, proxy_cache_dir: Path, tmp_path: Path
) -> None:
    from promptsieve._errors import ConfigError
    from promptsieve.proxy import ProxyConfig
    from promptsieve.proxy._artifacts import ARTIFACTS
    from promptsieve.proxy.relevance import RelevanceScorer

    assert "relevance" in [a.name for a in ARTIFACTS]  # `promptsieve export` builds it
    relevance.compress("Warm. Up.\n\nQuestion: what?", ratio=0.5)  # graph in the session cache
    prebuilt = Proxy.load(ProxyConfig(proxy_dir=proxy_cache_dir))
    sc = RelevanceScorer(prebuilt)
    assert not sc.exported and sc.graph_dir.parent == proxy_cache_dir
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = Proxy(
        prebuilt._session,
        prebuilt._tok,
        ProxyConfig(proxy_dir=empty),
        prebuilt.fingerprint,
        prebuilt.export_dir,
        False,
    )
    with pytest.raises(ConfigError, match="promptsieve export --out"):
        RelevanceScorer(bare)
    assert not any(empty.iterdir())
