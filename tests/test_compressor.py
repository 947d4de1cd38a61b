"""The compression facade on the real ONNX proxy: budgets, protection, messages, bad input."""

from __future__ import annotations

import pytest

from promptsieve.compressor import Compressor, CompressorConfig
from promptsieve.prompt import Message, OpaquePart, TextPart
from promptsieve.proxy import AttributionScorer, Proxy

TEXT = (
    "The Eiffel Tower, which many visitors consider the most famous landmark of the city, "
    "was completed in 1889 for the World's Fair. It is located on the Champ de Mars in Paris. "
    "Honestly, the weather that day was rather pleasant, and several people reportedly enjoyed "
    "ice cream nearby. The tower is 330 metres tall and was designed by the engineering company "
    "of Gustave Eiffel. Tickets: https://www.toureiffel.paris or mail info@example.org.\n\n"
    "Question: How tall is the Eiffel Tower?"
)


@pytest.fixture(scope="module")
def compressor(proxy: Proxy) -> Compressor:
    cfg = CompressorConfig(scorer="attribution", model="gpt-4o")
    return Compressor(cfg, proxy=proxy, scorer=AttributionScorer(proxy))


def test_string_prompt_is_shortened_and_protected_text_survives(compressor: Compressor) -> None:
    r = compressor.compress(TEXT, ratio=0.5)
    assert isinstance(r.prompt, str) and r.prompt == r.text
    assert r.tokens_after < r.tokens_before
    assert 0 < r.ratio < 1
    for kept in ("1889", "330", "https://www.toureiffel.paris", "info@example.org"):
        assert kept in r.text
    assert r.text.endswith("Question: How tall is the Eiffel Tower?")
    assert r.dropped and r.kept
    assert all(s.text and TEXT.find(s.text) >= 0 for s in r.dropped)
    assert set(r.timings) >= {"segment", "score", "prune", "total"}
    assert r.scorer.startswith("attribution")


def test_compression_is_deterministic(compressor: Compressor) -> None:
    assert compressor.compress(TEXT, ratio=0.6).text == compressor.compress(TEXT, ratio=0.6).text


def test_messages_keep_system_tool_and_opaque_parts(compressor: Compressor) -> None:
    image = OpaquePart({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}})
    messages = [
        Message.text("system", "You are terse. Answer with a number and nothing else, please."),
        Message("user", (TextPart(TEXT), image)),
        Message.text("tool", '{"result": "ignored by the compressor, kept as is"}'),
    ]
    r = compressor.compress(messages, ratio=0.5)
    assert isinstance(r.prompt, tuple) and len(r.prompt) == 3
    assert r.prompt[0] == messages[0]
    assert r.prompt[2] == messages[2]
    user = r.prompt[1]
    assert user.parts[1] is image
    assert len(user.content) < len(TEXT)
    assert all(s.message == 1 for s in r.dropped)


def test_older_turns_are_compressed_but_final_question_is_kept(compressor: Compressor) -> None:
    messages = [
        Message.text("user", TEXT.replace("\n\nQuestion: How tall is the Eiffel Tower?", "")),
        Message.text("assistant", "Noted. The tower was completed in 1889 by Eiffel's company."),
        Message.text("user", "How tall is it?"),
    ]
    r = compressor.compress(messages, ratio=0.5)
    assert isinstance(r.prompt, tuple)
    assert r.prompt[2].content == "How tall is it?"
    assert len(r.prompt[0].content) < len(messages[0].content)


def test_target_tokens_budget(compressor: Compressor) -> None:
    r = compressor.compress(TEXT, target_tokens=70)
    assert r.tokens_after <= 80


def test_ratio_one_and_empty_prompts_pass_through(compressor: Compressor) -> None:
    assert compressor.compress(TEXT, ratio=1.0).text == TEXT
    for blank in ("", "   \n\t "):
        r = compressor.compress(blank, ratio=0.5)
        assert r.text == blank and not r.changed


@pytest.mark.parametrize("bad", [0, -0.5, 1.5])
def test_bad_ratio_is_a_value_error_that_says_what_is_allowed(
    compressor: Compressor, bad: float
) -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        compressor.compress(TEXT, ratio=bad)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        CompressorConfig(ratio=bad)


def test_unknown_scorer_is_a_config_error() -> None:
    from promptsieve import ConfigError

    with pytest.raises(ConfigError, match="scorer"):
        CompressorConfig(scorer="magic")  # type: ignore[arg-type]


def test_explain_aligns_scores_to_character_offsets(compressor: Compressor) -> None:
    ts = compressor.explain(TEXT, scorer="attribution")
    assert ts.offsets.shape == (len(ts.scores), 2)
    assert (ts.offsets[:, 1] <= len(TEXT)).all()
    words = {TEXT[s:e].lower() for (s, e) in ts.offsets[ts.scores.argsort()[::-1][:15]]}
    assert words & {"tall", "330", "tower", "eiffel", "metres"}


def test_fingerprint_changes_with_settings(proxy: Proxy) -> None:
    a = Compressor(CompressorConfig(scorer="attribution"), proxy=proxy)
    b = Compressor(CompressorConfig(scorer="attribution", model="gpt-4o"), proxy=proxy)
    assert a.fingerprint != b.fingerprint
    assert (
        a.fingerprint == Compressor(CompressorConfig(scorer="attribution"), proxy=proxy).fingerprint
    )


# -- the instance guard's similarity, read off the scoring pass -----------------------------
def test_pooled_states_weights_rows_by_kept_characters() -> None:
    import numpy as np

    from promptsieve.proxy import TokenScores

    states = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    ts = TokenScores("aa bbbb c", np.array([[0, 2], [3, 7], [8, 9]]), np.ones(3), "t", states)
    whole, kept = ts.pooled_states([(0, 2), (5, 7)])  # all of "aa", half of "bbbb"
    assert whole.tolist() == [3.0, 5.0] and kept.tolist() == [2.0, 2.0]
    assert ts.pooled_states([])[1].tolist() == [0.0, 0.0]  # type: ignore[index]
    assert TokenScores("x", np.array([[0, 1]]), np.ones(1), "t").pooled_states([(0, 1)]) is None


@pytest.mark.parametrize("scorer", ["head", "sentence"])
def test_similarity_comes_from_the_scoring_pass_and_tracks_the_encoder(
    proxy: Proxy, scorer: str
) -> None:
    """No second encoder pass: the similarity falls as more is dropped, like the full
    encoder's cosine between the two texts does."""
    comp = Compressor(CompressorConfig(scorer=scorer, model="gpt-4o"), proxy=proxy)  # type: ignore[arg-type]
    text = (TEXT.split("\n\n")[0] + " ") * 3 + "\n\nQuestion: How tall is the Eiffel Tower?"
    sims, full = [], []
    for ratio in (0.9, 0.6, 0.3):
        r = comp.compress(text, ratio=ratio)
        assert r.changed and r.similarity is not None and 0 < r.similarity <= 1
        sims.append(r.similarity)
        full.append(proxy.similarity(text, r.text))
    assert sims[0] > sims[1] > sims[2], sims
    assert full[0] >= full[2], full
    assert comp.compress(text, ratio=1.0).similarity is None  # nothing dropped


def test_attribution_has_no_states_so_the_guard_embeds(compressor: Compressor) -> None:
    assert compressor.compress(TEXT, ratio=0.5).similarity is None


def test_sieve_guard_uses_the_scoring_pass_not_two_more_encoder_passes(proxy: Proxy) -> None:
    from promptsieve.sieve import Request, Sieve, SieveConfig

    class Counting(Compressor):
        embeds = 0

        def similarity(self, a: str, b: str) -> float:
            Counting.embeds += 1
            return super().similarity(a, b)

    comp = Counting(CompressorConfig(model="gpt-4o"), proxy=proxy)
    text = (TEXT.split("\n\n")[0] + " ") * 3 + "\n\nQuestion: How tall is the Eiffel Tower?"
    msgs = (Message.text("user", text),)
    expected = comp.compress(list(msgs), ratio=0.5).similarity
    for threshold, reason in ((0.0, "applied"), (0.9999, "guard")):
        sieve = Sieve(
            SieveConfig(verify=False, ratio=0.5, guard_threshold=threshold, scoring_budget_ms=30e3),
            compressor=comp,
        )
        plan = sieve.prepare(Request(msgs, "gpt-4o"))
        assert plan.reason == reason and plan.similarity == pytest.approx(expected)
        assert (plan.sent.prompt != msgs) == (reason == "applied")
    assert Counting.embeds == 0
