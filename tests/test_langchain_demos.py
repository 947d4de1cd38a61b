"""Demonstration message pairs through the LangChain wrappers.

A ``FewShotChatMessagePromptTemplate`` in a real chat prompt, ``wrap_chat_model`` around a
real ``ChatOpenAI`` talking to a scripted OpenAI-compatible server on 127.0.0.1, and
``DemoCompressor`` with the real MiniLM proxy as the value function (``CosineScorer``). The
pairs the passed rung drops are left out of what the server receives, by the same rule as
through ``wrap_openai`` (``promptsieve.convert.kept_indices``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.prompt_values import ChatPromptValue
from langchain_core.prompts import ChatPromptTemplate, FewShotChatMessagePromptTemplate
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from _ci import require_module
from _demo_helpers import DEMOS, FMT, VAL, CosineScorer
from _scripted_server import ScriptedServer
from promptsieve import TextPart, UnsupportedRequest
from promptsieve.demos import DemoAttributionConfig, DemoCompressor
from promptsieve.fidelity import Gate
from promptsieve.sieve import Sieve, SieveConfig
from promptsieve.testing import FixedVerdictStore
from promptsieve_langchain import compress_messages, wrap_chat_model
from promptsieve_langchain._convert import rebuild_messages, to_neutral

MODEL = "gpt-4o-mini"
TASK = "demo-task"
QUESTION = "What is the capital of Spain?"
SYSTEM = "Be brief."
EXAMPLES = [{"question": d.input, "answer": d.output} for d in DEMOS]
#: A conversation turn that is not a demonstration: never dropped.
CHAT_TURN = [("human", "Hello, can you answer quiz questions?"), ("ai", "Yes, ask away.")]


@pytest.fixture(scope="module")
def compressor(proxy: Any, tmp_path_factory: pytest.TempPathFactory) -> DemoCompressor:
    """One attribution for the module (exact Shapley over the 7 demonstrations)."""
    cfg = DemoAttributionConfig(cache_dir=tmp_path_factory.mktemp("demos"))
    comp = DemoCompressor(DEMOS, VAL, fmt=FMT, scorer=CosineScorer(proxy), config=cfg)
    assert comp.wait(600) is not None
    return comp


@pytest.fixture(scope="module")
def kept(compressor: DemoCompressor) -> list[int]:
    """The demonstrations the 0.5 rung keeps."""
    attr = compressor.attribution
    assert attr is not None
    out = attr.keep(compressor.keep_count(0.5))
    assert 0 < len(out) < len(DEMOS)
    return out


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def chat_model(url: str) -> ChatOpenAI:
    return ChatOpenAI(base_url=url, api_key=SecretStr("x"), model=MODEL, max_retries=0)


def sieve_with(store: FixedVerdictStore, compressor: DemoCompressor) -> Sieve:
    return Sieve(SieveConfig(guard=False), compressor=compressor, gate=Gate(store))


def few_shot_prompt() -> ChatPromptTemplate:
    """System message, a conversation turn, the demonstrations as human/AI pairs
    (LangChain's few-shot chat template), then the question."""
    demos = FewShotChatMessagePromptTemplate(
        examples=EXAMPLES,
        example_prompt=ChatPromptTemplate.from_messages(
            [("human", "{question}"), ("ai", "{answer}")]
        ),
    )
    return ChatPromptTemplate.from_messages(
        [("system", SYSTEM), *CHAT_TURN, demos, ("human", "{input}")]
    )


def pairs(kept: list[int] | None = None) -> list[BaseMessage]:
    idx = range(len(DEMOS)) if kept is None else kept
    return [m for i in idx for m in (HumanMessage(DEMOS[i].input), AIMessage(DEMOS[i].output))]


def expected(kept: list[int] | None = None) -> list[BaseMessage]:
    """The prompt's messages with only the demonstrations ``kept`` (all when None)."""
    head: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(CHAT_TURN[0][1]),
                               AIMessage(CHAT_TURN[1][1])]  # fmt: skip
    return [*head, *pairs(kept), HumanMessage(QUESTION)]


def wire(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """What ChatOpenAI itself sends for ``messages`` (the reference body)."""
    with ScriptedServer() as ref:
        chat_model(ref.url).invoke(messages)
        body: list[dict[str, Any]] = ref.bodies("/chat/completions")[0]["messages"]
    return body


def sent(srv: ScriptedServer) -> list[list[dict[str, Any]]]:
    return [b["messages"] for b in srv.bodies("/chat/completions")]


def test_prompt_renders_the_pairs() -> None:
    """The fixture prompt is what the other tests assume (guards the expected bodies)."""
    msgs = few_shot_prompt().format_messages(input=QUESTION)
    assert msgs == expected()


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream"])
async def test_wrapped_chat_model_drops_demonstration_pairs(
    compressor: DemoCompressor, kept: list[int], server: ScriptedServer, how: str
) -> None:
    """With a passed verdict at 0.5, the server receives the system message, the
    conversation turn, the kept pairs and the question; the dropped pairs are gone."""
    sieve = sieve_with(FixedVerdictStore.passed(0.5), compressor)
    chain = few_shot_prompt() | wrap_chat_model(chat_model(server.url), sieve, task=TASK)
    if how == "invoke":
        out = chain.invoke({"input": QUESTION}).content
    elif how == "ainvoke":
        out = (await chain.ainvoke({"input": QUESTION})).content
    else:
        out = "".join(str(c.content) for c in chain.stream({"input": QUESTION}))
    assert out == "ok"
    assert sent(server) == [wire(expected(kept))]
    assert sieve.stats.compressed == 1 and sieve.stats.errors == 0
    assert sieve.stats.tokens_after < sieve.stats.tokens_before


def test_wrapped_chat_model_screens_a_rung_without_the_dropped_pairs(
    compressor: DemoCompressor, kept: list[int], server: ScriptedServer
) -> None:
    """While screening, the live request is the whole prompt and the shadow comparison
    sends the rung without the dropped pairs; the agreement is recorded for that rung."""
    store = FixedVerdictStore.screening(0.5)
    sieve = sieve_with(store, compressor)
    chain = few_shot_prompt() | wrap_chat_model(chat_model(server.url), sieve, task=TASK)
    assert chain.invoke({"input": QUESTION}).content == "ok"
    assert sieve.flush(60)
    live, shadow = sent(server)
    assert live == wire(expected())
    assert shadow == wire(expected(kept))
    assert store.recorded == [(TASK, 0.5, True)]
    assert sieve.stats.errors == 0


def test_wrapped_chat_model_keeps_pairs_it_cannot_drop(
    compressor: DemoCompressor, server: ScriptedServer
) -> None:
    """Demonstration answers that carry a tool call cannot be left out (a later message may
    refer to them): the whole request goes out unchanged (fail open), counted as an error."""
    messages: list[BaseMessage] = []
    for i, d in enumerate(DEMOS):
        call = {"name": "lookup", "args": {"q": d.input}, "id": f"call_{i}"}
        messages += [HumanMessage(d.input), AIMessage(d.output, tool_calls=[call])]
    messages.append(HumanMessage(QUESTION))
    sieve = sieve_with(FixedVerdictStore.passed(0.5), compressor)
    model = wrap_chat_model(chat_model(server.url), sieve, task=TASK)
    assert model.invoke(messages).content == "ok"
    assert sent(server) == [wire(messages)]
    assert sieve.stats.compressed == 0 and sieve.stats.errors == 1


def test_compress_messages_step_keeps_the_callers_message_objects(
    compressor: DemoCompressor, kept: list[int]
) -> None:
    """The LCEL step hands on a ChatPromptValue of the caller's very message objects,
    without the dropped pairs."""
    sieve = sieve_with(FixedVerdictStore.passed(0.5), compressor)
    value = few_shot_prompt().invoke({"input": QUESTION})
    assert isinstance(value, ChatPromptValue)
    out = compress_messages(sieve, task=TASK, target=MODEL).invoke(value)
    assert isinstance(out, ChatPromptValue)
    assert out.messages == expected(kept)
    keep = [0, 1, 2, *(3 + 2 * i + j for i in kept for j in (0, 1)), len(value.messages) - 1]
    assert all(a is value.messages[i] for a, i in zip(out.messages, keep, strict=True))
    assert sieve.stats.compressed == 1 and sieve.stats.errors == 0


def test_agent_middleware_drops_demonstration_pairs(
    compressor: DemoCompressor, kept: list[int], server: ScriptedServer
) -> None:
    """LangChain v1 agent middleware: the pairs in the agent's messages are left out of the
    model request; the agent's state keeps them."""
    agents = require_module("langchain.agents")
    from promptsieve_langchain import SieveMiddleware

    sieve = sieve_with(FixedVerdictStore.passed(0.5), compressor)
    agent = agents.create_agent(
        model=chat_model(server.url), tools=[], system_prompt=SYSTEM,
        middleware=[SieveMiddleware(sieve, task=TASK)],
    )  # fmt: skip
    result = agent.invoke({"messages": [*pairs(), HumanMessage(QUESTION)]})
    assert result["messages"][-1].content == "ok"
    assert len(result["messages"]) == 2 * len(DEMOS) + 2
    ref = [SystemMessage(SYSTEM), *pairs(kept), HumanMessage(QUESTION)]
    assert sent(server) == [wire(ref)]
    assert sieve.stats.compressed == 1 and sieve.stats.errors == 0


def test_rebuild_leaves_out_only_plain_text_turns() -> None:
    """The rule, on the LangChain converter: whole human/AI text messages may be left out
    and the kept ones are the caller's objects; a system message, a tool call, an image
    block, ``additional_kwargs``, response metadata, a removal combined with a rewrite and
    an empty prompt raise UnsupportedRequest (the wrapper then sends the original)."""
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    call = {"name": "f", "args": {}, "id": "c1"}
    messages: list[BaseMessage] = [
        SystemMessage("sys"),
        HumanMessage("q1", name="example_user", id="m1"),
        ChatMessage(role="assistant", content=[{"type": "text", "text": "a1"}]),
        HumanMessage(["q2", image]),
        AIMessage("a2", tool_calls=[call]),
        HumanMessage("q3"),
        AIMessage("a3", additional_kwargs={"function_call": {"name": "f", "arguments": "{}"}}),
        HumanMessage("q4"),
        AIMessage("a4", response_metadata={"model_name": "m"}),
        HumanMessage("final"),
    ]
    p = to_neutral(messages)
    out = rebuild_messages(messages, p, (p[0], *p[3:]))
    assert all(a is b for a, b in zip(out, [messages[0], *messages[3:]], strict=True))
    for bad in (
        (p[1], p[2], *p[3:]),  # the system message
        (p[0], p[1], p[2], *p[5:]),  # the image turn and the tool-call turn
        (*p[:5], p[7], p[8], p[9]),  # a turn with additional_kwargs
        (*p[:7], p[9]),  # a turn with response metadata
        (p[0], *p[3:9], p[9].with_parts([TextPart("other")])),  # a removal and a rewrite
        (),
    ):
        with pytest.raises(UnsupportedRequest):
            rebuild_messages(messages, p, bad)
