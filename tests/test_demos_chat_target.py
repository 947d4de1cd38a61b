"""``benchmarks.demos_target.ChatTarget``: the demonstration benchmarks' target over an
OpenAI-compatible chat API. A real ``openai`` client against a real llama.cpp server on
127.0.0.1 (the CI's Gemma GGUF), with a recording pass-through in front of it to check what
went over the wire; a scripted server only for the API that returns no log-probabilities."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _scripted_server import Recorded, Reply, ScriptedServer, chat_completion
from promptsieve.demos import DemoFormat, Demonstration, ValidationExample

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

    with LocalTarget.start() as target:

        def forward(rec: Recorded) -> Reply:
            req = urllib.request.Request(
                target.base_url + rec.path.split("/v1", 1)[1],
                data=rec.body,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    return Reply(status=resp.status, json=json.loads(resp.read()))
            except urllib.error.HTTPError as exc:
                return Reply(status=exc.code, json=json.loads(exc.read() or b"{}"))

        with ScriptedServer(forward) as srv:
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


def test_answer_logprob_reads_the_first_answer_token(recorder: ScriptedServer) -> None:
    t = _target(recorder.url)
    recorder.clear()
    reply = t.reply(TURN, DEMOS, "Is lava hot?").strip()
    assert reply
    own = t.answer_logprob(TURN, DEMOS, "Is lava hot?", reply)
    body = recorder.bodies("/chat/completions")[-1]
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 20
    # greedy decoding picks the most probable first token: the reply's own first token has
    # the largest listed mass, so no other answer scores higher
    assert own <= 0.0 and math.isfinite(own)
    for other in ("zebra", "Paris", "42"):
        assert t.answer_logprob(TURN, DEMOS, "Is lava hot?", other) <= own + 1e-6


def test_oracle_values_on_a_chat_target(recorder: ScriptedServer) -> None:
    from benchmarks.demos_target import OracleScorer

    t = _target(recorder.url)
    coalitions = [(), (0,), (0, 1), (0, 1, 2)]
    values = OracleScorer(t).values(DEMOS, VAL, TURN, coalitions)
    assert values.shape == (4,) and np.all(np.isfinite(values))
    assert t.counts["computed_calls"] == len(coalitions) * len(VAL)
    assert OracleScorer(t).fingerprint == f"oracle:{t.identity}"


def test_first_token_logprob_sums_the_tokens_that_begin_the_answer() -> None:
    from collections import Counter

    from benchmarks.demos_target import first_token_logprob

    top = [["True", -0.5], [" True", -2.0], ["False", -1.2], ["Tr", -6.0]]
    assert first_token_logprob(top, " True") == pytest.approx(
        float(np.logaddexp.reduce([-0.5, -2.0, -6.0]))
    )
    counts: Counter[str] = Counter()
    assert first_token_logprob(top, "Neither", counts) == -6.0  # not listed: an upper bound
    assert counts["floored"] == 1


def test_a_chat_api_without_logprobs_is_a_clear_error() -> None:
    def no_logprobs(rec: Recorded) -> Reply:
        return Reply(json=chat_completion("yes"))

    with ScriptedServer(no_logprobs) as srv:
        t = _target(srv.url)
        assert t.reply(TURN, DEMOS, "Is lava hot?") == "yes"
        with pytest.raises(RuntimeError, match="top_logprobs"):
            t.answer_logprob(TURN, DEMOS, "Is lava hot?", "yes")


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
