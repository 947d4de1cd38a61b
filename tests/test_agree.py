"""Agreement metrics on target outputs."""

from __future__ import annotations

import numpy as np
import pytest

from promptsieve import ConfigError
from promptsieve.fidelity import (
    TargetOutput,
    auto_metric,
    extract_answer,
    extract_choice,
    extract_number,
    get_metric,
    token_f1,
)


def T(text: str, calls: tuple[tuple[str, str], ...] = ()) -> TargetOutput:
    return TargetOutput(text, calls)


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Let's think. 3 + 4 = 7.\n#### 7", "7"),
        ("Step one... So the answer is (B).", "(B)"),
        ("The answer is True. Next question", "True"),
        ("Answer: Paris\nQ: what else", "Paris"),
        (" valid\n\nQ: not ( True ) is", "valid"),
        ("So the answer is 3.14.", "3.14"),
        ("", ""),
    ],
)
def test_extract_answer(text: str, answer: str) -> None:
    assert extract_answer(text) == answer


def test_extract_number_and_choice() -> None:
    assert extract_number("He pays $1,250.50 in total. The answer is $1,250.50.") == 1250.5
    assert extract_number("#### -3") == -3
    assert extract_number("no digits here") is None
    assert extract_choice("The answer is (C).") == "C"
    assert extract_choice("B") == "B"
    assert extract_choice("(D) because") == "D"
    assert extract_choice("I think so") is None


def test_named_metrics() -> None:
    exact = get_metric("exact")
    assert exact is not None
    assert exact(T("  The Paris. "), T("paris"))
    assert not exact(T("Paris"), T("Lyon"))
    numeric = get_metric("numeric")
    assert numeric is not None
    assert numeric(T("so 12 apples\n#### 12"), T("The answer is 12.0."))
    assert not numeric(T("#### 12"), T("#### 13"))
    assert not numeric(T("#### 12"), T("no idea"))
    choice = get_metric("choice")
    assert choice is not None
    assert choice(T("(A)"), T("The answer is (A)."))
    assert not choice(T("(A)"), T("(B)"))
    js = get_metric("json")
    assert js is not None
    assert js(T('{"a": 1, "b": [1, 2]}'), T('```json\n{"b": [1,2], "a": 1}\n```'))
    assert not js(T('{"a": 1}'), T('{"a": 2}'))
    assert not js(T('{"a": 1}'), T("not json"))
    tc = get_metric("tool_calls")
    assert tc is not None
    a = T("", (("get_weather", '{"city": "Oslo", "unit": "C"}'), ("time", "{}")))
    b = T("x", (("time", ""), ("get_weather", '{"unit":"C","city":"Oslo"}')))
    assert tc(a, b)
    assert not tc(a, T("", (("get_weather", '{"city": "Bergen"}'),)))
    f1 = get_metric("f1:0.8")
    assert f1 is not None
    assert f1(T("the cat sat on the mat today"), T("the cat sat on the mat"))
    assert not f1(T("the cat sat on the mat"), T("a dog ran"))
    assert token_f1("", "") == 1.0


def test_cosine_metric_uses_embed() -> None:
    vectors = {"a": [1.0, 0.0], "b": [0.96, 0.28], "c": [0.0, 1.0]}

    def embed(texts):  # a real (tiny) embedding table
        return np.array([vectors[t] for t in texts])

    cos = get_metric("cosine:0.9", embed=embed)
    assert cos is not None
    assert cos(T("a"), T("b"))
    assert not cos(T("a"), T("c"))
    with pytest.raises(ConfigError, match="embed"):
        get_metric("cosine:0.9")


def test_callable_and_errors() -> None:
    def same_length(a: TargetOutput, b: TargetOutput) -> bool:
        return len(a.text) == len(b.text)

    assert get_metric(same_length) is same_length
    assert get_metric(None) is None
    for bad in ("nope", "f1:x", "f1:1.5"):
        with pytest.raises(ConfigError):
            get_metric(bad)


@pytest.mark.parametrize(
    ("output", "name"),
    [
        (T("", (("f", "{}"),)), "tool_calls"),
        (T('{"answer": 3}'), "json_equal"),
        (T("(B)"), "choice"),
        (T("The answer is (C)."), "choice"),
        (T("Natalia sold 48 + 24 = 72 clips.\n#### 72"), "numeric"),
        (T("42"), "numeric"),
        (T("Let me think about it. The answer is Paris."), "answer"),
        (T("valid"), "squad:0.5"),
        (T(" ".join(["word"] * 40)), "f1:0.8"),
    ],
)
def test_auto_metric_shapes(output: TargetOutput, name: str) -> None:
    assert auto_metric(output).__name__ == name


def test_squad_answer_match_for_free_text() -> None:
    from promptsieve.fidelity import answer_match

    squad = get_metric("squad:0.5")
    assert squad is not None and squad.__name__ == "squad:0.5"
    assert squad(T("Chur"), T("The Posterior Rhine turns north near Chur."))
    assert squad(T("The answer is: the Rhine."), T("rhine"))
    assert not squad(T("Chur"), T("Zurich"))
    assert not squad(T("red"), T("It is not red."))  # a negation is not agreement
    assert not squad(T("Chur"), T(" ".join(["word"] * 40) + " Chur"))  # too long to contain
    assert squad(T("the river Rhine in Chur"), T("river Rhine near Chur"))  # token-F1 0.75
    assert not answer_match(0.9)(T("the river Rhine in Chur"), T("river Rhine near Chur"))
    assert auto_metric(T("Chur"))(T("Chur"), T("Near Chur."))
    with pytest.raises(ConfigError):
        answer_match(1.5)
