"""``benchmarks.demos_target.ChatTarget``: the demonstration benchmarks' target over an
OpenAI-compatible chat API. A real ``openai`` client against a real llama.cpp server on
127.0.0.1 (the CI's Gemma GGUF), with a recording pass-through in front of it to check what
went over the wire; a scripted server only for the API that returns no log-probabilities."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _scripted_server import Recorded, Reply, ScriptedServer, chat_completion, forward_to
from promptsieve.demos import DemoFormat, Demonstration, ValidationExample

pytestmark = pytest.mark.slow

DEMOS = [
    Demonstration("Is fire hot?", "yes"),
    Demonstration("Is ice hot?", "no"),
    Demonstration("Is the sun hot?", "yes"),
]
VAL = [ValidationExample("Is snow hot?", "no"), ValidationExample("Is lava hot?", "yes")]
TURN = DemoFormat(header="Answer yes or no.\n\n", system="Be brief.")
PAIRS = DemoFormat(header="Answer yes or no.", pairs=True)


@pytest.fixture(scope="module")
def recorder() -> Iterator[ScriptedServer]:
    """A pass-through in front of a real llama.cpp server that records every request."""
    from promptsieve.local import LocalTarget

    with LocalTarget.start() as target, ScriptedServer(forward_to(target.base_url)) as srv:
        yield srv


def _target(url: str, cache_path: Path | None = None, **kw: Any) -> Any:
    from benchmarks.demos_target import ChatTarget
    from benchmarks.target import CallCache

    return ChatTarget(url, "gemma-3-270m", api_key="none", cache=CallCache(cache_path), **kw)


@pytest.mark.parametrize("fmt", [TURN, PAIRS], ids=["one-message", "message-pairs"])
def test_chat_target_sends_the_format_layout_and_caches(
    recorder: ScriptedServer, fmt: DemoFormat, tmp_path: Path
) -> None:
    t = _target(recorder.url, tmp_path / "calls.sqlite3")
    recorder.clear()
    first = t.reply(fmt, DEMOS, "Is snow hot?")
    body = recorder.bodies("/chat/completions")[-1]
    assert body["messages"] == fmt.messages(DEMOS, "Is snow hot?")
    assert body["temperature"] == 0.0 and body["max_tokens"] == t.max_tokens
    assert isinstance(first, str) and t.counts["computed_calls"] == 1
    assert t.counts["prompt_tokens"] > 0  # the server's usage.prompt_tokens
    # a new target on the same cache file answers from it, without a request
    again = _target(recorder.url, tmp_path / "calls.sqlite3")
    assert again.reply(fmt, DEMOS, "Is snow hot?") == first
    assert again.counts["computed_calls"] == 0 and again.counts["calls"] == 1
    assert len(recorder.bodies("/chat/completions")) == 1


MC_DEMOS = [
    Demonstration("Which is a fruit? Options: (A) apple (B) car (C) rock", "(A)"),
    Demonstration("Which is a color? Options: (A) dog (B) red (C) sky", "(B)"),
]
MC = DemoFormat(pairs=True, system="Answer with the option letter in parentheses.")
MC_Q = "Which is an animal? Options: (A) cat (B) table (C) cloud"


def test_answer_logprob_walks_the_greedy_reply(recorder: ScriptedServer) -> None:
    """Gemma splits "(A)" into "(", "A", ")": each option is scored past the shared "(",
    and the option the target picks greedily scores highest."""
    t = _target(recorder.url)
    recorder.clear()
    values = {a: t.answer_logprob(MC, MC_DEMOS, MC_Q, a) for a in ("(A)", "(B)", "(C)")}
    body = recorder.bodies("/chat/completions")[-1]
    assert body["max_tokens"] == t.answer_tokens and body["logprobs"] is True
    assert body["top_logprobs"] == 20
    assert len(set(values.values())) == 3 and all(-20 < v < 0 for v in values.values())
    picked = t.reply(MC, MC_DEMOS, MC_Q).strip()[:3]
    assert picked in values and values[picked] == max(values.values())
    assert t.counts["floored"] == 0


def test_oracle_values_on_a_chat_target(recorder: ScriptedServer) -> None:
    from benchmarks.demos_target import OracleScorer

    t = _target(recorder.url)
    coalitions = [(), (0,), (0, 1), (0, 1, 2)]
    values = OracleScorer(t).values(DEMOS, VAL, TURN, coalitions)
    assert values.shape == (4,) and np.all(np.isfinite(values))
    assert t.counts["computed_calls"] == len(coalitions) * len(VAL)
    # the demos cache never reuses values of another definition of the oracle's value
    assert OracleScorer(t).fingerprint == f"oracle:{t.oracle_id}"
    assert OracleScorer(_target(recorder.url, top_logprobs=5)).fingerprint != (
        OracleScorer(t).fingerprint
    )


def test_answer_path_logprob_scores_the_answer_token_by_token() -> None:
    from collections import Counter

    from benchmarks.demos_target import answer_path_logprob

    lse = np.logaddexp
    split = [  # a tokenizer that splits "(C)" into "(", "C", ")" (Gemma)
        ["(", -0.03, [["(", -0.03], ["The", -4.0]]],
        ["C", -0.97, [["C", -0.97], ["B", -1.21], ["A", -1.53]]],
        [")", -0.01, [[")", -0.01], [").", -5.0], [")A", -6.0]]],
    ]
    counts: Counter[str] = Counter()
    assert answer_path_logprob(split, "(C)", counts) == pytest.approx(-1.0 + lse(-0.01, -5.0))
    assert answer_path_logprob(split, "(B)", counts) == pytest.approx(-0.03 - 1.21)
    assert answer_path_logprob(split, "(D)", counts) == pytest.approx(-0.03 - 1.53)
    assert counts["floored"] == 1  # "D" is not listed: the smallest listed value
    joined = [["(C", -0.5, [["(C", -0.5], ["(B", -1.0], ["(", -3.0]]], [")", -0.01, [[")", -0.01]]]]
    assert answer_path_logprob(joined, "(C)") == pytest.approx(-0.51)  # Qwen: "(C", ")"
    assert answer_path_logprob(joined, "(B)") == pytest.approx(lse(-1.0, -3.0))
    words = [[" yes.", -0.2, [[" yes.", -0.2], [" Yes", -1.0], [" no", -2.0], [" not", -2.5]]]]
    assert answer_path_logprob(words, " yes") == pytest.approx(-0.2)  # "yes" + punctuation
    assert answer_path_logprob(words, "no") == pytest.approx(-2.0)  # not "not"
    assert answer_path_logprob(words, "Yes\n") == pytest.approx(-1.0)
    assert answer_path_logprob(words, "") == 0.0
    short = [["(", -0.1, [["(", -0.1]]]]
    assert answer_path_logprob(short, "(A)", counts) == pytest.approx(-0.1)
    assert counts["truncated"] == 1


def test_a_chat_api_without_logprobs_is_a_clear_error() -> None:
    def no_logprobs(rec: Recorded) -> Reply:
        return Reply(json=chat_completion("yes"))

    with ScriptedServer(no_logprobs) as srv:
        t = _target(srv.url)
        assert t.reply(TURN, DEMOS, "Is lava hot?") == "yes"
        with pytest.raises(RuntimeError, match="top_logprobs"):
            t.answer_logprob(TURN, DEMOS, "Is lava hot?", "yes")


def test_an_unreachable_api_names_its_url() -> None:
    with ScriptedServer() as srv:
        url = srv.url
    t = _target(url, timeout=5.0)
    with pytest.raises(RuntimeError, match=url.replace(".", r"\.") + ".*base URL"):
        t.reply(TURN, DEMOS, "Is lava hot?")


def test_messages_of_the_one_message_layout() -> None:
    from promptsieve import ConfigError

    assert TURN.messages(DEMOS[:1], "Is it?") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": TURN.render(DEMOS[:1], "Is it?")},
    ]
    assert DemoFormat().messages([], "Is it?") == [
        {"role": "user", "content": DemoFormat().render([], "Is it?")}
    ]
    with pytest.raises(ConfigError, match="chat=True"):
        DemoFormat(chat=False).messages(DEMOS, "Is it?")


def test_a_chat_target_run_needs_its_own_results_folder(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.demos_bench import main

    with pytest.raises(SystemExit):
        main(["b", "--target", "gpt-4o-mini", "--base-url", "http://127.0.0.1:9/v1"])
    assert "--base-url needs --out" in capsys.readouterr().err
