"""wrap_anthropic against a scripted Anthropic-compatible server on 127.0.0.1: what goes over
the wire, streams, usage, shadow screening through the real gate, fail-open."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _ci import require_module

# ruff: noqa: E402 - the imports below follow the check that their extra is installed
require_module("anthropic", reason="the anthropic extra is not installed")

import anthropic
from anthropic.lib.streaming import AsyncMessageStreamManager, MessageStreamManager

from _anthropic_server import AnthropicServer, Reply, blank_text, message
from _sieve_helpers import WordDropCompressor
from promptsieve import ConfigError, Sieve, SieveConfig
from promptsieve.fidelity import Gate, GateConfig, SQLiteStore
from promptsieve_anthropic import sieve_of, unwrap_anthropic, wrap_anthropic

MODEL = "claude-test"
LONG = " ".join(f"Sentence {i} of the retrieved passage about the harbour and its cranes."
                for i in range(20))  # fmt: skip
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}}  # fmt: skip
DOCUMENT = {"type": "document", "source": {"type": "text", "media_type": "text/plain",
            "data": LONG}, "title": "manual", "citations": {"enabled": True}}  # fmt: skip
TOOLS = [{"name": "lookup", "description": "Look a word up in the glossary of the manual",
          "input_schema": {"type": "object", "properties": {"word": {"type": "string"}},
                           "required": ["word"]}}]  # fmt: skip
SYSTEM = [{"type": "text", "text": "You answer from the manual. " * 10,
           "cache_control": {"type": "ephemeral"}}]  # fmt: skip


def _messages() -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [
            {"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}},
            IMAGE, DOCUMENT]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look that up."},
            {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"word": "crane"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_9", "content": LONG},
            {"type": "text", "text": "Where are the cranes?"}]},
    ]  # fmt: skip


@pytest.fixture()
def server() -> Iterator[AnthropicServer]:
    with AnthropicServer() as srv:
        yield srv


def _client(server: AnthropicServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)


def _aclient(server: AnthropicServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=server.url, api_key="x", max_retries=0)


def _fixed(**kw: Any) -> Sieve:
    """Compress every request at 0.5 (verify=False) with the word-drop compressor."""
    return Sieve(SieveConfig(verify=False, ratio=0.5, guard=False, **kw),
                 compressor=WordDropCompressor())  # fmt: skip


def _kwargs() -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 64, "system": SYSTEM, "tools": TOOLS,
            "messages": _messages(), "metadata": {"user_id": "u1"}}  # fmt: skip


def test_wrap_returns_same_object_and_unwrap_restores(server: AnthropicServer) -> None:
    client = _client(server)
    sieve = _fixed()
    assert wrap_anthropic(client, sieve) is client
    assert type(client) is anthropic.Anthropic and sieve_of(client) is sieve
    assert sieve_of(client.with_options(timeout=5)) is sieve
    wrap_anthropic(client, sieve)  # again: no second layer
    client.messages.create(**_kwargs())
    assert sieve.stats.requests == 1
    unwrap_anthropic(client)
    client.messages.create(**_kwargs())
    assert sieve.stats.requests == 1
    with pytest.raises(ConfigError, match=r"anthropic\.Anthropic"):
        wrap_anthropic(object(), sieve)  # type: ignore[type-var]


def test_protected_parts_go_out_byte_identical(server: AnthropicServer) -> None:
    _client(server).messages.create(**_kwargs())  # the reference: unwrapped
    sieve = _fixed()
    kwargs = _kwargs()
    before = copy.deepcopy(kwargs)
    result = wrap_anthropic(_client(server), sieve).messages.create(**kwargs)
    assert kwargs == before  # the caller's objects are not mutated
    ref, sent = server.bodies()
    assert result.content[0].text == "ok"
    for key in ("system", "tools", "metadata", "max_tokens", "model"):
        assert sent[key] == ref[key], key
    u0, a1, u2 = sent["messages"]
    r0, ra1, ru2 = ref["messages"]
    assert u0["content"][1:] == r0["content"][1:]  # image and document untouched
    assert a1["content"][1] == ra1["content"][1]  # the tool_use block
    assert u2["content"][0] == ru2["content"][0]  # the tool_result block (its text too)
    text = u0["content"][0]
    assert text["cache_control"] == {"type": "ephemeral"}  # other keys of a text block kept
    assert len(text["text"].split()) < len(r0["content"][0]["text"].split())
    assert sieve.stats.compressed == 1


def test_usage_is_read_from_the_response(server: AnthropicServer) -> None:
    sieve = _fixed()
    server.push(Reply(json=message("fine", input_tokens=120, cache_read=30)))
    wrap_anthropic(_client(server), sieve).messages.create(**_kwargs())
    assert sieve.stats.usage_reports == 1
    assert sieve.stats.prompt_tokens_reported == 150  # input + cache reads


def test_create_stream_true_returns_the_sdk_stream(server: AnthropicServer) -> None:
    sieve = _fixed()
    client = wrap_anthropic(_client(server), sieve)
    stream = client.messages.create(**_kwargs(), stream=True)
    assert isinstance(stream, anthropic.Stream)
    text = "".join(e.delta.text for e in stream if e.type == "content_block_delta")
    assert text.strip() == "ok"
    (sent,) = server.bodies()
    assert sent["stream"] is True
    assert len(sent["messages"][0]["content"][0]["text"]) < len(LONG)


def test_messages_stream_helper(server: AnthropicServer) -> None:
    sieve = _fixed()
    client = wrap_anthropic(_client(server), sieve)
    manager = client.messages.stream(**_kwargs())
    assert isinstance(manager, MessageStreamManager)
    assert server.bodies() == []  # nothing is sent before the with block, as in the SDK
    with manager as stream:
        assert stream.get_final_text().strip() == "ok"
    (sent,) = server.bodies()
    assert sent["stream"] is True and sent["system"] == SYSTEM
    assert len(sent["messages"][0]["content"][0]["text"]) < len(LONG)
    assert sieve.stats.compressed == 1


def test_async_create_and_stream(server: AnthropicServer) -> None:
    sieve = _fixed()
    client = wrap_anthropic(_aclient(server), sieve)

    async def run() -> tuple[str, str]:
        r = await client.messages.create(**_kwargs())
        manager = client.messages.stream(**_kwargs())
        assert isinstance(manager, AsyncMessageStreamManager)
        async with manager as stream:
            text = await stream.get_final_text()
        return r.content[0].text, text

    a, b = asyncio.run(run())
    assert a == "ok" and b.strip() == "ok"
    assert sieve.stats.compressed == 2
    for sent in server.bodies():
        assert len(sent["messages"][0]["content"][0]["text"]) < len(LONG)
        assert sent["tools"] == TOOLS


def test_shadow_screening_through_the_real_gate(server: AnthropicServer, tmp_path: Path) -> None:
    gate = Gate(SQLiteStore(tmp_path / "v.sqlite3"), GateConfig(tau=0.6, ratios=(0.5,), seed=0))
    sieve = Sieve(SieveConfig(task="manual-qa", guard=False), compressor=WordDropCompressor(),
                  gate=gate)  # fmt: skip
    client = wrap_anthropic(_client(server), sieve)
    decisions = []
    for _ in range(12):
        with client.messages.stream(**_kwargs()) as stream:  # live output unreadable: both sent
            stream.get_final_text()
        assert sieve.flush(10)
        decisions.append(sieve.stats.compressed)
    st = sieve.stats.snapshot()
    assert st["comparisons"] >= 1 and st["agreements"] == st["comparisons"]
    assert st["compressed"] > 0  # passed, then applied
    background = [b for b in server.bodies() if "stream" not in b]
    assert background  # comparisons are plain, non-streamed calls
    for b in background:
        assert b["system"] == SYSTEM and b["tools"] == TOOLS and b["metadata"] == {"user_id": "u1"}
    sieve.close()


def test_target_errors_reach_the_caller_and_free_the_slot(
    server: AnthropicServer, tmp_path: Path
) -> None:
    gate = Gate(SQLiteStore(tmp_path / "v.sqlite3"), GateConfig(tau=0.6, ratios=(0.5,), seed=0))
    sieve = Sieve(SieveConfig(task="t", guard=False), compressor=WordDropCompressor(), gate=gate)
    client = wrap_anthropic(_client(server), sieve)
    server.push(Reply(status=500))
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(**_kwargs())
    assert sieve.flush(5)
    assert sieve.stats.comparisons == 0
    assert len(server.requests) == 1  # no comparison was sent for a failed live call
    sieve.close()


def test_a_failing_compressor_sends_the_original(server: AnthropicServer) -> None:
    sieve = Sieve(SieveConfig(verify=False, ratio=0.5, guard=False),
                  compressor=WordDropCompressor(fail=True))  # fmt: skip
    kwargs = _kwargs()
    wrap_anthropic(_client(server), sieve).messages.create(**kwargs)
    (sent,) = server.bodies()
    assert sent["messages"][0]["content"][0]["text"] == LONG
    assert sieve.stats.errors == 1


DOCS = [
    "The harbour of Tarn has four cranes. They were built in 1962 by a Dutch firm and lift "
    "containers from the ships onto the quay. Each crane can lift forty tonnes.",
    "Bread in the old town is baked every morning at five. The bakers use rye flour from the "
    "mills upriver. Tourists often queue for the dark loaves on Sundays.",
    "The football club of the town plays in red shirts. Its stadium holds eight thousand "
    "people. The club was promoted twice in the last decade.",
    "A music festival takes place each August on the meadow by the river. Bands from all over "
    "the country play folk and jazz for three days and nights.",
]
QUESTION = "How many cranes does the harbour of Tarn have?"


def test_text_that_compression_empties_never_reaches_the_messages_api(
    server: AnthropicServer,
) -> None:
    """The real coarse-to-fine compressor (MiniLM proxy) drops whole irrelevant passages,
    which empties their text blocks; the Messages API answers an empty block with 400. The
    emptied blocks are left out; a user turn emptied whole sends the original instead."""
    sieve = Sieve(SieveConfig(verify=False, ratio=0.25, guard=False, scoring_budget_ms=60e3))
    client = wrap_anthropic(_client(server), sieve)
    blocks = [{"type": "text", "text": d} for d in [*DOCS, QUESTION]]
    answer = client.messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": blocks}]
    )
    assert answer.content[0].text == "ok"
    (sent,) = server.bodies()
    assert not blank_text(sent)
    texts = [b["text"] for b in sent["messages"][0]["content"]]
    assert 1 < len(texts) < len(blocks) and texts[-1] == QUESTION  # passages dropped whole
    assert sieve.stats.compressed == 1

    turns: list[dict[str, Any]] = []
    for d in DOCS:
        turns += [{"role": "user", "content": d}, {"role": "assistant", "content": "Noted."}]
    turns.append({"role": "user", "content": QUESTION})
    answer = client.messages.create(model=MODEL, max_tokens=16, messages=copy.deepcopy(turns))
    assert answer.content[0].text == "ok"
    assert server.bodies()[-1]["messages"] == turns  # an emptied turn: the original went out
    assert sieve.stats.errors == 1
    sieve.close()


def test_an_emptied_cache_breakpoint_sends_the_original(server: AnthropicServer) -> None:
    """A passage block carrying ``cache_control`` that compression would empty is not left
    out (that would move the caller's prompt-cache breakpoint): the original goes out."""
    sieve = Sieve(SieveConfig(verify=False, ratio=0.25, guard=False, scoring_budget_ms=60e3))
    client = wrap_anthropic(_client(server), sieve)
    cached = {"type": "ephemeral"}
    blocks = [{"type": "text", "text": d, "cache_control": cached} for d in DOCS]
    blocks.append({"type": "text", "text": QUESTION})
    answer = client.messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": copy.deepcopy(blocks)}]
    )
    assert answer.content[0].text == "ok"
    (sent,) = server.bodies()
    assert sent["messages"][0]["content"] == blocks
    assert sieve.stats.errors == 1 and sieve.stats.compressed == 0
    sieve.close()
