"""The demonstration benchmark's layout and its fixed-rung report (no model needed)."""

from __future__ import annotations

from typing import Any

import pytest
from benchmarks.demos_report import part_a_half
from benchmarks.demos_tasks import TASKS, fmt_for, parse_answer
from benchmarks.suites import CHAT_ANSWER_FORMAT

pytestmark = pytest.mark.usefixtures("bigbench")  # BIG-bench task files


def test_chat_layout_carries_the_answer_format_system_message() -> None:
    # without it the instruct target opened every date_understanding reply with a preamble
    # and no option letter was parsed (0/40 in every arm)
    for spec in TASKS.values():
        fmt = fmt_for(spec)
        assert fmt.chat and fmt.system == CHAT_ANSWER_FORMAT
        assert fmt.render([], "Q1").startswith(spec.header)


def test_turns_layout_is_one_message_pair_per_demonstration() -> None:
    # the ChatML that llama.cpp's server renders for [system, (user, assistant) per
    # demonstration, user]: the target and the proxy read exactly this text
    from promptsieve.demos import Demonstration

    spec = TASKS["implicatures"]
    fmt = fmt_for(spec, "turns")
    assert fmt.chat and fmt.pairs
    demos = [Demonstration("Is it cold?\nSpeaker 2: Bring a coat.", "Yes"),
             Demonstration("Done?\nSpeaker 2: Not yet.", "No")]  # fmt: skip
    text = fmt.lm_text(demos, "Hungry?\nSpeaker 2: I just ate.")
    head, *turns = text.split("<|im_start|>")
    assert head == ""
    roles = [t.partition("\n")[0] for t in turns]
    contents = [t.partition("\n")[2].removesuffix("<|im_end|>\n") for t in turns]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert contents[0] == f"{CHAT_ANSWER_FORMAT}\n{spec.header.strip()}"
    assert contents[1:5] == [demos[0].input, "Yes", demos[1].input, "No"]
    assert contents[5] == "Hungry?\nSpeaker 2: I just ate."
    assert contents[6] == ""  # the prompt ends where the assistant's answer starts
    assert fmt.lm_text([], "Q").count("<|im_start|>user") == 1


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


def test_poison_flips_the_share_asked_and_never_keeps_a_label() -> None:
    from benchmarks.demos_bench import poison
    from benchmarks.demos_tasks import Draw

    from promptsieve.demos import Demonstration

    demos = tuple(Demonstration(f"q{i}", "yes" if i % 2 else "no") for i in range(16))
    d = Draw("implicatures", 100, demos, (), (("q", "yes"),), ("yes", "no"))
    poisoned, flipped = poison(d, 0.375, 0)
    assert len(flipped) == 6 and flipped == sorted(set(flipped))
    for i, (before, after) in enumerate(zip(demos, poisoned, strict=True)):
        assert after.input == before.input
        assert (after.output != before.output) == (i in flipped)
    assert poison(d, 0.375, 0) == (poisoned, flipped)  # seeded by task and repeat
    assert poison(d, 0.375, 1)[1] != flipped


def test_sentiment_keeps_only_positive_and_negative_reviews(bigbench: str) -> None:
    # multiemo has four classes; the SST-like task keeps the two polar ones (BIG-bench sdist)
    from benchmarks.demos_tasks import _examples, items

    rows = items(TASKS["sentiment"])
    assert 0 < len(rows) < len(_examples(TASKS["sentiment"].folder))  # the others are left out
    if bigbench == "sdist":
        assert len(rows) > 30_000
    assert {gold for _, gold, _ in rows} == {"positive", "negative"}
    assert {choices for _, _, choices in rows} == {("positive", "negative")}


def test_poison_probe_table_counts_last_label_repeats() -> None:
    from benchmarks.demos_report import part_poison_probe

    row = {
        "task": "implicatures", "target": "t", "n_demos": 16, "flipped": [1, 2], "n_test": 4,
        "last_label": {"clean": "no", "poisoned": "yes"},
        "clean_answers": ["no", "no", "no", "no"], "zero_answers": ["yes", "no", "yes", None],
        "clean_correct": [1, 0, 1, 0], "poisoned_correct": [1, 0, 1, 0],
        "zero_correct": [0, 1, 1, 1],
    }  # fmt: skip
    text = "\n".join(part_poison_probe([row]))
    assert "| implicatures | turn | 0.50 | 50% [15%, 85%] | 50% | 75% |" in text
    assert "| 100% / 25% |" in text


def test_poisoned_draws_pool_across_tasks() -> None:
    from benchmarks.demos_report import part_b

    def draw(task: str, **correct: list[int]) -> dict[str, Any]:
        methods = {m: {"correct": c, "removed": [0]} for m, c in correct.items()}
        return {"task": task, "repeat": 0, "n_demos": 16, "flipped": [0], "n_test": 2,
                "target": "t", "samples": 64, "methods": methods}  # fmt: skip

    rows = [
        draw("fever", none=[0, 0], proxy=[1, 1], oracle=[1, 0], random=[0, 1]),
        draw("implicatures", none=[1, 0], proxy=[1, 1], oracle=[1, 1], random=[1, 0]),
    ]
    text = "\n".join(part_b(rows))
    assert "### (b) pooled: 2 draws, 2 tasks, 4 test questions" in text
    assert "| none | 25.0% [5%, 70%] | 3 / 0, p 0.25 | 2 / 0, p 0.5 |" in text
    assert "| random | 50.0% [15%, 85%] | 2 / 0, p 0.5 | 2 / 1, p 1 |" in text
    assert "| proxy | 100.0% [51%, 100%] |  | 0 / 1, p 1 |" in text
    assert "| oracle | 75.0% [30%, 95%] | 1 / 0, p 1 |  |" in text
    assert "pooled" not in "\n".join(part_b(rows[:1]))  # one task: nothing to pool
    # draws in the message-pair layout are reported apart, never pooled with the others
    turns = [{**r, "layout": "turns"} for r in rows]
    text = "\n".join(part_b(rows + turns[:1]))
    assert text.count("### (b) pooled") == 1 and "layout turns; Kernel SHAP" in text
    assert "2 draws, 2 tasks, 4 test questions, layout turn" in text


def test_report_gives_each_layout_its_own_selection_table(tmp_path: Any, monkeypatch: Any) -> None:
    """Draws in the one-message layout and as message pairs are never averaged together."""
    import json

    from benchmarks import demos_report

    def draw(layout: str, share: float, repeat: int) -> dict[str, Any]:
        m = {"share": share, "values": [0.1, 0.2, 0.3], "half_correct": [1, 0],
             "seconds": 1.0, "evaluations": 60, "target": {}, "cached": True}  # fmt: skip
        return {
            "task": "sports_understanding", "repeat": repeat, "layout": layout,
            "target": "q", "n_demos": 8, "n_val": 3, "n_test": 2, "full_acc": 0.5,
            "zero_shot_acc": 0.5, "full_correct": [1, 0],
            "methods": {k: dict(m) for k in ("proxy", "oracle", "random")},
        }  # fmt: skip

    rows = [draw("turn", 0.25, 0), draw("turns", 0.75, 0), draw("turns", 0.5, 1)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(demos_report, "RESULTS", tmp_path)  # main() rebinds it
    demos_report.main(tmp_path)
    text = (tmp_path / "report.md").read_text()
    one, pairs = text.split("layout turn)")[1], text.split("layout turns)")[1]
    assert "(1 draws:" in text and "(2 draws:" in text
    assert "| sports_understanding | 1 |" in one.split("###")[0]
    assert "**62.5%**" in pairs.split("####")[0]  # the mean of the two message-pair draws
    assert "**25.0%**" in one.split("####")[0]
