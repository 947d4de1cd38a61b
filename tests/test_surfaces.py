"""Every OpenAI SDK surface that sends a prompt goes through the sieve (issue #14.5).

Each surface is called on a wrapped client against the scripted server; the body on the
wire must be compressed and the sieve must have counted the request. Raw and streaming
response wrappers are also touched *before* wrapping, the way a long-lived client caches them.
Surfaces that are not covered are listed in the README ("OpenAI surfaces"), and
``test_uncovered_surfaces_are_the_listed_ones`` keeps that list honest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel

from _scripted_server import Reply, ScriptedServer, chat_chunks, chat_completion, response_object
from _sieve_helpers import WordDropCompressor, long_text
from promptsieve import Sieve, SieveConfig
from promptsieve_openai import wrap_openai
from promptsieve_openai._wrap import ENDPOINTS

MODEL = "gpt-4o-mini"
TEXT = long_text(1)
MSGS = [{"role": "user", "content": TEXT}]


class _Answer(BaseModel):
    word: str


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def _sieve() -> Sieve:
    cfg = SieveConfig(verify=False, ratio=0.5, guard=False)
    return Sieve(cfg, compressor=WordDropCompressor())


def _sent_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return str(body["messages"][0]["content"])
    if "prompt" in body:
        return str(body["prompt"])
    inp = body["input"]
    return inp if isinstance(inp, str) else str(inp[0]["content"])


Call = Callable[[Any], Any]
JSON_CHAT = Reply(json=chat_completion('{"word": "fiscal"}'))
JSON_RESP = Reply(json=response_object('{"word": "fiscal"}'))


def _chat_stream(c: Any) -> Any:
    with c.chat.completions.stream(model=MODEL, messages=MSGS) as s:
        return s.get_final_completion()


def _beta_chat_stream(c: Any) -> Any:
    with c.beta.chat.completions.stream(model=MODEL, messages=MSGS) as s:
        return s.get_final_completion()


SYNC: list[tuple[str, Reply | None, Call]] = [
    ("chat.completions.create", None,
     lambda c: c.chat.completions.create(model=MODEL, messages=MSGS)),
    ("chat.completions.parse", JSON_CHAT,
     lambda c: c.chat.completions.parse(model=MODEL, messages=MSGS, response_format=_Answer)),
    ("chat.completions.stream", Reply(sse=chat_chunks(["o", "k"])), _chat_stream),
    ("beta.chat.completions.create", None,
     lambda c: c.beta.chat.completions.create(model=MODEL, messages=MSGS)),
    ("beta.chat.completions.parse", JSON_CHAT,
     lambda c: c.beta.chat.completions.parse(model=MODEL, messages=MSGS,
                                             response_format=_Answer)),
    ("beta.chat.completions.stream", Reply(sse=chat_chunks(["o", "k"])), _beta_chat_stream),
    ("completions.create", None, lambda c: c.completions.create(model=MODEL, prompt=TEXT)),
    ("responses.create", None, lambda c: c.responses.create(model=MODEL, input=TEXT)),
    ("responses.parse", JSON_RESP,
     lambda c: c.responses.parse(model=MODEL, input=TEXT, text_format=_Answer)),
    ("beta.responses.create", None, lambda c: c.beta.responses.create(model=MODEL, input=TEXT)),
    ("chat.completions.with_raw_response.create", None,
     lambda c: c.chat.completions.with_raw_response.create(model=MODEL, messages=MSGS)),
    ("with_raw_response.chat.completions.create", None,
     lambda c: c.with_raw_response.chat.completions.create(model=MODEL, messages=MSGS)),
    ("beta.chat.completions.with_raw_response.create", None,
     lambda c: c.beta.chat.completions.with_raw_response.create(model=MODEL, messages=MSGS)),
    ("with_raw_response.beta.responses.create", None,
     lambda c: c.with_raw_response.beta.responses.create(model=MODEL, input=TEXT)),
    ("with_raw_response.responses.create", None,
     lambda c: c.with_raw_response.responses.create(model=MODEL, input=TEXT)),
    ("with_streaming_response.chat.completions.create", None,
     lambda c: _read_streaming(c.with_streaming_response.chat.completions.create(
         model=MODEL, messages=MSGS))),
    ("with_streaming_response.completions.create", None,
     lambda c: _read_streaming(c.with_streaming_response.completions.create(
         model=MODEL, prompt=TEXT))),
]  # fmt: skip


def _read_streaming(manager: Any) -> Any:
    with manager as resp:
        return resp.parse()


def _touch_wrappers(client: Any) -> None:
    """What a long-lived client does before it is wrapped: build the cached wrappers."""
    for root in (client.with_raw_response, client.with_streaming_response):
        _ = root.chat.completions.create
        _ = root.beta.responses.create
        _ = root.completions.create
        _ = root.responses.create
    _ = client.chat.completions.with_raw_response.create
    _ = client.beta.chat.completions.with_raw_response.create


@pytest.mark.parametrize(("name", "reply", "call"), SYNC, ids=[s[0] for s in SYNC])
def test_every_sync_surface_goes_through_the_sieve(
    server: ScriptedServer, name: str, reply: Reply | None, call: Call
) -> None:
    client = OpenAI(base_url=server.url, api_key="x", max_retries=0)
    _touch_wrappers(client)
    sieve = _sieve()
    wrap_openai(client, sieve)
    if reply is not None:
        server.push(reply)
    call(client)
    body = server.bodies()[0]
    assert len(_sent_text(body)) < len(TEXT), name  # compressed on the wire
    assert sieve.stats.requests == 1 and sieve.stats.compressed == 1, name


ASYNC: list[tuple[str, Call]] = [
    ("chat.completions.create", lambda c: c.chat.completions.create(model=MODEL, messages=MSGS)),
    ("beta.chat.completions.create",
     lambda c: c.beta.chat.completions.create(model=MODEL, messages=MSGS)),
    ("responses.create", lambda c: c.responses.create(model=MODEL, input=TEXT)),
    ("with_raw_response.chat.completions.create",
     lambda c: c.with_raw_response.chat.completions.create(model=MODEL, messages=MSGS)),
    ("with_raw_response.beta.responses.create",
     lambda c: c.with_raw_response.beta.responses.create(model=MODEL, input=TEXT)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "call"), ASYNC, ids=[s[0] for s in ASYNC])
def test_every_async_surface_goes_through_the_sieve(
    server: ScriptedServer, name: str, call: Call
) -> None:
    async def go() -> Sieve:
        client = AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0)
        _touch_wrappers(client)
        sieve = _sieve()
        wrap_openai(client, sieve)
        await call(client)
        return sieve

    sieve = asyncio.run(go())
    assert len(_sent_text(server.bodies()[0])) < len(TEXT), name
    assert sieve.stats.requests == 1 and sieve.stats.compressed == 1, name


#: Surfaces that send prompts and are NOT routed through the sieve (README, "OpenAI surfaces").
NOT_COVERED = {
    "realtime",  # a websocket session, not request/response
    "beta.realtime",
    "beta.threads",  # Assistants: messages are stored server-side, then runs read them
    "beta.assistants",
    "batches",  # request bodies are uploaded as a file
    "conversations",  # items stored server-side
    "evals",
    "responses.connect",  # a websocket session
}


def _prompt_resources(client: Any) -> set[str]:
    """Resources (dotted paths) with a prompt-sending method, by the SDK's own layout."""
    found: set[str] = set()
    for path in (
        "chat.completions",
        "beta.chat.completions",
        "completions",
        "responses",
        "beta.responses",
    ):
        obj = client
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if obj is not None and callable(getattr(obj, "create", None)):
            found.add(path)
    return found


def test_uncovered_surfaces_are_the_listed_ones() -> None:
    client = OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")
    covered = {".".join(path) for _endpoint, path, _methods in ENDPOINTS}
    assert _prompt_resources(client) <= covered
    for dotted in NOT_COVERED:  # each still exists in this SDK (else drop it from the list)
        obj: Any = client
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
        assert obj is not None, dotted
    readme = (
        __import__("pathlib").Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    )
    for dotted in NOT_COVERED:
        assert f"`{dotted}`" in readme, f"README does not list {dotted} as not covered"
