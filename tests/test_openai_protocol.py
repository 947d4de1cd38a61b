"""wrap_openai against a real openai client and a scripted OpenAI-compatible server.

Every assertion about what was sent reads the raw bodies the server recorded.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from _scripted_server import (
    Reply,
    ScriptedServer,
    chat_chunks,
    chat_completion,
    completion_chunks,
    error,
    response_object,
)
from _sieve_helpers import ScriptedGate, WordDropCompressor, apply, long_text, shadow
from promptsieve._context import task
from promptsieve.sieve import Sieve, SieveConfig
from promptsieve_openai import sieve_of, unwrap_openai, wrap_openai

MODEL = "gpt-4o-mini"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def _client(server: ScriptedServer) -> OpenAI:
    return OpenAI(base_url=server.url, api_key="x", max_retries=0)


def _aclient(server: ScriptedServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0)


def _fixed(ratio: float = 0.5, **kw: Any) -> Sieve:
    """Compress every request at ``ratio`` (verify=False) with the word-drop compressor."""
    return Sieve(SieveConfig(verify=False, ratio=ratio, guard=False, **kw),
                 compressor=WordDropCompressor())  # fmt: skip


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up in the glossary of the annual report",
            "parameters": {
                "type": "object",
                "properties": {"word": {"type": "string", "description": "the word to look up"}},
                "required": ["word"],
            },
        },
    }
]
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"answer": {"type": "string"}}},
        "strict": True,
    },
}


def _conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You are terse. " + long_text(1)},
        {"role": "user", "content": long_text(2)},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup", "arguments": '{"word": "quarterly report"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Tool result: " + long_text(1)},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": long_text(2)},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
    ]


# -- identity and typing -------------------------------------------------------------------
def test_wrap_returns_same_object_and_unwrap_restores(server: ScriptedServer) -> None:
    client = _client(server)
    sieve = _fixed()
    assert wrap_openai(client, sieve) is client
    assert isinstance(client, OpenAI)
    assert sieve_of(client) is sieve
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
    )
    assert len(server.bodies()[0]["messages"][0]["content"]) < len(long_text(1))
    unwrap_openai(client)
    assert sieve_of(client) is None
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
    )
    assert server.bodies()[1]["messages"][0]["content"] == long_text(1)


def test_wrapping_twice_does_not_stack(server: ScriptedServer) -> None:
    client = wrap_openai(wrap_openai(_client(server), _fixed(0.5)), _fixed(0.5))
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(2)}]
    )
    sent = server.bodies()[0]["messages"][0]["content"]
    assert len(sent.split()) == round(len(long_text(2).split()) * 0.5)  # halved once, not twice


def test_with_options_copy_is_wrapped(server: ScriptedServer) -> None:
    sieve = _fixed()
    client = wrap_openai(_client(server), sieve)
    other = client.with_options(timeout=5.0)
    assert other is not client and sieve_of(other) is sieve
    other.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": long_text(1)}])
    assert sieve.stats.compressed == 1


# -- chat: what is and is not altered --------------------------------------------------------
def test_chat_protected_fields_go_out_byte_identical(server: ScriptedServer) -> None:
    plain = _client(server)
    wrapped = wrap_openai(_client(server), _fixed())
    kwargs: dict[str, Any] = dict(
        model=MODEL, messages=_conversation(), tools=TOOLS, response_format=RESPONSE_FORMAT,
        tool_choice="auto", temperature=0, max_tokens=7, seed=3, metadata={"k": "v"},
    )  # fmt: skip
    plain.chat.completions.create(**kwargs)
    wrapped.chat.completions.create(**kwargs)
    ref, got = server.bodies()
    # everything but the user text is identical, key by key
    for k in ref:
        if k != "messages":
            assert json.dumps(got[k]) == json.dumps(ref[k]), k
    assert set(got) == set(ref)
    rm, gm = ref["messages"], got["messages"]
    for i in (0, 2, 3):  # system, assistant tool_calls, tool: untouched
        assert json.dumps(gm[i]) == json.dumps(rm[i])
    assert len(gm[1]["content"]) < len(rm[1]["content"])  # user text compressed
    assert gm[4]["content"][1] == rm[4]["content"][1]  # the image part, untouched
    assert len(gm[4]["content"][0]["text"]) < len(rm[4]["content"][0]["text"])
    assert gm[4]["content"][0]["type"] == "text"
    # the caller's own objects were not mutated
    assert kwargs["messages"][1]["content"] == long_text(2)


def test_tool_call_response_and_usage(server: ScriptedServer) -> None:
    server.push(Reply(json=chat_completion(None, tool_calls=[("lookup", '{"word":"x"}')])))
    sieve = _fixed()
    client = wrap_openai(_client(server), sieve)
    out = client.chat.completions.create(model=MODEL, messages=_conversation(), tools=TOOLS)
    assert isinstance(out, openai.types.chat.ChatCompletion)
    assert out.choices[0].message.tool_calls[0].function.name == "lookup"  # type: ignore[index,union-attr]
    snap = sieve.stats.snapshot()
    assert snap["usage_reports"] == 1 and snap["prompt_tokens_reported"] == 10
    assert snap["tokens_saved"] > 0


def test_generator_messages_are_read_once(server: ScriptedServer) -> None:
    client = wrap_openai(_client(server), _fixed())
    msgs = (m for m in [{"role": "user", "content": long_text(1)}])
    client.chat.completions.create(model=MODEL, messages=msgs)
    assert server.bodies()[0]["messages"][0]["content"]


# -- completions and responses -----------------------------------------------------------------
def test_completions_sync(server: ScriptedServer) -> None:
    client = wrap_openai(_client(server), _fixed())
    out = client.completions.create(model="m", prompt=long_text(2), max_tokens=3, echo=False)
    assert out.choices[0].text == " ok"
    assert len(server.bodies()[0]["prompt"].split()) < len(long_text(2).split())
    client.completions.create(model="m", prompt=long_text(2), echo=True)  # echo: untouched
    client.completions.create(model="m", prompt=[long_text(1), long_text(1)])  # batch: untouched
    assert server.bodies()[1]["prompt"] == long_text(2)
    assert server.bodies()[2]["prompt"] == [long_text(1), long_text(1)]


def test_responses_sync_instructions_and_items_untouched(server: ScriptedServer) -> None:
    client = wrap_openai(_client(server), _fixed())
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": long_text(2)},
                                     {"type": "input_image", "image_url": "https://x/y.png"}]},
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"a": 1}'},
        {"type": "function_call_output", "call_id": "c1", "output": long_text(1)},
    ]  # fmt: skip
    out = client.responses.create(model=MODEL, instructions=long_text(1), input=items)
    assert out.output_text == "ok"
    body = server.bodies()[0]
    assert body["instructions"] == long_text(1)
    assert body["input"][1:] == items[1:]
    assert body["input"][0]["content"][1] == items[0]["content"][1]
    assert len(body["input"][0]["content"][0]["text"]) < len(long_text(2))
    client.responses.create(model=MODEL, input=long_text(2))
    assert isinstance(server.bodies()[1]["input"], str)
    assert len(server.bodies()[1]["input"]) < len(long_text(2))


async def test_async_chat_completions_responses(server: ScriptedServer) -> None:
    sieve = _fixed()
    client = wrap_openai(_aclient(server), sieve)
    assert isinstance(client, AsyncOpenAI)
    c = await client.chat.completions.create(model=MODEL, messages=_conversation())
    assert c.choices[0].message.content == "ok"
    t = await client.completions.create(model="m", prompt=long_text(2))
    assert t.choices[0].text == " ok"
    r = await client.responses.create(model=MODEL, input=long_text(2))
    assert r.output_text == "ok"
    bodies = server.bodies()
    assert len(bodies[0]["messages"][1]["content"]) < len(long_text(2))
    assert len(bodies[1]["prompt"]) < len(long_text(2))
    assert len(bodies[2]["input"]) < len(long_text(2))
    assert sieve.stats.compressed == 3


# -- streaming -------------------------------------------------------------------------------
def test_stream_returns_sdk_stream_untouched(server: ScriptedServer) -> None:
    server.push(Reply(sse=chat_chunks(["Hel", "lo"])), Reply(sse=chat_chunks(["a", "b"])))
    client = wrap_openai(_client(server), _fixed())
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}], stream=True
    )
    assert type(stream) is openai.Stream
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == "Hello"
    with client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": long_text(1)}],
        stream=True,
        stream_options={"include_usage": True},
    ) as s2:
        assert "".join(c.choices[0].delta.content or "" for c in s2 if c.choices) == "ab"
    bodies = server.bodies()
    assert bodies[0]["stream"] is True and bodies[1]["stream_options"] == {"include_usage": True}
    assert len(bodies[0]["messages"][0]["content"]) < len(long_text(1))


async def test_async_stream_context_manager(server: ScriptedServer) -> None:
    server.push(Reply(sse=completion_chunks([" a", "b"])))
    client = wrap_openai(_aclient(server), _fixed())
    stream = await client.completions.create(model="m", prompt=long_text(1), stream=True)
    assert type(stream) is openai.AsyncStream
    async with stream as s:
        assert "".join([c.choices[0].text async for c in s]) == " ab"


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "exc"),
    [
        (400, openai.BadRequestError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
def test_target_errors_reach_the_caller(
    server: ScriptedServer, status: int, exc: type[Exception]
) -> None:
    server.push(error(status))
    gate = ScriptedGate(shadow())
    client = wrap_openai(_client(server), Sieve(compressor=WordDropCompressor(), gate=gate))
    with pytest.raises(exc):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
        )
    assert len(server.requests) == 1  # never retried by us, no comparison for a failed call
    assert gate.records and gate.records[0][2] is None  # the shadow slot was handed back


async def test_async_target_error(server: ScriptedServer) -> None:
    server.push(error(500))
    client = wrap_openai(_aclient(server), _fixed())
    with pytest.raises(openai.InternalServerError):
        await client.responses.create(model=MODEL, input=long_text(1))


# -- raw responses ---------------------------------------------------------------------------
def test_with_raw_response_goes_through_the_sieve(server: ScriptedServer) -> None:
    client = _client(server)
    early = client.chat.completions.with_raw_response  # cached before wrapping
    assert early is not None
    sieve = _fixed()
    wrap_openai(client, sieve)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
    )
    assert raw.headers["x-request-id"] == "req_scripted"
    assert raw.parse().choices[0].message.content == "ok"
    assert len(server.bodies()[0]["messages"][0]["content"]) < len(long_text(1))
    assert sieve.stats.usage_reports == 1
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
    ) as resp:
        assert resp.headers["x-request-id"] == "req_scripted"
        assert resp.parse().choices[0].message.content == "ok"
    raw_c = client.completions.with_raw_response.create(model="m", prompt=long_text(1))
    assert raw_c.parse().choices[0].text == " ok"


async def test_async_with_raw_response(server: ScriptedServer) -> None:
    client = wrap_openai(_aclient(server), _fixed())
    raw = await client.responses.with_raw_response.create(model=MODEL, input=long_text(1))
    assert raw.headers["x-request-id"] == "req_scripted"
    assert raw.parse().output_text == "ok"
    assert len(server.bodies()[0]["input"]) < len(long_text(1))


# -- fail open -------------------------------------------------------------------------------
def test_failing_compressor_sends_original(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    sieve = Sieve(SieveConfig(verify=False, ratio=0.5), compressor=WordDropCompressor(fail=True))
    client = wrap_openai(_client(server), sieve)
    secret = "SECRET-PROMPT-TEXT " + long_text(1)
    for _ in range(2):
        out = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": secret}]
        )
        assert out.choices[0].message.content == "ok"
    assert [b["messages"][0]["content"] for b in server.bodies()] == [secret, secret]
    assert sieve.stats.errors == 2
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # logged once
    assert "SECRET" not in caplog.text


def test_scoring_over_budget_sends_original(server: ScriptedServer) -> None:
    sieve = Sieve(
        SieveConfig(verify=False, ratio=0.5, scoring_budget_ms=30),
        compressor=WordDropCompressor(delay=0.3),
    )
    client = wrap_openai(_client(server), sieve)
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
    )
    assert server.bodies()[0]["messages"][0]["content"] == long_text(1)
    assert sieve.stats.timeouts == 1 and sieve.stats.errors == 1


async def test_async_failing_compressor(server: ScriptedServer) -> None:
    sieve = Sieve(SieveConfig(verify=False, ratio=0.5), compressor=WordDropCompressor(fail=True))
    client = wrap_openai(_aclient(server), sieve)
    await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
    )
    assert server.bodies()[0]["messages"][0]["content"] == long_text(1)
    assert sieve.stats.errors == 1


def test_instance_guard_skips_compression(server: ScriptedServer) -> None:
    sieve = Sieve(
        SieveConfig(verify=False, ratio=0.5, guard_threshold=0.9),
        compressor=WordDropCompressor(similarity_value=0.2),
    )
    client = wrap_openai(_client(server), sieve)
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
    )
    assert server.bodies()[0]["messages"][0]["content"] == long_text(1)
    assert sieve.stats.guard_skips == 1 and len(server.requests) == 1


# -- shadow and monitor ----------------------------------------------------------------------
def test_shadow_sends_original_live_and_compressed_in_background(server: ScriptedServer) -> None:
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    client = wrap_openai(_client(server), sieve)
    with task("faq"):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": long_text(2)}], temperature=0
        )
    assert sieve.flush(10)
    live, background = server.bodies()
    assert live["messages"][0]["content"] == long_text(2)
    assert len(background["messages"][0]["content"]) < len(long_text(2))
    assert background["temperature"] == 0
    assert gate.records == [(gate.keys[0], 0.5, True)]
    assert gate.keys[0].task == "faq" and gate.keys[0].target_model == MODEL
    assert sieve.stats.screening_calls == 1 and sieve.stats.comparisons == 1


def test_shadow_on_a_stream_read_to_the_end_uses_the_streamed_answer(
    server: ScriptedServer,
) -> None:
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    client = wrap_openai(_client(server), sieve)
    with client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": long_text(2)}],
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "ok"
    assert sieve.flush(10)
    bodies = server.bodies()
    # the live answer was read from the stream: only the compressed variant goes out again
    assert len(bodies) == 2 and bodies[0]["stream"] is True
    assert "stream" not in bodies[1] and "stream_options" not in bodies[1]
    assert len(bodies[1]["messages"][0]["content"]) < len(long_text(2))
    assert gate.records[0][2] is True and sieve.stats.screening_calls == 1
    assert sieve.stats.usage_reports == 1  # from the include_usage chunk


def test_shadow_on_a_stream_closed_early_compares_two_plain_calls(server: ScriptedServer) -> None:
    server.push(Reply(sse=chat_chunks(["o", "k", "!"])))
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    client = wrap_openai(_client(server), sieve)
    with client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(2)}], stream=True
    ) as stream:
        next(iter(stream))  # read one chunk, then leave: the stream is closed early
    stream._iterator.close()  # type: ignore[attr-defined]  # what dropping it does, now
    assert sieve.flush(10)
    bodies = server.bodies()
    assert len(bodies) == 3 and all("stream" not in b for b in bodies[1:])
    assert sorted(len(b["messages"][0]["content"]) for b in bodies[1:])[1] == len(long_text(2))
    assert sieve.stats.screening_calls == 2 and gate.records[0][2] is True


def _chunk(content: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }  # fmt: skip


def test_stream_of_content_parts_or_unknown_chunks_never_breaks_the_loop(
    server: ScriptedServer,
) -> None:
    """Some OpenAI-compatible servers stream ``delta.content`` as a list of parts: the
    caller's loop ends cleanly and the parts are the live answer (only the compressed
    variant goes out again); a chunk of no known shape makes the answer unreadable (both
    variants go out), never an exception in the caller's ``for``."""
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    client = wrap_openai(_client(server), sieve)
    messages = [{"role": "user", "content": long_text(2)}]
    server.push(Reply(sse=[_chunk([{"type": "text", "text": "o"}, {"type": "text", "text": "k"}])]))
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))
    assert chunks[0].choices[0].delta.content == [
        {"type": "text", "text": "o"},
        {"type": "text", "text": "k"},
    ]
    assert sieve.flush(10)
    assert len(server.bodies()) == 2 and gate.records[0][2] is True  # "ok" == "ok"
    server.push(Reply(sse=[_chunk(42)]))
    assert len(list(client.chat.completions.create(model=MODEL, messages=messages, stream=True)))
    assert sieve.flush(10)
    assert len(server.bodies()) == 5  # unreadable: the original and the compressed again
    assert sieve.stats.errors == 0


async def test_async_stream_of_unknown_chunks_never_breaks_the_loop(
    server: ScriptedServer,
) -> None:
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    client = wrap_openai(_aclient(server), sieve)
    server.push(Reply(sse=[_chunk({"no": "text"}), _chunk([{"type": "text", "text": "ok"}])]))
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(2)}], stream=True
    )
    assert len([c async for c in stream]) == 2
    assert await sieve.aflush(10)
    assert len(server.bodies()) == 3


def test_stream_keeps_its_type_and_reports_usage(server: ScriptedServer) -> None:
    sieve = _fixed()
    client = wrap_openai(_client(server), sieve)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": long_text(2)}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert type(stream) is openai.Stream
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].choices == []  # the caller sees it too
    words = len(server.bodies()[0]["messages"][0]["content"].split())
    assert sieve.stats.usage_reports == 1 and sieve.stats.prompt_tokens_reported == words
    plain = client.completions.create(model="m", prompt=long_text(1), stream=True)
    assert "".join(c.choices[0].text for c in plain) == " ok"
    assert sieve.stats.usage_reports == 1  # no usage asked for, none reported


async def test_async_responses_stream_reports_usage(server: ScriptedServer) -> None:
    sieve = _fixed()
    client = wrap_openai(_aclient(server), sieve)
    stream = await client.responses.create(model=MODEL, input=long_text(2), stream=True)
    assert type(stream) is openai.AsyncStream
    kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    words = len(server.bodies()[0]["input"].split())
    assert sieve.stats.usage_reports == 1 and sieve.stats.prompt_tokens_reported == words
    async with client.responses.stream(model=MODEL, input=long_text(2)) as s:
        final = await s.get_final_response()
    assert final.output_text == "ok" and sieve.stats.usage_reports == 2


def test_monitor_sends_original_in_background(server: ScriptedServer) -> None:
    gate = ScriptedGate(apply(0.5, monitor=True))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    client = wrap_openai(_client(server), sieve)
    client.responses.create(model=MODEL, input=long_text(2))
    assert sieve.flush(10)
    live, background = server.bodies()
    assert len(live["input"]) < len(long_text(2)) and background["input"] == long_text(2)
    assert background["store"] is False  # comparisons leave no stored responses behind
    assert gate.records[0][2] is True


def test_background_disagreement_and_target_error(server: ScriptedServer) -> None:
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False, metric="exact"), compressor=WordDropCompressor(),
                  gate=gate)  # fmt: skip
    client = wrap_openai(_client(server), sieve)
    server.push(Reply(json=chat_completion("yes")), Reply(json=chat_completion("no")))
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(2)}]
    )
    assert sieve.flush(10)
    server.push(Reply(json=chat_completion("yes")), error(500))
    client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_text(2)}]
    )
    assert sieve.flush(10)
    assert [r[2] for r in gate.records] == [False, None]
    assert sieve.stats.disagreements == 1 and sieve.stats.comparison_errors == 1


def test_comparison_budget_skips_when_busy(server: ScriptedServer) -> None:
    full = len(long_text(2))
    # background (compressed) variants are slow, live calls are not
    server.responder = lambda rec: Reply(
        json=chat_completion("ok"),
        delay=0.0 if len(rec.json["messages"][0]["content"]) == full else 0.5,
    )
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(
        SieveConfig(guard=False, max_background=1, max_pending=1, backpressure="skip"),
        compressor=WordDropCompressor(),
        gate=gate,
    )
    client = wrap_openai(_client(server), sieve)
    for _ in range(3):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": long_text(2)}]
        )
    assert sieve.flush(10)
    assert sieve.stats.comparisons_skipped >= 1
    assert len(server.requests) == 3 + sieve.stats.screening_calls


def test_no_thread_for_a_comparison_never_breaks_the_call(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no comparison thread can start (an OS thread limit; at interpreter shutdown
    Python 3.12+ refuses new threads), the user's call still returns the live answer, the
    reserved slot is freed (the gate hears ``None``) and the comparison is never run later."""
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    client = wrap_openai(_client(server), sieve)
    start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        if self.name.startswith("promptsieve-compare"):
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    messages = [{"role": "user", "content": long_text(2)}]
    out = client.chat.completions.create(model=MODEL, messages=messages)
    assert out.choices[0].message.content == "ok"
    assert sieve.stats.errors == 1 and gate.records[0][2] is None
    assert sieve._comparisons.left() == []  # the slot is free again
    monkeypatch.setattr(threading.Thread, "start", start)
    client.chat.completions.create(model=MODEL, messages=messages)
    assert sieve.flush(10)
    assert len(server.bodies()) == 3  # two live calls, one comparison: the refused one never ran
    assert gate.records[1][2] is True


async def test_async_shadow_runs_as_a_task(server: ScriptedServer) -> None:
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    client = wrap_openai(_aclient(server), sieve)
    async with task("async-faq"):
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": long_text(2)}]
        )
    assert await sieve.aflush(10)
    live, background = server.bodies()
    assert live["messages"][0]["content"] == long_text(2)
    assert len(background["messages"][0]["content"]) < len(long_text(2))
    assert gate.records[0][2] is True and gate.keys[0].task == "async-faq"


# -- task context ----------------------------------------------------------------------------
def test_task_context_in_threads(server: ScriptedServer) -> None:
    gate = ScriptedGate()
    client = wrap_openai(
        _client(server), Sieve(compressor=WordDropCompressor(), gate=gate), task="default"
    )
    barrier = threading.Barrier(4)

    def worker(name: str | None) -> None:
        barrier.wait()
        msgs = [{"role": "user", "content": long_text(1)}]
        if name is None:
            client.chat.completions.create(model=MODEL, messages=msgs)
            return
        with task(name):
            client.chat.completions.create(model=MODEL, messages=msgs)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b", "c", None)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(k.task for k in gate.keys) == ["a", "b", "c", "default"]


async def test_task_context_in_asyncio(server: ScriptedServer) -> None:
    gate = ScriptedGate()
    client = wrap_openai(_aclient(server), Sieve(compressor=WordDropCompressor(), gate=gate))

    @task("decorated")
    async def one() -> None:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
        )

    async def named(name: str) -> None:
        with task(name):
            await asyncio.sleep(0)
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
            )

    await asyncio.gather(one(), named("x"), named("y"))
    names = sorted(k.task for k in gate.keys)
    assert names == ["decorated", "x", "y"]


def test_derived_task_names_differ_by_system_prompt(server: ScriptedServer) -> None:
    gate = ScriptedGate()
    client = wrap_openai(_client(server), Sieve(compressor=WordDropCompressor(), gate=gate))
    for system in ("You are A.", "You are B.", "You are A."):
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": "hi"}],
        )
    a1, b, a2 = (k.task for k in gate.keys)
    assert a1 == a2 != b and a1.startswith("auto-")


def test_response_format_and_tools_with_responses_api(server: ScriptedServer) -> None:
    call = Reply(json=response_object("", function_calls=[("lookup", '{"word":"x"}')]))
    server.push(call, call)
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    client = wrap_openai(_client(server), sieve)
    tools = [
        {"type": "function", "name": "lookup", "parameters": TOOLS[0]["function"]["parameters"]}
    ]
    text = {"format": {"type": "json_schema", "name": "a", "schema": {"type": "object"}}}
    client.responses.create(model=MODEL, input=long_text(2), tools=tools, text=text)
    assert sieve.flush(10)
    live, background = server.bodies()
    assert live["tools"] == background["tools"] == tools
    assert live["text"] == background["text"] == text
    assert gate.records[0][2] is True  # same tool call = agreement


# -- structured outputs: parse() posts by itself, stream() goes through create() -------------
class _Answer(__import__("pydantic").BaseModel):
    word: str
    count: int


def test_parse_goes_through_the_sieve_and_keeps_the_schema(server: ScriptedServer) -> None:
    for _ in range(3):
        server.push(Reply(json=chat_completion('{"word": "fiscal", "count": 3}')))
    sieve = _fixed()
    client = wrap_openai(_client(server), sieve)
    out = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}], response_format=_Answer
    )
    assert out.choices[0].message.parsed == _Answer(word="fiscal", count=3)
    body = server.bodies()[0]
    assert len(body["messages"][0]["content"]) < len(long_text(1))
    schema = body["response_format"]["json_schema"]
    assert schema["name"] == "_Answer" and schema["schema"]["required"] == ["word", "count"]
    assert sieve.stats.compressed == 1 and sieve.stats.usage_reports == 1
    raw = client.chat.completions.with_raw_response.parse(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}], response_format=_Answer
    )
    assert raw.headers["x-request-id"] == "req_scripted" and sieve.stats.compressed == 2
    assert raw.parse().choices[0].message.parsed == _Answer(word="fiscal", count=3)
    assert sieve.stats.errors == 0
    unwrap_openai(client)
    client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}], response_format=_Answer
    )
    assert server.bodies()[-1]["messages"][0]["content"] == long_text(1)


async def test_async_responses_parse_and_chat_stream_helper(server: ScriptedServer) -> None:
    server.push(Reply(json=response_object('{"word": "fiscal", "count": 3}')))
    server.push(Reply(sse=chat_chunks(["o", "k"])))
    sieve = _fixed()
    client = wrap_openai(_aclient(server), sieve)
    out = await client.responses.parse(model=MODEL, input=long_text(1), text_format=_Answer)
    assert out.output_parsed == _Answer(word="fiscal", count=3)
    assert len(server.bodies()[0]["input"]) < len(long_text(1))
    assert server.bodies()[0]["text"]["format"]["type"] == "json_schema"
    async with client.chat.completions.stream(
        model=MODEL, messages=[{"role": "user", "content": long_text(1)}]
    ) as stream:
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == "ok"
    assert len(server.bodies()[1]["messages"][0]["content"]) < len(long_text(1))
    assert sieve.stats.compressed == 2
