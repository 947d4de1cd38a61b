"""The benchmark-picked default, ``CompressorConfig()`` (``scorer=None``), on the real proxy.

Parts without demonstrations get the sentence scorer with the coarse-to-fine budget; parts
holding demonstrations keep the head scorer's demonstration-level path, byte for byte the
old default (``benchmarks/default_scorer.py`` measures both on needles, BBH and GSM8K).
"""

from __future__ import annotations

import pytest

from promptsieve import ConfigError
from promptsieve.compressor import Compressor, CompressorConfig
from promptsieve.prompt import COMPRESSIBLE_ROLES, Message, TextPart
from promptsieve.proxy import Proxy
from promptsieve.segment import SegmentConfig

# lm-eval's GSM8K chain-of-thought exemplars (Wei et al., 2022), three of them, then a question
FEWSHOT = (
    "Q: There are 15 trees in the grove. Grove workers will plant trees in the grove today. "
    "After they are done, there will be 21 trees. How many trees did the grove workers plant "
    "today?\nA: There are 15 trees originally. Then there were 21 trees after some more were "
    "planted. So there must have been 21 - 15 = 6. The answer is 6.\n\n"
    "Q: If there are 3 cars in the parking lot and 2 more cars arrive, how many cars are in "
    "the parking lot?\nA: There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. The "
    "answer is 5.\n\n"
    "Q: Leah had 32 chocolates and her sister had 42. If they ate 35, how many pieces do they "
    "have left in total?\nA: Originally, Leah had 32 chocolates. Her sister had 42. So in "
    "total they had 32 + 42 = 74. After eating 35, they had 74 - 35 = 39. The answer is 39."
    "\n\nQ: A baker made 48 muffins in the morning and sold 3/4 of them before noon. How many "
    "muffins were left at noon?\nA:"
)

_PROSE = (
    "The harbour office opens early in the summer months, and the ferry timetable changes "
    "twice a year when the tides shift along the northern coast.",
    "Most of the old warehouses along the river were converted into flats during the last "
    "decade, although a few still hold the fishing cooperative's nets and boats.",
    "Local bakers compete every autumn in a fair where bread, pastries and cakes are judged "
    "by a panel of retired chefs from the surrounding villages.",
    "The town library keeps a small collection of maps drawn by sailors who charted the "
    "shallow banks east of the lighthouse more than two centuries ago.",
    "Cyclists often follow the canal path inland, where the water is calm and the old locks "
    "still work by hand during the tourist season.",
    "A weekly market fills the main square with stalls selling cheese, honey, wool and "
    "vegetables grown on the farms beyond the hills.",
)
_NEEDLES = {"violet": "4817203", "indigo": "1479029", "harbor": "5112028", "quartz": "6630471"}


def _needle_prompt() -> str:
    paras = list(_PROSE)
    for k, (key, value) in enumerate(_NEEDLES.items()):
        paras.insert(1 + 2 * k, f"One of the special magic numbers for {key} is: {value}.")
    return (
        "Some special magic numbers are hidden within the following text. Make sure to "
        "memorize them. I will quiz you about the numbers afterwards.\n\n"
        + "\n\n".join(paras)
        + "\n\nQuestion: Recall the special magic number that was stated for indigo. What is "
        "it?\nAnswer: The special magic number for indigo mentioned in the provided text is"
    )


@pytest.fixture(scope="module")
def default(proxy: Proxy) -> Compressor:
    return Compressor(CompressorConfig(model="gpt-4o"), proxy=proxy)


@pytest.fixture(scope="module")
def head(proxy: Proxy) -> Compressor:
    return Compressor(CompressorConfig(scorer="head", model="gpt-4o"), proxy=proxy)


def test_the_default_is_sentence_coarse_to_fine_with_head_for_demonstrations() -> None:
    cfg = CompressorConfig()
    assert cfg.scorer is None and cfg.coarse
    assert (cfg.scorer_name, cfg.demo_scorer_name) == ("sentence", "head")
    # an explicit scorer is used for every part, and keeps its own path
    for name, coarse in (("head", False), ("sentence", False), ("relevance", True)):
        explicit = CompressorConfig(scorer=name)  # type: ignore[arg-type]
        assert explicit.demo_scorer_name == explicit.scorer_name == name
        assert explicit.coarse is coarse
    with pytest.raises(ConfigError, match="or None"):
        CompressorConfig(scorer="magic")  # type: ignore[arg-type]


def test_fingerprint_changes_with_the_default_but_not_for_an_explicit_head(
    default: Compressor, head: Compressor, proxy: Proxy
) -> None:
    """Verdicts keyed by the old default's fingerprint are never reused by the new default;
    ``scorer="head"`` compresses as the old default did, on segmentation revision 2 (its
    revision-1 verdicts, screened while a final query block could be dropped as a
    demonstration, re-screen once)."""
    revision_1 = repr(("head", None, 0.7, sorted(COMPRESSIBLE_ROLES), SegmentConfig()))
    plain = Compressor(CompressorConfig(scorer="head"), proxy=proxy)
    assert plain.config.settings_key() == revision_1[:-1] + ", 'segment:2')"
    explicit = Compressor(
        CompressorConfig(scorer="sentence", coarse_to_fine=True, model="gpt-4o"), proxy=proxy
    )
    prints = {default.fingerprint, head.fingerprint, explicit.fingerprint}
    assert len(prints) == 3
    assert default.demo_scorer is not default.scorer
    assert (default.scorer.name, default.demo_scorer.name) == ("sentence", "head")
    assert head.demo_scorer is head.scorer


@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_few_shot_prompt_is_compressed_exactly_as_the_old_default(
    default: Compressor, head: Compressor, ratio: float
) -> None:
    new, old = default.compress(FEWSHOT, ratio=ratio), head.compress(FEWSHOT, ratio=ratio)
    assert new.changed and new.text == old.text
    assert new.scorer == "head"
    assert new.text.endswith("How many muffins were left at noon?\nA:")
    assert {s.kind for s in new.dropped} == {"demo"}


def test_needle_is_found_through_an_empty_question(default: Compressor) -> None:
    """The segmenter's question here is "What is it?": the passages are ranked against the
    question's whole block, so the asked needle stays and whole distractors go first."""
    text = _needle_prompt()
    r = default.compress(text, ratio=0.25)
    assert r.scorer == "sentence"
    assert "One of the special magic numbers for indigo is: 1479029." in r.text
    assert r.decisions.get("passage", 0) > 0
    assert r.text.endswith("mentioned in the provided text is")


def test_mixed_request_scores_each_part_with_its_scorer(
    default: Compressor, head: Compressor
) -> None:
    docs = "\n\n".join(_PROSE)
    msg = [Message("user", (TextPart(docs), TextPart(FEWSHOT)))]
    r = default.compress(msg, ratio=0.5)
    assert r.scorer == "sentence+head"
    assert isinstance(r.prompt, tuple)
    fewshot_part = r.prompt[0].parts[1]
    assert isinstance(fewshot_part, TextPart)
    assert fewshot_part.text == head.compress(msg, ratio=0.5).prompt[0].parts[1].text  # type: ignore[union-attr]


def test_explain_uses_the_scorer_compression_would_use(default: Compressor) -> None:
    assert default.explain(FEWSHOT).scorer == "head"
    assert default.explain(_needle_prompt()).scorer == "sentence"
    expl = default.explain_decisions(_needle_prompt(), ratio=0.25)
    assert expl.token_scores.scorer == "sentence"
    kept = [d for d in expl.passages if d.status == "kept"]
    assert any("indigo is: 1479029" in expl.text[d.start : d.end] for d in kept)


def test_protected_text_stays_when_its_passage_goes(default: Compressor, proxy: Proxy) -> None:
    """The default keeps the word path's promise (numbers, URLs, code, quotes are never cut)
    on the coarse path too; an explicit coarse-to-fine config drops them with their passage."""
    text = _needle_prompt()
    r = default.compress(text, ratio=0.25)
    assert r.decisions.get("passage", 0) > 0
    assert all(v in r.text for v in _NEEDLES.values())
    explicit = Compressor(
        CompressorConfig(scorer="sentence", coarse_to_fine=True, model="gpt-4o"), proxy=proxy
    )
    assert not explicit.config.protected_kept
    gone = explicit.compress(text, ratio=0.25)
    assert "1479029" in gone.text and not all(v in gone.text for v in _NEEDLES.values())
    kept = CompressorConfig(scorer="sentence", coarse_to_fine=True, keep_protected=True)
    assert "keep_protected" in kept.settings_key()
    assert "keep_protected" not in explicit.config.settings_key()


def test_few_shot_query_block_survives_every_ratio(default: Compressor) -> None:
    """A template few-shot prompt whose query ends in the shared answer prompt (BIG-bench
    vitaminc's layout): demonstrations may go, the query block never does (segmentation
    revision 1 took it for a demonstration and dropped it at ratio 0.5)."""
    demo = (
        "Passage: Westlife: According to the British Phonographic Industry, Westlife has been "
        "certified for 13 million albums and 9.8 million singles, with more than {n} million "
        "combined sales in the UK.\nClaim: Westlife made under 23.5 million sales in the UK.\n"
        "True, False, or Neither? {a}"
    )
    query = (
        "Passage: Bengal tiger: The Bengal tiger is the most numerous tiger subspecies.\n"
        "Claim: The Bengal tiger is a member of the largest dog species.\n"
        "True, False, or Neither?"
    )
    text = (
        "Answer whether the related claim is True, False or Neither.\n\n"
        + "\n\n".join(
            demo.format(n=n, a=a) for n, a in ((24, "False"), (23, "Neither"), (22, "True"))
        )
        + "\n\n"
        + query
    )
    for ratio in (0.8, 0.5, 0.25):
        out = default.compress(text, ratio=ratio)
        assert out.text.endswith(query), ratio
        assert out.text.count("Passage:") < 4 or ratio == 0.8
