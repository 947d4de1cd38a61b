"""promptsieve_litellm with the real ``litellm`` package against the scripted OpenAI-compatible
server on 127.0.0.1: the SDK callback (acompletion), and verdicts shared by two "replicas"
through a real redis-server."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from _ci import require_module

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch at import
# ruff: noqa: E402 - the imports below follow the check that their extra is installed
require_module("litellm", reason="the litellm extra is not installed")

import litellm

from _scripted_server import ScriptedServer
from _sieve_helpers import WordDropCompressor
from promptsieve import Gate, GateConfig, RedisStore, Sieve, SieveConfig
from promptsieve_litellm import PromptSieveLiteLLM
from test_store import redis_url  # noqa: F401 - the session's real redis-server fixture

MODEL = "openai/gpt-4o-mini"
LONG = " ".join(f"Sentence {i} of the retrieved passage about the harbour and its cranes."
                for i in range(20))  # fmt: skip
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "glossary",
            "parameters": {"type": "object", "properties": {"w": {"type": "string"}}},
        },
    }
]
SYSTEM = "You answer from the manual. Keep it short."


def _messages() -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"{LONG}\n\nWhere are the cranes?"}]  # fmt: skip


@pytest.fixture()
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture()
def callbacks() -> Iterator[None]:
    """No LiteLLM callbacks before and after (LiteLLM copies ``litellm.callbacks`` into its
    own success/failure lists on first use; the reset clears those too)."""
    litellm.logging_callback_manager._reset_all_callbacks()
    yield
    litellm.logging_callback_manager._reset_all_callbacks()


def _use(handler: PromptSieveLiteLLM) -> None:
    litellm.logging_callback_manager._reset_all_callbacks()
    litellm.callbacks = [handler]


async def _settle(handler: PromptSieveLiteLLM, sieve: Sieve, requests: int) -> None:
    """Wait until LiteLLM ran the success callbacks and the comparisons finished."""
    deadline = time.monotonic() + 15
    while handler.pending() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert handler.pending() == 0
    assert await sieve.aflush(15)
    assert sieve.stats.requests == requests


def _user_text(body: dict[str, Any]) -> str:
    return str(body["messages"][1]["content"])


def test_sdk_acompletion_is_compressed(server: ScriptedServer, callbacks: None) -> None:
    sieve = Sieve(SieveConfig(verify=False, ratio=0.5, guard=False),
                  compressor=WordDropCompressor())  # fmt: skip
    handler = PromptSieveLiteLLM(sieve)
    _use(handler)

    async def run() -> Any:
        r = await litellm.acompletion(model=MODEL, api_base=server.url, api_key="x",
                                      messages=_messages(), tools=TOOLS)  # fmt: skip
        await _settle(handler, sieve, 1)
        return r

    r = asyncio.run(run())
    assert r.choices[0].message.content == "ok"
    (body,) = server.bodies()
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}  # untouched
    assert body["tools"] == TOOLS
    assert len(_user_text(body).split()) < len(LONG.split())
    assert _user_text(body) != LONG
    st = sieve.stats.snapshot()
    assert st["compressed"] == 1 and st["usage_reports"] == 1
    assert st["prompt_tokens_reported"] == len(" ".join(
        m["content"] for m in body["messages"]).split())  # fmt: skip


def test_sync_completion_goes_out_untouched(server: ScriptedServer, callbacks: None) -> None:
    sieve = Sieve(SieveConfig(verify=False, ratio=0.5, guard=False),
                  compressor=WordDropCompressor())  # fmt: skip
    _use(PromptSieveLiteLLM(sieve))
    litellm.completion(model=MODEL, api_base=server.url, api_key="x", messages=_messages())
    (body,) = server.bodies()
    assert _user_text(body) == f"{LONG}\n\nWhere are the cranes?"


def test_replicas_share_verdicts_through_redis(
    server: ScriptedServer,
    callbacks: None,
    redis_url: str,  # noqa: F811
) -> None:
    prefix = f"litellm{time.monotonic_ns()}:"
    config = GateConfig(tau=0.6, ratios=(0.5,), seed=1)

    def replica() -> tuple[PromptSieveLiteLLM, Sieve]:
        sieve = Sieve(SieveConfig(guard=False, gate=config),
                      compressor=WordDropCompressor(),
                      gate=Gate(RedisStore(redis_url, prefix=prefix), config))  # fmt: skip
        return PromptSieveLiteLLM(sieve, task="harbour-qa"), sieve

    first, s1 = replica()
    _use(first)

    async def screen() -> None:
        for i in range(15):
            await litellm.acompletion(model=MODEL, api_base=server.url, api_key="x",
                                      messages=_messages())  # fmt: skip
            await _settle(first, s1, i + 1)
            if s1.stats.compressed:
                return

    asyncio.run(screen())
    st = s1.stats.snapshot()
    assert st["comparisons"] >= 1 and st["agreements"] == st["comparisons"]
    assert st["compressed"] >= 1  # passed on replica 1
    bodies = server.bodies()
    shadows = [b for b in bodies if _user_text(b) != f"{LONG}\n\nWhere are the cranes?"]
    assert shadows and all(b.get("stream") in (None, False) for b in shadows)

    second, s2 = replica()  # a fresh process's view: nothing in memory, same Redis
    _use(second)
    server.clear()

    async def once() -> None:
        await litellm.acompletion(model=MODEL, api_base=server.url, api_key="x",
                                  messages=_messages())  # fmt: skip
        await _settle(second, s2, 1)

    asyncio.run(once())
    assert s2.stats.compressed == 1 and s2.stats.comparisons == 0  # applied at once
    (body,) = [b for b in server.bodies()]
    assert len(_user_text(body).split()) < len(LONG.split())
    s1.close()
    s2.close()


def test_sdk_streamed_acompletion_is_compressed_and_observed(
    server: ScriptedServer, callbacks: None
) -> None:
    sieve = Sieve(SieveConfig(verify=False, ratio=0.5, guard=False),
                  compressor=WordDropCompressor())  # fmt: skip
    handler = PromptSieveLiteLLM(sieve)
    _use(handler)

    async def run() -> str:
        stream = await litellm.acompletion(model=MODEL, api_base=server.url, api_key="x",
                                           messages=_messages(), stream=True)  # fmt: skip
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        await _settle(handler, sieve, 1)  # the success callback ran after the stream ended
        return text

    assert asyncio.run(run()) == "ok"
    (body,) = server.bodies()
    assert body["stream"] is True
    assert len(_user_text(body).split()) < len(LONG.split())
    assert sieve.stats.compressed == 1
