"""LangChain adapter: real langchain-core chains, ChatOpenAI against a scripted
OpenAI-compatible server on 127.0.0.1 (and, marked slow, the local llama.cpp target), the
real compressor on the real ONNX proxy, and a real SQLite verdict store per test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForRetrieverRun
from langchain_core.callbacks.manager import AsyncCallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import ChatOpenAI

from _ci import require_module
from _scripted_server import Reply, ScriptedServer, chat_completion
from _sieve_helpers import WordDropCompressor
from promptsieve import ConfigError, Message, TextPart
from promptsieve.compressor import Compressor, CompressorConfig
from promptsieve.fidelity import Gate, GateConfig, SQLiteStore, VerdictKey
from promptsieve.fidelity.store import Verdict, VerdictState
from promptsieve.proxy import ProxyConfig
from promptsieve.sieve import Sieve, SieveConfig
from promptsieve_langchain import (
    EVENT,
    CompressMessages,
    SieveDocumentCompressor,
    compress_messages,
    wrap_chat_model,
)

MODEL = "gpt-4o-mini"
SYSTEM = "You answer questions about Python from the context. Reply with one word."
_TOPICS = sorted(topics)


def context(i: int = 0, chars: int = 700) -> str:
    """Real prose: a slice of Python's own pydoc topics."""
    return " ".join(topics[_TOPICS[20 + i]][:chars].split())


def question(i: int = 0) -> str:
    return f"Which Python feature does topic {_TOPICS[20 + i]} describe?"


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compressor(proxy_cache_dir: Path) -> Compressor:
    c = Compressor(CompressorConfig(proxy=ProxyConfig(cache_dir=proxy_cache_dir)))
    _ = c.fingerprint  # loads (exports once per session) the proxy and its scorer
    return c


@pytest.fixture(scope="module")
def sentence_compressor(proxy_cache_dir: Path) -> Compressor:
    """Sentence-level pruning: what the 270M local target stays stable on."""
    cfg = CompressorConfig(scorer="sentence", proxy=ProxyConfig(cache_dir=proxy_cache_dir))
    return Compressor(cfg)


def make_sieve(
    tmp_path: Path, compressor: Compressor, gate: GateConfig | None = None, **config: Any
) -> Sieve:
    gate_cfg = gate or GateConfig(monitor_rate=0.0, seed=0)
    cfg = SieveConfig(
        scoring_budget_ms=120_000.0,  # 2 shared CPU cores: time is not what is under test
        guard=False,  # the instance guard is not what is under test here
        gate=gate_cfg,
        **config,
    )
    store = SQLiteStore(tmp_path / "verdicts.db")
    return Sieve(cfg, compressor=compressor, gate=Gate(store, gate_cfg))


@pytest.fixture
def sieve(tmp_path: Path, compressor: Compressor) -> Sieve:
    return make_sieve(tmp_path, compressor)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def chat_model(url: str, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=url, api_key="x", model=MODEL, max_retries=0, **kwargs)


def pass_verdict(sieve: Sieve, task: str, model: str = MODEL, ratio: float = 0.5) -> None:
    """Store a passed verdict for ``task`` (as screening would leave it)."""
    key = VerdictKey(task, model, sieve.compressor.fingerprint, sieve.config.settings_key())
    now = time.time()
    verdict = Verdict(
        state=VerdictState.PASSED,
        ratio=ratio,
        testing=ratio,
        created_at=now,
        updated_at=now,
        expires_at=now + 3600,
        generation=1,
    )
    gate = sieve.gate
    assert isinstance(gate, Gate)
    old = gate.store.get(key)
    assert gate.store.put(key, verdict, expected_version=None if old is None else old.version)


def chat_bodies(srv: ScriptedServer) -> list[dict[str, Any]]:
    return [b for b in srv.bodies("/chat/completions") if b is not None]


def user_text(body: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")


def qa_prompt() -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages(
        [("system", SYSTEM), ("human", "{context}\n\nQuestion: {question}")]
    )


def qa_input(i: int = 0) -> dict[str, str]:
    return {"context": context(i), "question": question(i)}


def is_subsequence(short: str, long: str) -> bool:
    """Every word of ``short`` appears in ``long``, in order (pruning only drops words)."""
    words = iter(re.findall(r"\w+", long))
    return all(any(w == x for x in words) for w in re.findall(r"\w+", short))


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any, UUID]] = []

    def on_custom_event(
        self, name: str, data: Any, *, run_id: UUID, tags: Any = None, **kw: Any
    ) -> None:
        self.events.append((name, data, run_id))


def assert_no_prompt_text(data: dict[str, Any], text: str) -> None:
    words = {w for w in text.split() if len(w) > 5}
    for value in data.values():
        if isinstance(value, str):
            assert not (set(value.split()) & words), value


# -- the LCEL step -------------------------------------------------------------------------
def test_sync_chain_compresses_only_with_a_passed_verdict(
    sieve: Sieve, server: ScriptedServer
) -> None:
    llm = chat_model(server.url)
    chain = (
        qa_prompt() | compress_messages(sieve, task="qa", target=MODEL) | llm | StrOutputParser()
    )

    # No verdict yet: the prompt goes out untouched.
    assert chain.invoke(qa_input()) == "ok"
    first = chat_bodies(server)[-1]
    assert user_text(first) == f"{context()}\n\nQuestion: {question()}"
    assert sieve.stats.tokens_saved == 0

    pass_verdict(sieve, "qa")
    assert chain.invoke(qa_input()) == "ok"
    body = chat_bodies(server)[-1]
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}  # never touched
    sent = user_text(body)
    assert len(sent) < 0.8 * len(user_text(first))
    assert sent.endswith(question())  # the final question is protected
    assert is_subsequence(sent, user_text(first))
    assert sieve.stats.tokens_saved > 0
    assert sieve.stats.decisions["apply"] == 1


async def test_async_chain(sieve: Sieve, server: ScriptedServer) -> None:
    pass_verdict(sieve, "qa")
    step = compress_messages(sieve, task="qa", target=MODEL)
    assert type(step).ainvoke is not Runnable.ainvoke  # its own async code path
    chain = qa_prompt() | step | chat_model(server.url) | StrOutputParser()
    out = await asyncio.gather(chain.ainvoke(qa_input(0)), chain.ainvoke(qa_input(1)))
    assert out == ["ok", "ok"]
    sent = sorted(user_text(b) for b in chat_bodies(server))
    originals = sorted(f"{context(i)}\n\nQuestion: {question(i)}" for i in (0, 1))
    for s, o in zip(sent, originals, strict=True):
        assert len(s) < 0.8 * len(o)
    assert sieve.stats.compressed == 2


def test_batch_and_abatch(sieve: Sieve, server: ScriptedServer) -> None:
    pass_verdict(sieve, "qa")
    chain = qa_prompt() | compress_messages(sieve, task="qa", target=MODEL) | chat_model(server.url)
    outs = chain.batch([qa_input(i) for i in range(3)])
    assert [o.content for o in outs] == ["ok"] * 3
    outs = asyncio.run(chain.abatch([qa_input(i) for i in range(3)]))
    assert [o.content for o in outs] == ["ok"] * 3
    assert sieve.stats.compressed == 6
    for body in chat_bodies(server):
        assert len(user_text(body)) < 0.8 * len(context(0))


def test_stream_through_the_chain(sieve: Sieve, server: ScriptedServer) -> None:
    pass_verdict(sieve, "qa")
    chain = (
        qa_prompt()
        | compress_messages(sieve, task="qa", target=MODEL)
        | chat_model(server.url)
        | StrOutputParser()
    )
    chunks = list(chain.stream(qa_input()))
    assert len(chunks) >= 2 and "".join(chunks) == "ok"

    async def astream() -> list[str]:
        return [c async for c in chain.astream(qa_input(1))]

    assert "".join(asyncio.run(astream())) == "ok"
    bodies = chat_bodies(server)
    assert all(b.get("stream") for b in bodies)
    assert all(len(user_text(b)) < 0.8 * len(context(0)) for b in bodies)


def test_same_kind_out_and_only_compressible_text_changes(
    tmp_path: Path, compressor: Compressor
) -> None:
    # scorer="head": the word path shortens every compressible message at the ratio, which is
    # what shows each kind was compressed; the default's coarse-to-fine budget is shared over
    # the whole request and may keep a whole turn (tests/test_default_scorer.py covers it)
    head = CompressorConfig(scorer="head", proxy=compressor.config.proxy)
    sieve = make_sieve(tmp_path, Compressor(head, proxy=compressor.proxy))
    step = compress_messages(sieve, verify=False, ratio=0.5)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    call = {"name": "lookup", "args": {"topic": "with"}, "id": "call_1", "type": "tool_call"}
    system = SystemMessage(context(3, 300))
    ai = AIMessage(content=context(4, 400), tool_calls=[call], additional_kwargs={"k": 1})
    tool_msg = ToolMessage(context(5, 300), tool_call_id="call_1")
    human = HumanMessage(
        content=[{"type": "text", "text": context(0)}, image], additional_kwargs={"x": 2}
    )
    messages = [system, ai, tool_msg, human]

    out = step.invoke(messages)
    assert isinstance(out, list) and len(out) == 4
    assert out[0] is system and out[2] is tool_msg  # protected roles: the very objects
    assert out[1].tool_calls == ai.tool_calls and out[1].additional_kwargs == {"k": 1}
    assert len(str(out[1].content)) < len(str(ai.content))
    assert isinstance(out[3].content, list) and out[3].content[1] == image
    assert out[3].additional_kwargs == {"x": 2}
    assert len(out[3].content[0]["text"]) < len(context(0))

    value = ChatPromptValue(messages=messages)
    as_value = step.invoke(value)
    assert isinstance(as_value, ChatPromptValue)
    assert [type(m) for m in as_value.messages] == [type(m) for m in messages]

    text = context(1)
    assert isinstance(step.invoke(text), str) and len(step.invoke(text)) < len(text)
    pv = step.invoke(StringPromptValue(text=text))
    assert isinstance(pv, StringPromptValue) and len(pv.text) < len(text)
    tuples = step.invoke([("system", SYSTEM), ("human", text)])
    assert [m.type for m in tuples] == ["system", "human"]
    assert tuples[0].content == SYSTEM

    string_chain = PromptTemplate.from_template("{x}") | step
    assert isinstance(string_chain.invoke({"x": text}), StringPromptValue)


def test_unscreened_runnable_without_a_target_passes_through_and_frees_its_slot(
    sieve: Sieve,
) -> None:
    step = compress_messages(sieve, task="qa")
    value = ChatPromptValue(messages=[HumanMessage(context())])
    for _ in range(3):
        assert step.invoke(value) is value
    assert sieve.stats.decisions["shadow"] == 3
    assert sieve.stats.compressed == 0
    gate = sieve.gate
    assert isinstance(gate, Gate)
    assert not any(gate._in_flight.values())  # nothing left counting against screening


def test_verify_requires_no_ratio_and_verify_false_requires_one(sieve: Sieve) -> None:
    with pytest.raises(ConfigError):
        compress_messages(sieve, task="qa", ratio=0.5)
    with pytest.raises(ConfigError):
        compress_messages(sieve, verify=False)
    with pytest.raises(ConfigError):
        compress_messages(sieve, verify=False, ratio=1.5)


async def test_custom_events_in_astream_events_and_callbacks(
    sieve: Sieve, server: ScriptedServer
) -> None:
    pass_verdict(sieve, "qa")
    chain = (
        qa_prompt()
        | compress_messages(sieve, task="qa", target=MODEL)
        | chat_model(server.url)
        | StrOutputParser()
    )
    custom = [
        ev
        async for ev in chain.astream_events(qa_input(), version="v2")
        if ev["event"] == "on_custom_event"
    ]
    assert [ev["name"] for ev in custom] == [EVENT]
    data = custom[0]["data"]
    assert data["action"] == "apply" and data["task"] == "qa" and data["compressed"]
    assert data["tokens_saved"] == data["tokens_before"] - data["tokens_after"] > 0
    assert_no_prompt_text(data, context())

    handler = Events()
    chain.invoke(qa_input(1), {"callbacks": [handler]})
    assert [name for name, _, _ in handler.events] == [EVENT]
    assert handler.events[0][1]["tokens_saved"] > 0


async def test_runnable_with_a_target_screens_through_it(
    tmp_path: Path, compressor: Compressor, server: ScriptedServer
) -> None:
    # τ = 0.5 at δ = 0.05 passes after 5 agreeing comparisons: a short screening.
    gate = GateConfig(tau=0.5, delta=0.05, budget=20, ratios=(0.5,), monitor_rate=0.0)
    sieve = make_sieve(tmp_path, compressor, gate=gate)
    llm = chat_model(server.url)
    chain = qa_prompt() | compress_messages(sieve, task="qa", target=llm) | llm
    for i in range(12):
        await chain.ainvoke(qa_input(i % 3))
        await sieve.aflush(timeout=120)
        if sieve.stats.compressed:
            break
    assert sieve.stats.comparisons >= 5 and sieve.stats.agreements >= 5
    assert sieve.stats.compressed == 1 and sieve.stats.tokens_saved > 0


# -- retriever documents -------------------------------------------------------------------
class CompressingRetriever(BaseRetriever):
    """What ContextualCompressionRetriever (langchain-classic) does: retrieve, compress."""

    base: BaseRetriever
    compressor: SieveDocumentCompressor

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        docs = self.base.invoke(query, {"callbacks": run_manager.get_child()})
        return list(self.compressor.compress_documents(docs, query, run_manager.get_child()))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        docs = await self.base.ainvoke(query, {"callbacks": run_manager.get_child()})
        out = await self.compressor.acompress_documents(docs, query, run_manager.get_child())
        return list(out)


def corpus() -> list[Document]:
    return [
        Document(page_content=context(i), metadata={"source": _TOPICS[20 + i], "n": i}, id=str(i))
        for i in range(4)
    ]


def retriever(k: int = 3) -> BaseRetriever:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
    store.add_documents(corpus())
    return store.as_retriever(search_kwargs={"k": k})


def test_document_compressor_is_query_aware_and_keeps_metadata(
    sieve: Sieve, compressor: Compressor
) -> None:
    # The default (head) compressor: the documents still go through the coarse-to-fine
    # budget together, one passage per document (tests/test_langchain_documents.py has the
    # answer-among-distractors case on the relevance head).
    docs = SieveDocumentCompressor(sieve=sieve, verify=False, ratio=0.5)
    handler = Events()
    query = "How does a for loop iterate?"
    r = CompressingRetriever(base=retriever(), compressor=docs)
    retrieved = retriever().invoke(query)
    got = r.invoke(query, {"callbacks": [handler]})
    assert 1 <= len(got) <= 3
    twin = Compressor(
        dataclasses.replace(compressor.config, coarse_to_fine=True, part_passages=True),
        proxy=compressor.proxy,
        scorer=compressor.scorer,
    )
    messages = [Message("user", (TextPart(d.page_content),)) for d in retrieved]
    messages.append(Message("user", (TextPart(query, protected=True),)))
    joint = twin.compress(messages, ratio=0.5, question=query).prompt
    expected = [(d.id, m.content) for d, m in zip(retrieved, joint, strict=False) if m.content]
    assert [(d.id, d.page_content) for d in got] == expected  # the query was the question
    by_id = {d.id: d for d in corpus()}
    for d in got:
        orig = by_id[d.id]
        assert d.metadata["source"] == orig.metadata["source"]
        assert d.metadata["n"] == orig.metadata["n"]
        if d.page_content != orig.page_content:
            meta = d.metadata["promptsieve"]
            assert meta["tokens_after"] < meta["tokens_before"]
    assert [name for name, _, _ in handler.events] == [EVENT]
    data = handler.events[0][1]
    assert data["documents"] == 3 and data["documents_kept"] == len(got)
    assert data["tokens_after"] < 0.6 * data["tokens_before"]
    assert_no_prompt_text(data, " ".join(d.page_content for d in corpus()))

    agot = asyncio.run(r.ainvoke(query))
    assert [(d.id, d.page_content) for d in agot] == [(d.id, d.page_content) for d in got]


def test_document_compressor_follows_the_verdict(sieve: Sieve) -> None:
    docs = SieveDocumentCompressor(sieve=sieve, task="rag", model=MODEL)
    originals = corpus()[:2]
    out = docs.compress_documents(originals, "what is a for loop")
    assert all(a is b for a, b in zip(out, originals, strict=True))  # unscreened: untouched

    pass_verdict(sieve, "rag", ratio=0.5)
    out = asyncio.run(docs.acompress_documents(originals, "what is a for loop"))
    assert sum(len(d.page_content) for d in out) < 0.8 * sum(len(d.page_content) for d in originals)
    assert [d.metadata["n"] for d in out] in ([0, 1], [0], [1])
    assert sieve.stats.compressed == 1  # one request for all the documents


# -- the wrapped chat model ----------------------------------------------------------------
def test_wrapped_chat_model_screens_to_a_pass_then_compresses(
    tmp_path: Path, compressor: Compressor, server: ScriptedServer
) -> None:
    gate = GateConfig(tau=0.5, delta=0.05, budget=20, ratios=(0.5,), monitor_rate=0.0)
    sieve = make_sieve(tmp_path, compressor, gate=gate)
    model = wrap_chat_model(chat_model(server.url), sieve, task="faq")
    chain = qa_prompt() | model | StrOutputParser()
    originals = {f"{context(i)}\n\nQuestion: {question(i)}" for i in range(3)}
    for i in range(12):
        assert chain.invoke(qa_input(i % 3)) == "ok"
        assert sieve.flush(timeout=120)
        if sieve.stats.decisions["apply"]:
            break
    bodies = chat_bodies(server)
    # Shadow: every live call sent the original; the compressed variants went in background.
    shadow_live = [b for b in bodies[:-1] if user_text(b) in originals]
    assert len(shadow_live) >= 5
    assert sieve.stats.screening_calls >= 5 and sieve.stats.agreements >= 5
    last = bodies[-1]
    assert user_text(last) not in originals  # applied
    assert last["messages"][0] == {"role": "system", "content": SYSTEM}
    assert sieve.stats.decisions["apply"] == 1 and sieve.stats.tokens_saved > 0

    # Streaming through the wrapper keeps working once applied.
    assert "".join(chain.stream(qa_input(1))) == "ok"
    assert chat_bodies(server)[-1]["stream"] is True
    assert user_text(chat_bodies(server)[-1]) not in originals


def test_wrapped_model_that_does_not_stream_natively_still_streams(
    sieve: Sieve, server: ScriptedServer
) -> None:
    """A model with ``disable_streaming`` (or no ``_stream``) answers ``stream`` with its
    whole message, not a chunk: through the wrapper that raised a pydantic ValidationError
    into every stream, astream and astream_events call, bypass included. Now the wrapped
    model streams what the bare one streams, and the compressed prompt goes out."""
    pass_verdict(sieve, "qa")
    inner = chat_model(server.url, disable_streaming=True)
    model = wrap_chat_model(inner, sieve, task="qa")
    messages = qa_prompt().invoke(qa_input()).to_messages()
    bare = "".join(str(c.content) for c in inner.stream(messages))
    assert bare == "ok" and "".join(str(c.content) for c in model.stream(messages)) == bare

    async def both() -> tuple[str, list[str]]:
        chunks = "".join([str(c.content) async for c in model.astream(messages)])
        events = [e["event"] async for e in model.astream_events(messages, version="v2")]
        return chunks, events

    chunks, events = asyncio.run(both())
    assert chunks == bare and "on_chat_model_end" in events
    bodies = chat_bodies(server)
    assert len(bodies) == 4 and not any(b.get("stream") for b in bodies)  # invoked, not streamed
    assert all(len(user_text(b)) < 0.8 * len(context(0)) for b in bodies[1:])
    assert sieve.stats.errors == 0 and sieve.stats.decisions["apply"] == 3


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"method": "json_mode"}, {"method": "function_calling"}, {"include_raw": True}],
)
def test_structured_output_sends_what_the_bare_model_sends(
    sieve: Sieve, kwargs: dict[str, Any]
) -> None:
    """BaseChatModel's default with_structured_output always used tool calling and dropped
    ``method``: the wrapped model sent tools + tool_choice where the bare one sent
    response_format (JSON schema or JSON mode). Now the request is the bare model's, with
    the compressed prompt, and the parsed answer is the same."""
    from pydantic import BaseModel

    class Answer(BaseModel):
        answer: str

    def responder(rec: Any) -> Reply:
        if rec.json.get("tools"):
            return Reply(json=chat_completion(None, tool_calls=[("Answer", '{"answer": "x"}')]))
        return Reply(json=chat_completion('{"answer": "x"}'))

    pass_verdict(sieve, "qa")
    messages = qa_prompt().invoke(qa_input()).to_messages()
    with ScriptedServer(responder) as srv:
        bare = chat_model(srv.url)
        wrapped = wrap_chat_model(bare, sieve, task="qa")
        got = [m.with_structured_output(Answer, **kwargs).invoke(messages) for m in (bare, wrapped)]
        plain, compressed = chat_bodies(srv)
    if kwargs.get("include_raw"):
        got = [g["parsed"] for g in got]
    assert got == [Answer(answer="x")] * 2
    for key in ("response_format", "tools", "tool_choice"):
        assert compressed.get(key) == plain.get(key), key
    assert len(user_text(compressed)) < 0.8 * len(user_text(plain))


async def test_wrapped_chat_model_async_tools_and_events(
    sieve: Sieve, server: ScriptedServer
) -> None:
    @tool
    def lookup(topic: str) -> str:
        """Look a Python topic up."""
        return topic

    pass_verdict(sieve, "tools")
    model = wrap_chat_model(chat_model(server.url), sieve, task="tools")
    server.push(Reply(json=chat_completion(None, tool_calls=[("lookup", '{"topic": "for"}')])))
    bound = model.bind_tools([lookup])
    msg = await bound.ainvoke([("system", SYSTEM), ("human", context())])
    assert isinstance(msg, AIMessage)
    assert msg.tool_calls[0]["name"] == "lookup" and msg.tool_calls[0]["args"] == {"topic": "for"}
    body = chat_bodies(server)[-1]
    assert body["tools"][0]["function"]["name"] == "lookup"
    assert len(user_text(body)) < 0.8 * len(context())

    chunks = [c async for c in model.astream([("human", context(1))])]
    assert "".join(str(c.content) for c in chunks) == "ok"

    handler = Events()
    await model.ainvoke([("human", context(2))], {"callbacks": [handler]})
    assert [name for name, _, _ in handler.events] == [EVENT]
    assert handler.events[0][1]["component"] == "chat_model" and handler.events[0][1]["compressed"]

    chain = qa_prompt() | model | StrOutputParser()
    events = [
        ev
        async for ev in chain.astream_events(qa_input(3), version="v2")
        if ev["event"] == "on_custom_event"
    ]
    assert [ev["name"] for ev in events] == [EVENT]
    assert sieve.stats.compressed == 4


# -- agent middleware ----------------------------------------------------------------------
def test_agent_middleware_compresses_model_requests(sieve: Sieve, server: ScriptedServer) -> None:
    agents = require_module("langchain.agents")
    from promptsieve_langchain import SieveMiddleware

    pass_verdict(sieve, "agent")
    agent = agents.create_agent(
        model=chat_model(server.url),
        tools=[],
        system_prompt=SYSTEM,
        middleware=[SieveMiddleware(sieve, task="agent")],
    )
    result = agent.invoke({"messages": [HumanMessage(context())]})
    assert result["messages"][-1].content == "ok"
    assert result["messages"][0].content == context()  # the agent's state keeps the original
    body = chat_bodies(server)[-1]
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}
    assert len(user_text(body)) < 0.8 * len(context())

    async def run() -> Any:
        return await agent.ainvoke({"messages": [HumanMessage(context(1))]})

    assert asyncio.run(run())["messages"][-1].content == "ok"
    assert sieve.stats.compressed == 2


@pytest.mark.parametrize("strategy", ["provider", "tool"])
def test_agent_middleware_comparisons_send_the_agents_own_request(
    tmp_path: Path, compressor: Compressor, strategy: str
) -> None:
    """An agent with structured output: the shadow comparison sent the model with only the
    request's tools bound, without the agent's response_format (ProviderStrategy) or its
    structured-output tool and tool_choice (ToolStrategy), so every comparison disagreed
    and the task could never pass. Now it goes through the agent's own model call: the
    same request, only the text changed; the comparison agrees (sync and async)."""
    agents = require_module("langchain.agents")
    from langchain.agents.structured_output import ProviderStrategy, ToolStrategy
    from pydantic import BaseModel

    from promptsieve_langchain import SieveMiddleware

    class Answer(BaseModel):
        answer: str

    def responder(rec: Any) -> Reply:
        if any(t["function"]["name"] == "Answer" for t in rec.json.get("tools") or ()):
            return Reply(json=chat_completion(None, tool_calls=[("Answer", '{"answer": "x"}')]))
        return Reply(json=chat_completion('{"answer": "x"}'))

    gate = GateConfig(tau=0.5, delta=0.05, budget=20, ratios=(0.5,), monitor_rate=0.0)
    sieve = make_sieve(tmp_path, compressor, gate=gate)
    fmt = ProviderStrategy(Answer) if strategy == "provider" else ToolStrategy(Answer)
    with ScriptedServer(responder) as srv:
        agent = agents.create_agent(
            model=chat_model(srv.url),
            tools=[],
            response_format=fmt,
            middleware=[SieveMiddleware(sieve, task="structured")],
        )
        result = agent.invoke({"messages": [HumanMessage(context())]})
        assert sieve.flush(timeout=120)

        async def run() -> Any:
            out = await agent.ainvoke({"messages": [HumanMessage(context(1))]})
            assert await sieve.aflush(timeout=120)  # the comparison runs on this loop
            return out

        assert asyncio.run(run())["structured_response"] == Answer(answer="x")
        bodies = chat_bodies(srv)
    assert result["structured_response"] == Answer(answer="x")
    assert len(bodies) == 4  # live, comparison; live, comparison
    for live, variant in (bodies[:2], bodies[2:]):
        assert len(user_text(variant)) < 0.8 * len(user_text(live))
        for key in ("response_format", "tools", "tool_choice"):
            assert variant.get(key) == live.get(key), key
    assert bodies[0].get("response_format" if strategy == "provider" else "tools")
    assert sieve.stats.comparisons == 2 and sieve.stats.agreements == 2


def test_public_names() -> None:
    import promptsieve_langchain as pl

    assert set(pl.__all__) >= {
        "compress_messages",
        "SieveDocumentCompressor",
        "wrap_chat_model",
        "SieveMiddleware",
    }
    assert isinstance(compress_messages(verify=False, ratio=0.5), CompressMessages)


# -- the real local target (llama.cpp, Gemma 3 270M) ----------------------------------------
NEEDLES = (
    ("blue door", "4172"),
    ("red box", "9035"),
    ("green gate", "2861"),
    ("old clock", "5549"),
    ("tall tower", "7310"),
    ("small boat", "6624"),
)


def needle_prompt(i: int) -> str:
    """A short needle-in-a-haystack prompt over pydoc topics; the question comes first (it is
    the protected final question) and the needle sits between two slices of real prose."""
    thing, code = NEEDLES[i % len(NEEDLES)]
    before = " ".join(topics[_TOPICS[10 + i]][:360].split())
    after = " ".join(topics[_TOPICS[40 + i]][:240].split())
    return (
        f"What is the secret code of the {thing}?\n"
        f"{before} The secret code of the {thing} is {code}. {after}"
    )


@pytest.fixture(scope="module")
def local_target() -> Iterator[Any]:
    from promptsieve.local import LocalTarget

    require_module("llama_cpp", "needs promptsieve[local] (llama-cpp-python[server])")
    with LocalTarget.start() as target:  # a failure to start is a failure, not a skip
        yield target


@pytest.mark.slow
def test_wrapped_local_target_screens_to_a_pass_then_compresses(
    tmp_path: Path, sentence_compressor: Compressor, local_target: Any
) -> None:
    # A short ladder and a lenient τ keep screening to three agreeing comparisons; what is
    # under test is the path shadow → pass → apply through a real target, not the target.
    gate = GateConfig(tau=0.5, delta=0.2, budget=16, ratios=(0.7,), monitor_rate=0.0, seed=0)
    sieve = make_sieve(tmp_path, sentence_compressor, gate=gate, metric="answer")
    llm = ChatOpenAI(
        base_url=local_target.base_url,
        api_key="x",
        model=local_target.model,
        temperature=0,
        max_retries=0,
        timeout=120,
        stop=["\n"],
        # langchain-openai sends max_completion_tokens, which llama.cpp's server ignores
        extra_body={"max_tokens": 8, "seed": 0},
    )
    model = wrap_chat_model(llm, sieve, task="needle")
    for i in range(16):
        out = model.invoke([HumanMessage(needle_prompt(i))])
        assert isinstance(out, AIMessage)
        assert sieve.flush(timeout=300)
        if sieve.stats.decisions["apply"]:
            break
    stats = sieve.stats.snapshot()
    assert stats["decisions"]["shadow"] >= 3, stats
    assert stats["agreements"] >= 3, stats
    assert stats["decisions"]["apply"] == 1, stats
    assert stats["compressed"] == 1 and stats["tokens_saved"] > 0, stats


@pytest.mark.parametrize(
    "junk",
    [b"SQLite format 3\x00" + b"\xff" * 4096, b"not a database, just text"],
    ids=["corrupt-body", "not-sqlite"],
)
def test_a_derived_sieve_whose_store_went_bad_fails_open(
    tmp_path: Path, server: ScriptedServer, junk: bytes
) -> None:
    """A component that verifies on a sieve built with ``verify=False`` derives its own
    sieve on first use. The verdict store's file went bad after the base sieve was built:
    the user's call still answers, with the original prompt, and the fault is counted
    (before, ``invoke`` raised StoreError or ConfigError on every call)."""
    path = tmp_path / "verdicts.sqlite3"
    base = Sieve(
        SieveConfig(verify=False, ratio=0.5, guard=False, store_path=path),
        compressor=WordDropCompressor(),
    )
    path.write_bytes(junk)
    model = wrap_chat_model(chat_model(server.url), base, verify=True)
    for _ in range(2):
        assert model.invoke([HumanMessage(context(0))]).content == "ok"
    assert [b["messages"][0]["content"] for b in server.bodies()] == [context(0)] * 2
    assert base.stats.errors == 2


def test_a_derived_sieve_shares_the_base_gate_with_its_optional_parts(tmp_path: Path) -> None:
    """The derived sieve's gate is the base sieve's, opened on first use: its mode is read
    without opening the store, and labelled mode's ``record_pair`` (and ``verdict``) reach
    the base gate, as when the derived sieve held the base gate itself."""
    from promptsieve_langchain._sieves import resolve

    def judge(request: object, output: object) -> bool:
        return True

    base = Sieve(
        SieveConfig(
            verify=False,
            ratio=0.5,
            store_path=tmp_path / "verdicts.sqlite3",
            gate=GateConfig(mode="labelled"),
            judge=judge,
        ),
        compressor=WordDropCompressor(),
    )
    derived = resolve(base, verify=True, ratio=None)()
    assert derived is not base and derived.config.verify
    assert derived.gate_config is not None and derived.gate_config.mode == "labelled"
    assert not (tmp_path / "verdicts.sqlite3").exists()  # nothing opened yet
    assert derived.gate.record_pair == base.gate.record_pair  # type: ignore[attr-defined]
    assert derived.gate.verdict == base.gate.verdict  # type: ignore[attr-defined]
