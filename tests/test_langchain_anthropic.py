"""LangChain → ``ChatAnthropic`` (langchain-anthropic, the real anthropic client inside)
against the Messages API test server on 127.0.0.1, which refuses empty text as the API does.

The coarse-to-fine compressor (real MiniLM proxy) drops whole irrelevant passages; through
``wrap_chat_model`` a passage given as its own content block, or as its own message, is
then emptied, and ``ChatAnthropic`` would send that empty text (HTTP 400).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from _anthropic_server import AnthropicServer, blank_text
from _ci import require_module
from promptsieve.sieve import Sieve, SieveConfig
from promptsieve_langchain import wrap_chat_model
from test_anthropic_protocol import DOCS, MODEL, QUESTION

require_module("langchain_anthropic", "pip install langchain-anthropic")

from langchain_anthropic import ChatAnthropic  # noqa: E402


@pytest.fixture()
def server() -> Iterator[AnthropicServer]:
    with AnthropicServer() as srv:
        yield srv


def _sieve() -> Sieve:
    return Sieve(SieveConfig(verify=False, ratio=0.25, guard=False, scoring_budget_ms=60e3))


def _model(server: AnthropicServer) -> ChatAnthropic:
    return ChatAnthropic(model_name=MODEL, base_url=server.url, api_key="x", max_retries=0,
                         max_tokens_to_sample=16, timeout=30, stop=None)  # fmt: skip


def test_emptied_passage_blocks_are_left_out(server: AnthropicServer) -> None:
    sieve = _sieve()
    model = wrap_chat_model(_model(server), sieve)
    blocks: list[str | dict[str, str]] = [{"type": "text", "text": d} for d in [*DOCS, QUESTION]]
    answer = model.invoke([HumanMessage(content=blocks)])
    assert answer.content == "ok"
    (sent,) = server.bodies()
    assert not blank_text(sent)
    texts = [b["text"] for b in sent["messages"][0]["content"]]
    assert 1 < len(texts) < len(blocks) and texts[-1] == QUESTION  # passages dropped whole
    assert sieve.stats.compressed == 1
    sieve.close()


@pytest.mark.parametrize("streamed", [False, True])
def test_a_message_emptied_whole_sends_the_original(
    server: AnthropicServer, streamed: bool
) -> None:
    sieve = _sieve()
    model = wrap_chat_model(_model(server), sieve)
    turns: list[BaseMessage] = []
    for d in DOCS:
        turns += [HumanMessage(content=d), AIMessage(content="Noted.")]
    turns.append(HumanMessage(content=QUESTION))
    before = copy.deepcopy(turns)
    if streamed:
        text = "".join(str(c.content) for c in model.stream(turns))
    else:
        text = str(model.invoke(turns).content)
    assert text.strip() == "ok"
    (sent,) = server.bodies()
    assert not blank_text(sent)
    assert [m["content"] for m in sent["messages"]] == [str(m.content) for m in before]
    assert sieve.stats.errors == 1 and sieve.stats.compressed == 0
    sieve.close()


def test_an_emptied_cache_breakpoint_sends_the_original(server: AnthropicServer) -> None:
    """An emptied passage block that carries ``cache_control`` (ChatAnthropic passes the
    key through) is not left out: the original request goes out, as through wrap_anthropic."""
    sieve = _sieve()
    model = wrap_chat_model(_model(server), sieve)
    cached = {"type": "ephemeral"}
    blocks: list[str | dict[str, object]] = [
        {"type": "text", "text": d, "cache_control": cached} for d in DOCS
    ]
    blocks.append({"type": "text", "text": QUESTION})
    answer = model.invoke([HumanMessage(content=copy.deepcopy(blocks))])
    assert answer.content == "ok"
    (sent,) = server.bodies()
    assert not blank_text(sent)
    content = sent["messages"][0]["content"]
    assert [b["text"] for b in content] == [*DOCS, QUESTION]
    assert [b.get("cache_control") for b in content] == [cached] * len(DOCS) + [None]
    assert sieve.stats.errors == 1 and sieve.stats.compressed == 0
    sieve.close()
