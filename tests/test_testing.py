"""``promptsieve.testing``: the fakes users get for their own tests, used as a user would."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI, OpenAI

from _sieve_helpers import long_text
from promptsieve import (
    Compressor,
    CompressorConfig,
    Gate,
    GateConfig,
    ProxyConfig,
    Sieve,
    SieveConfig,
)
from promptsieve.testing import FixedVerdictStore, ScriptedTarget
from promptsieve_openai import wrap_openai

#: A budget a cold CI runner meets (the default 500 ms is for warm servers).
SLOW_CI = SieveConfig(scoring_budget_ms=30_000)


@pytest.fixture(scope="module")
def compressor(proxy_cache_dir: Path, proxy: object) -> Compressor:
    return Compressor(CompressorConfig(proxy=ProxyConfig(cache_dir=proxy_cache_dir)))


def _messages() -> list[Any]:
    return [{"role": "user", "content": long_text(6) + "\nQuestion: what does it cover?"}]


def test_passed_store_compresses_through_the_scripted_transport(compressor: Compressor) -> None:
    target = ScriptedTarget("Paris")
    store = FixedVerdictStore.passed(0.5)
    gate = Gate(store, GateConfig(monitor_rate=0.0))
    sieve = Sieve(SLOW_CI, compressor=compressor, gate=gate)
    http = httpx2.Client(transport=target.transport(httpx2))
    client = wrap_openai(OpenAI(base_url="http://t.test/v1", api_key="x", http_client=http), sieve)
    out = client.chat.completions.create(model="m", messages=_messages())
    assert out.choices[0].message.content == "Paris"
    sent = target.bodies[0]["messages"][0]["content"]
    assert len(sent) < len(_messages()[0]["content"])  # it went out compressed
    assert sieve.stats.compressed == 1 and sieve.stats.usage_reports == 1
    sieve.close()


def test_failed_store_sends_originals_and_async_transport_works(compressor: Compressor) -> None:
    target = ScriptedTarget(lambda body: f"{len(body['messages'])} messages")
    sieve = Sieve(SLOW_CI, compressor=compressor, gate=Gate(FixedVerdictStore.failed()))

    async def go() -> str | None:
        http = httpx2.AsyncClient(transport=target.transport(httpx2))
        client = wrap_openai(
            AsyncOpenAI(base_url="http://t.test/v1", api_key="x", http_client=http), sieve
        )
        out = await client.chat.completions.create(model="m", messages=_messages())
        await sieve.aclose()
        return out.choices[0].message.content

    assert asyncio.run(go()) == "1 messages"
    assert target.bodies[0]["messages"] == _messages()
    assert sieve.stats.compressed == 0


def test_screening_store_gets_the_shadow_comparison(compressor: Compressor) -> None:
    target = ScriptedTarget("same answer")
    store = FixedVerdictStore.screening(0.5)
    sieve = Sieve(SLOW_CI, compressor=compressor, gate=Gate(store))
    http = httpx2.Client(transport=target.transport(httpx2))
    client = wrap_openai(OpenAI(base_url="http://t.test/v1", api_key="x", http_client=http), sieve)
    client.chat.completions.create(model="m", messages=_messages())
    assert sieve.flush(30)
    assert len(target.bodies) == 2  # the live original, then the compressed shadow
    assert store.recorded and store.recorded[0][1:] == (0.5, True)


def test_responses_and_completions_routes() -> None:
    target = ScriptedTarget("hi")
    client = OpenAI(
        base_url="http://t.test/v1",
        api_key="x",
        http_client=httpx2.Client(transport=target.transport(httpx2)),
    )
    assert client.responses.create(model="m", input="hello there").output_text == "hi"
    done = client.completions.create(model="m", prompt="one two three")
    assert done.choices[0].text == "hi" and done.usage is not None
    assert done.usage.prompt_tokens == 3


def test_plain_httpx_clients_get_the_same_answers() -> None:
    import httpx

    target = ScriptedTarget("hello")
    with httpx.Client(transport=target.transport()) as http:
        r = http.post("http://t.test/v1/chat/completions", json={"model": "m", "messages": []})
        assert r.json()["choices"][0]["message"]["content"] == "hello"
        assert http.post("http://t.test/v1/nothing", json={}).status_code == 404
        assert http.post("http://t.test/v1/completions", content=b"{").status_code == 400


def test_streamed_requests_get_the_reply_as_server_sent_events() -> None:
    """``stream=True`` through a real openai client: every route streams the scripted reply,
    deltas joining back to it exactly, with usage where ``stream_options`` asks."""
    answer = "The capital is  Paris.\n"
    target = ScriptedTarget(answer)
    client = OpenAI(
        base_url="http://t.test/v1",
        api_key="x",
        http_client=httpx2.Client(transport=target.transport(httpx2)),
    )
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "one two"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 2
    pieces = list(client.completions.create(model="m", prompt="a b c", stream=True))
    assert "".join(p.choices[0].text for p in pieces) == answer
    events = list(client.responses.create(model="m", input="hello", stream=True))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["The ", "capital ", "is  ", "Paris.\n"]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == answer
    assert [b.get("stream") for b in target.bodies] == [True, True, True]
    # the SDK's stream helpers check the event order and accumulate the deltas
    with client.chat.completions.stream(
        model="m", messages=[{"role": "user", "content": "x"}]
    ) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == answer
    assert final.choices[0].message.role == "assistant"
    with client.responses.stream(model="m", input="hello") as rs:
        assert rs.get_final_response().output_text == answer


def test_a_wrapped_streamed_call_goes_through(compressor: Compressor) -> None:
    target = ScriptedTarget("Paris")
    gate = Gate(FixedVerdictStore.passed(0.5), GateConfig(monitor_rate=0.0))
    sieve = Sieve(SLOW_CI, compressor=compressor, gate=gate)
    http = httpx2.Client(transport=target.transport(httpx2))
    client = wrap_openai(OpenAI(base_url="http://t.test/v1", api_key="x", http_client=http), sieve)
    stream = client.chat.completions.create(model="m", messages=_messages(), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Paris"
    assert target.bodies[0]["stream"] is True
    sieve.close()
