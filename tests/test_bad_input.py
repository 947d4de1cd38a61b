"""Issue #16's "Bad input" list on the real components (MiniLM ONNX proxy, onnxruntime).

* non-English sentences: CJK full stops end a sentence for the *default* scorer too (the
  cosine ``sentence`` scorer ranks sentences; it used to see a Chinese paragraph as one
  sentence, so every sentence in it tied and the answer was dropped by position), and an
  abbreviation right after a CJK full stop does not end a sentence;
* a single passage is never cut below its protected content (default and ``relevance``);
* a 10k-token passage and 200 passages stay within bounded memory on the default path;
* a prompt with no question is scored without one (no question is made up).
"""

from __future__ import annotations

import tracemalloc
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from promptsieve._errors import ConfigError
from promptsieve._passages import split_sentences
from promptsieve.compressor import Compressor, CompressorConfig
from promptsieve.proxy import Proxy
from promptsieve.proxy.sentence import SentenceScorer
from promptsieve.segment import segment

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ZH_SENTENCES = (
    "香蕉生长在热带地区，成熟时是黄色的。",
    "咖啡豆是烘焙过的种子，烘焙会改变它们的味道。",
    "埃菲尔铁塔位于巴黎，高三百三十米。",
    "尼罗河是世界上最长的河流之一，流经很多国家。",
    "爵士乐起源于新奥尔良，后来传遍了美国各地。",
)
ZH = "".join(ZH_SENTENCES)
ZH_QUESTION = "埃菲尔铁塔有多高？"


@pytest.fixture(scope="module")
def default(proxy: Proxy) -> Compressor:
    return Compressor(CompressorConfig(model="gpt-4o"), proxy=proxy)


# -- non-English sentences -----------------------------------------------------------------


def test_default_scorer_ranks_cjk_sentences_one_by_one(proxy: Proxy) -> None:
    """The sentence scorer gives every CJK sentence its own cosine (one span each)."""
    ts = SentenceScorer(proxy).score(ZH, question=ZH_QUESTION)
    spans = [ZH[a:b] for a, b in ts.offsets]
    assert spans == list(ZH_SENTENCES)
    assert int(np.argmax(ts.scores)) == 2  # the sentence about the tower's height
    # texts without CJK full stops are split as before (English output unchanged)
    en = "Dr. Smith came. He left! Why? Then\nnothing"
    en_spans = [en[a:b] for a, b in SentenceScorer(proxy).score(en).offsets]
    assert en_spans == ["Dr.", " Smith came.", " He left!", " Why?", " Then", "nothing"]


def test_default_keeps_the_answer_sentence_of_a_chinese_passage(default: Compressor) -> None:
    for ratio in (0.5, 0.3):
        r = default.compress(ZH + "\n\n问题：" + ZH_QUESTION, ratio=ratio)
        assert r.changed
        assert ZH_SENTENCES[2] in r.text, (ratio, r.text)
        assert r.text.rstrip().endswith(ZH_QUESTION)


def test_an_abbreviation_after_a_cjk_full_stop_does_not_end_a_sentence() -> None:
    text = "北京是中国的首都。Dr. Smith lives there. 他很好。"
    for language in ("en", "zh"):
        got = [text[a:b] for a, b in split_sentences(text, language=language)]
        assert got == ["北京是中国的首都。", "Dr. Smith lives there.", "他很好。"], language
    # a closing quote stays with the full stop before it; offsets stay absolute
    quoted = "前言。「こんにちは。」と彼は言った。Mr. Tanaka agreed. 終わり。"
    got = [quoted[a:b] for a, b in split_sentences(quoted, 3, len(quoted), "ja")]
    assert got == ["「こんにちは。」", "と彼は言った。", "Mr. Tanaka agreed.", "終わり。"]


# -- a single passage and its protected content ----------------------------------------------

ORDER = (
    "The order 4711 shipped on 2024-03-05 to bob@example.org via https://x.example/t. "
    "It was late. The customer called twice about it and was unhappy with the delay."
)
PROTECTED = ("4711", "2024-03-05", "bob@example.org", "https://x.example/t")


@pytest.mark.parametrize("scorer", [None, "relevance"])
def test_a_single_passage_keeps_its_protected_content(proxy: Proxy, scorer: str | None) -> None:
    """Default (``keep_protected`` on) and ``relevance`` (off: only a passage dropped whole
    takes its protections, and a lone passage is never dropped whole)."""
    comp = Compressor(CompressorConfig(scorer=scorer, model="gpt-4o"), proxy=proxy)  # type: ignore[arg-type]
    for ratio in (0.5, 0.05, 0.001):
        r = comp.compress(ORDER, ratio=ratio)
        assert r.changed and r.decisions.get("passage", 0) == 0
        for kept in PROTECTED:
            assert kept in r.text, (scorer, ratio, r.text)


# -- bounded memory -------------------------------------------------------------------------

DOCS = (
    "Bananas grow in tropical regions. They are yellow when ripe. Farmers harvest them green.",
    "The Eiffel Tower is in Paris. It is 330 metres tall. It opened to visitors in 1889.",
    "Coffee beans are roasted seeds. Roasting changes their taste. Espresso is strong coffee.",
    "Rivers carry water to the sea. Some rivers freeze in winter. The Nile is very long.",
)


def test_default_path_memory_is_bounded_for_200_passages_and_a_10k_token_one(
    default: Compressor,
) -> None:
    many = "\n\n".join(f"Passage {i}: " + DOCS[i % 4] for i in range(200))
    long_one = " ".join(DOCS * 130)  # one passage of about 10k tokens
    assert default.count_tokens(long_one) > 9_500
    for text in (many, long_one):
        prompt = text + "\n\nQuestion: How tall is the Eiffel Tower?"
        tracemalloc.start()
        r = default.compress(prompt, ratio=0.3)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert r.tokens_after < r.tokens_before and "330" in r.text
        # windows and sentence embeddings run a batch at a time: linear in the text
        assert peak < 400 * len(text) + 64_000_000, peak


# -- no question ----------------------------------------------------------------------------


def test_a_prompt_without_a_question_is_scored_without_one(default: Compressor) -> None:
    text = "\n\n".join(DOCS)  # statements only: nothing may be taken for the question
    assert segment(text).question is None
    r = default.compress(text, ratio=0.5)
    assert r.changed and r.text.strip()
    assert r.tokens_after < r.tokens_before
    assert default.compress(text, ratio=0.5).text == r.text  # deterministic


# -- invalid values at the API level: ConfigError, as for the prompt ------------------------


@pytest.mark.parametrize("question", ["\ud800", "How tall \udcff is it?"])
def test_a_question_with_a_lone_surrogate_is_a_config_error(
    default: Compressor, question: str
) -> None:
    """The prompt's check (``check_text``) applies to ``question`` too; the tokenizer would
    raise a TypeError."""
    from promptsieve._errors import ConfigError

    text = "\n\n".join(DOCS)
    for call in (
        lambda: default.compress(text, ratio=0.5, question=question),
        lambda: default.explain(text, question=question),
        lambda: default.explain_decisions(text, question=question, ratio=0.5),
    ):
        with pytest.raises(
            ConfigError,
            match=r"question is not valid Unicode: (lone surrogate|undecodable byte 0xff)",
        ):
            call()
    assert default.compress(text, ratio=0.5, question="How tall is it?").changed


def test_a_cache_dir_that_is_not_a_folder_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptsieve._errors import ConfigError
    from promptsieve._paths import cache_dir

    root = tmp_path
    afile = root / "afile"
    afile.write_text("x")
    for bad in (afile, afile / "below"):
        monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(bad))
        with pytest.raises(ConfigError, match=r"\$PROMPTSIEVE_CACHE_DIR .* not a folder"):
            cache_dir()
    for good in (root, root / "not-yet" / "created"):
        monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(good))
        assert cache_dir() == good


@pytest.mark.parametrize("price", [-1.0, float("nan"), float("inf"), "3", True, 10**400])
def test_a_price_must_be_a_finite_number_not_below_zero(price: object) -> None:
    from promptsieve._errors import ConfigError
    from promptsieve._report import Prices

    with pytest.raises(ConfigError, match=r"price of 'gpt-4o' must be a finite number >= 0"):
        Prices({"gpt-4o": price})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="fallback price must be a finite number >= 0"):
        Prices({"gpt-4o": 2.5}, fallback=price)  # type: ignore[arg-type]
    assert Prices({"gpt-4o": 2.5, "free": 0}, fallback=1.0).price("other") == 1.0
    assert Prices({"gpt-4o": Decimal("2.5"), "mini": Fraction(3, 20)}).price("mini") == 0.15


@pytest.mark.parametrize("margin", [-1.0, float("-inf"), float("nan"), float("inf")])
def test_clean_demos_margin_must_be_finite_and_not_negative(margin: float) -> None:
    """A negative margin removes demonstrations that help (-inf: all); NaN removes none.
    Refused before any attribution runs (the scorer fails the test if it is touched)."""
    from promptsieve._errors import ConfigError
    from promptsieve.demos import Demonstration, ValidationExample, clean_demos

    class Untouched:
        def __getattr__(self, name: str) -> object:
            pytest.fail(f"attribution started (scorer.{name})")

    demos = [Demonstration("a?", "b"), Demonstration("c?", "d")]
    val = [ValidationExample("q?", "a")]
    with pytest.raises(ConfigError, match="margin must be a finite number >= 0"):
        clean_demos(demos, val, margin=margin, scorer=Untouched())  # type: ignore[arg-type]


# -- wrong arguments to the API: ConfigError naming what is expected ------------------------


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"ratio": "0.5"}, "ratio=...) must be a number"),
        ({"ratio": True}, "ratio=...) must be a number"),
        ({"ratio": Decimal("0.5")}, "ratio=...) must be a number"),  # as CompressorConfig
        ({"ratio": float("nan")}, "ratio must be in (0, 1]"),
        ({"target_tokens": "10"}, "target_tokens=...) must be a whole number"),
        ({"target_tokens": float("nan")}, "target_tokens=...) must be a whole number"),
        ({"target_tokens": True}, "target_tokens=...) must be a whole number"),
        ({"target_tokens": 2.5}, "target_tokens=...) must be a whole number"),
    ],
)
def test_budget_arguments_of_the_wrong_type_are_config_errors(
    default: Compressor, kwargs: dict[str, object], says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        default.compress("Some words to keep or drop.", **kwargs)  # type: ignore[arg-type]
    assert says in str(info.value)


@pytest.mark.parametrize("ratio", [Fraction(1, 2), np.float32(0.5), np.float64(0.5), 1])
def test_any_real_ratio_is_taken_as_a_float(default: Compressor, ratio: object) -> None:
    text = "Bananas grow in tropical regions and are yellow when they are ripe. " * 4
    want = default.compress(text, ratio=0.5 if ratio != 1 else 1.0)
    assert default.compress(text, ratio=ratio).text == want.text  # type: ignore[arg-type]


@pytest.mark.parametrize("prompt", [None, b"bytes are not text", 5, ["a str, not a Message"]])
def test_a_prompt_that_is_not_text_or_messages_is_a_config_error(
    default: Compressor, prompt: object
) -> None:
    with pytest.raises(ConfigError, match="a prompt must be a str or a sequence"):
        default.compress(prompt)  # type: ignore[call-overload]
    if not isinstance(prompt, list):
        with pytest.raises(ConfigError, match="must be a str"):
            default.explain(prompt)  # type: ignore[arg-type]


def test_explain_with_an_unknown_scorer_is_a_config_error(default: Compressor) -> None:
    for call in (default.explain, default.explain_decisions):
        with pytest.raises(ConfigError, match="scorer must be one of"):
            call("Some words.", scorer="bogus")  # type: ignore[arg-type,operator]
