"""The demonstration benchmark's layout and its fixed-rung report (no model needed)."""

from __future__ import annotations

from typing import Any

from benchmarks.demos_report import part_a_half
from benchmarks.demos_tasks import TASKS, fmt_for, parse_answer
from benchmarks.suites import CHAT_ANSWER_FORMAT


def test_chat_layout_carries_the_answer_format_system_message() -> None:
    # without it the instruct target opened every date_understanding reply with a preamble
    # and no option letter was parsed (0/40 in every arm)
    for spec in TASKS.values():
        fmt = fmt_for(spec)
        assert fmt.chat and fmt.system == CHAT_ANSWER_FORMAT
        assert fmt.render([], "Q1").startswith(spec.header)


def test_parse_answer_letters_and_labels() -> None:
    letters = ("(A)", "(B)", "(C)")
    assert parse_answer("(B)", letters) == "(B)"
    assert parse_answer("C", letters) == "(C)"
    assert parse_answer("To solve these problems, we", letters) is None
    assert parse_answer("(D)", letters) is None
    assert parse_answer("No, yes", ("Yes", "No")) == "No"


def _row(full: list[int], halves: dict[str, list[int]]) -> dict[str, Any]:
    return {
        "task": "t", "repeat": 0, "n_demos": 8, "full_correct": full,
        "methods": {m: {"half_correct": h} for m, h in halves.items()},
    }  # fmt: skip


def test_fixed_rung_pools_draws_and_pairs_questions() -> None:
    rows = [
        _row([1, 1, 0, 1], {"proxy": [1, 1, 0, 1], "random": [0, 1, 0, 0]}),
        _row([1, 0, 1, 1], {"proxy": [1, 0, 1, 1], "random": [0, 0, 1, 1]}),
        {"task": "old", "repeat": 0, "n_demos": 8, "methods": {}},  # before the rung existed
    ]
    text = "\n".join(part_a_half(rows))
    assert "2 draws, 8 test questions pooled" in text
    assert "| proxy, half removed | 75.0% |" in text
    assert "| random, half removed | 37.5% |" in text
    # proxy right and random wrong on 3 questions, never the reverse: exact p = 0.25
    assert "| 3 / 0 | 0.25 |" in text
    assert part_a_half([rows[2]]) == []
