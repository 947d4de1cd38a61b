"""SieveDocumentCompressor: retrieved documents compressed together under one budget, on the
real ONNX proxy with the committed relevance head, through real langchain-core retrievers
(an in-memory vector store) and a retriever that does what ContextualCompressionRetriever
does (langchain-classic, which holds it, is not a dependency here).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForRetrieverRun
from langchain_core.callbacks.manager import AsyncCallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore

from promptsieve import Message, Sieve, SieveConfig, TextPart, UnsupportedRequest
from promptsieve._coarse import score_part
from promptsieve.compressor import Compressor, CompressorConfig
from promptsieve.fidelity import Gate, GateConfig, SQLiteStore
from promptsieve.proxy import Proxy
from promptsieve.segment import SegmentConfig, segment
from promptsieve.tokens import count_tokens
from promptsieve_langchain import EVENT, SieveDocumentCompressor

MODEL = "gpt-4o-mini"
QUESTION = "In which year did the Eiffel Tower open to the public?"
ANSWER_SENTENCE = "The tower opened to the public in 1889, and it was the tallest"
ANSWER = (
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. It is "
    "named after the engineer Gustave Eiffel, whose company designed and built the tower. "
    "Locally nicknamed the Iron Lady, it was constructed as the centrepiece of the World's Fair."
    "\n\n"
    "Construction began in January 1887 and took about two years. The tower opened to the "
    "public in 1889, and it was the tallest man-made structure in the world until 1930. "
    "Today it receives millions of visitors every year."
)
DISTRACTORS = (
    "Bananas are grown in tropical regions across Asia, Africa and Latin America. The plants "
    "are large herbs rather than trees, and their fruit grows in hanging clusters. Farmers "
    "usually harvest bananas while they are still green, because they ripen during transport. "
    "A ripe banana is yellow and soft, and its starch has turned into sugar.",
    "Coffee beans are the roasted seeds of the coffee plant. Roasting changes their colour, "
    "their aroma and their taste, and darker roasts are more bitter.\n\nEspresso is made by "
    "forcing hot water through finely ground coffee under pressure. Brazil has been the "
    "largest producer of coffee for more than a century.",
    "The Nile is a major river in northeastern Africa that flows north into the Mediterranean "
    "Sea. Its two main tributaries are the White Nile and the Blue Nile, which meet near "
    "Khartoum. For thousands of years the river's annual flood made farming possible in the "
    "desert, and most of Egypt's population still lives along its banks.",
    "Chess is a board game for two players, played on a board of sixty-four squares. Each "
    "player begins with sixteen pieces, and the goal is to checkmate the opposing king. "
    "Modern rules took shape in southern Europe in the fifteenth century. Computers have "
    "played chess better than the strongest humans since the late 1990s.",
)


def corpus() -> list[Document]:
    """The answer document among four distractors (one of them two blank-line passages)."""
    texts = [DISTRACTORS[0], DISTRACTORS[1], ANSWER, DISTRACTORS[2], DISTRACTORS[3]]
    return [
        Document(page_content=t, metadata={"source": f"wiki/{i}", "n": i}, id=str(i))
        for i, t in enumerate(texts)
    ]


ANSWER_ID = "2"


def count(text: str) -> int:
    return count_tokens(text, MODEL)


def is_subsequence(short: str, long: str) -> bool:
    """Every word of ``short`` appears in ``long``, in order (pruning only drops words)."""
    words = iter(re.findall(r"\w+", long))
    return all(any(w == x for x in words) for w in re.findall(r"\w+", short))


class CompressingRetriever(BaseRetriever):
    """What ContextualCompressionRetriever does: retrieve, then compress_documents(docs,
    query, callbacks=run_manager.get_child()); an empty retrieval skips the compressor."""

    base: BaseRetriever
    compressor: SieveDocumentCompressor

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        docs = self.base.invoke(query, {"callbacks": run_manager.get_child()})
        if not docs:
            return []
        return list(self.compressor.compress_documents(docs, query, run_manager.get_child()))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        docs = await self.base.ainvoke(query, {"callbacks": run_manager.get_child()})
        if not docs:
            return []
        out = await self.compressor.acompress_documents(docs, query, run_manager.get_child())
        return list(out)


def vector_retriever(docs: list[Document]) -> BaseRetriever:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
    store.add_documents(docs)
    return store.as_retriever(search_kwargs={"k": len(docs)})


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_custom_event(
        self, name: str, data: Any, *, run_id: UUID, tags: Any = None, **kw: Any
    ) -> None:
        self.events.append((name, data))


@pytest.fixture(scope="module")
def relevance(proxy: Proxy) -> Compressor:
    return Compressor(CompressorConfig(scorer="relevance", model="gpt-4o-mini"), proxy=proxy)


def make_sieve(tmp_path: Path, compressor: Any) -> Sieve:
    gate = GateConfig(monitor_rate=0.0, seed=0)
    cfg = SieveConfig(scoring_budget_ms=120_000.0, guard=False, gate=gate)
    return Sieve(cfg, compressor=compressor, gate=Gate(SQLiteStore(tmp_path / "v.db"), gate))


@pytest.fixture
def sieve(tmp_path: Path, relevance: Compressor) -> Sieve:
    return make_sieve(tmp_path, relevance)


# -- the joint budget ----------------------------------------------------------------------------
def test_distractor_documents_go_whole_and_the_answer_document_stays(sieve: Sieve) -> None:
    docs = corpus()
    base = vector_retriever(docs)
    retrieved = base.invoke(QUESTION)
    assert len(retrieved) == 5
    compressor = SieveDocumentCompressor(sieve=sieve, verify=False, ratio=0.33, model=MODEL)
    handler = Events()
    got = CompressingRetriever(base=base, compressor=compressor).invoke(
        QUESTION, {"callbacks": [handler]}
    )

    ids = [d.id for d in got]
    assert ANSWER_ID in ids
    assert 1 <= len(got) <= 3  # at least two distractor documents dropped whole
    order = [d.id for d in retrieved]
    assert ids == [i for i in order if i in ids]  # retrieval order kept
    by_id = {d.id: d for d in docs}
    answer = next(d for d in got if d.id == ANSWER_ID)
    assert ANSWER_SENTENCE in answer.page_content
    for d in got:
        orig = by_id[d.id]
        assert d.metadata["source"] == orig.metadata["source"]
        assert d.metadata["n"] == orig.metadata["n"]
        assert d.page_content.strip() and is_subsequence(d.page_content, orig.page_content)
        if d.page_content != orig.page_content:
            meta = d.metadata["promptsieve"]
            assert meta["tokens_before"] == count(orig.page_content)
            assert meta["tokens_after"] == count(d.page_content) < meta["tokens_before"]
    before = sum(count(d.page_content) for d in docs)
    after = sum(count(d.page_content) for d in got)
    assert after <= 0.4 * before  # one budget over all documents: 0.33 of them kept

    assert [name for name, _ in handler.events] == [EVENT]
    data = handler.events[0][1]
    assert data["documents"] == 5 and data["documents_kept"] == len(got)
    assert data["documents_dropped"] == 5 - len(got) >= 2
    assert data["tokens_before"] == before and data["tokens_after"] == after
    assert data["compressed"] and data["action"] == "apply"
    text_words = {w for d in docs for w in d.page_content.split() if len(w) > 5}
    for value in data.values():
        assert not (isinstance(value, str) and set(value.split()) & text_words)

    agot = asyncio.run(CompressingRetriever(base=base, compressor=compressor).ainvoke(QUESTION))
    assert [(d.id, d.page_content) for d in agot] == [(d.id, d.page_content) for d in got]
    assert sieve.stats.compressed == 2  # one request per call, not one per document


def test_compressed_text_is_the_joint_compression_with_the_query_as_question(
    sieve: Sieve, relevance: Compressor
) -> None:
    docs = corpus()
    got = SieveDocumentCompressor(sieve=sieve, verify=False, ratio=0.5).compress_documents(
        docs, QUESTION
    )
    twin_cfg = dataclasses.replace(relevance.config, coarse_to_fine=True, part_passages=True)
    twin = Compressor(twin_cfg, proxy=relevance.proxy, scorer=relevance.scorer)
    messages = [Message("user", (TextPart(d.page_content),)) for d in docs]
    messages.append(Message("user", (TextPart(QUESTION, protected=True),)))
    direct = twin.compress(messages, ratio=0.5, question=QUESTION)
    assert isinstance(direct.prompt, tuple)
    expected = [
        (d.id, m.content) for d, m in zip(docs, direct.prompt, strict=False) if m.content.strip()
    ]
    assert [(d.id, d.page_content) for d in got] == expected
    assert direct.decisions.get("passage", 0) > 0
    unchanged = [d for d in got if d.page_content == docs[int(d.id or 0)].page_content]
    assert all(d is docs[int(d.id or 0)] for d in unchanged)  # the very same objects


def test_a_document_is_one_passage_blank_lines_or_not(proxy: Proxy) -> None:
    seg = segment(DISTRACTORS[1], SegmentConfig(protect_question=False))
    scorer = Compressor(CompressorConfig(scorer="relevance"), proxy=proxy).scorer
    blocks, _ = score_part(seg, scorer, QUESTION, "en")
    whole, _ = score_part(seg, scorer, QUESTION, "en", whole=True)
    assert len(blocks.struct.passages) == 2
    assert len(whole.struct.passages) == 1 and len(whole.passage_scores) == 1
    assert whole.passage_scores[0] == pytest.approx(blocks.passage_scores.max())
    assert whole.struct.sentences == blocks.struct.sentences


def test_reorder_puts_the_most_relevant_document_first(sieve: Sieve) -> None:
    docs = corpus()
    kept_order = SieveDocumentCompressor(sieve=sieve, verify=False, ratio=0.6)
    plain = kept_order.compress_documents(docs, QUESTION)
    assert [d.id for d in plain] == sorted((d.id or "" for d in plain), key=int)
    reordered = SieveDocumentCompressor(
        sieve=sieve, verify=False, ratio=0.6, reorder=True
    ).compress_documents(docs, QUESTION)
    assert reordered[0].id == ANSWER_ID
    assert sorted(d.id or "" for d in reordered) == sorted(d.id or "" for d in plain)
    assert len(plain) >= 2  # something to reorder


def test_follows_the_verdict(sieve: Sieve, relevance: Compressor) -> None:
    import time

    from promptsieve.fidelity import VerdictKey
    from promptsieve.fidelity.store import Verdict, VerdictState

    docs = corpus()
    compressor = SieveDocumentCompressor(sieve=sieve, task="rag", model="gpt-4o-mini")
    out = compressor.compress_documents(docs, QUESTION)
    assert all(a is b for a, b in zip(out, docs, strict=True))  # unscreened: untouched
    assert sieve.stats.compressed == 0

    key = VerdictKey("rag", "gpt-4o-mini", relevance.fingerprint, sieve.config.settings_key())
    now = time.time()
    verdict = Verdict(
        state=VerdictState.PASSED,
        ratio=0.33,
        testing=0.33,
        created_at=now,
        updated_at=now,
        expires_at=now + 3600,
        generation=1,
    )
    gate = sieve.gate
    assert isinstance(gate, Gate)
    old = gate.store.get(key)
    assert gate.store.put(key, verdict, expected_version=None if old is None else old.version)
    out = asyncio.run(compressor.acompress_documents(docs, QUESTION))
    assert ANSWER_ID in [d.id for d in out] and len(out) < len(docs)
    assert sieve.stats.compressed == 1


# -- bad input and faults ------------------------------------------------------------------------
def test_empty_one_and_empty_content(sieve: Sieve) -> None:
    compressor = SieveDocumentCompressor(sieve=sieve, verify=False, ratio=0.33, model=MODEL)
    assert compressor.compress_documents([], QUESTION) == []
    assert asyncio.run(compressor.acompress_documents([], QUESTION)) == []

    (one,) = compressor.compress_documents([corpus()[2]], QUESTION)  # never dropped whole
    assert one.id == ANSWER_ID and "1889" in one.page_content
    assert is_subsequence(one.page_content, ANSWER)
    assert (
        one.metadata["promptsieve"]["tokens_after"] < one.metadata["promptsieve"]["tokens_before"]
    )

    empty = [Document(page_content="", metadata={"k": i}) for i in range(2)]
    out = compressor.compress_documents(empty, QUESTION)
    assert all(a is b for a, b in zip(out, empty, strict=True))
    blank = Document(page_content="  \n\n ", metadata={"k": "blank"})
    mixed = [empty[0], *corpus(), blank]
    out = compressor.compress_documents(mixed, QUESTION)
    assert out[0] is empty[0] and out[-1] is blank  # nothing to compress: kept as they are
    assert ANSWER_ID in [d.id for d in out] and len(out) < len(mixed)

    # No query: query-free importance, still one budget over the documents.
    free = compressor.compress_documents(corpus(), "")
    assert 1 <= len(free) <= 5
    assert sum(count(d.page_content) for d in free) < sum(count(d.page_content) for d in corpus())


def test_internal_faults_return_the_documents_unchanged(
    sieve: Sieve,
    relevance: Compressor,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    docs = corpus()
    compressor = SieveDocumentCompressor(sieve=sieve, verify=False, ratio=0.33)

    # The scorer fails inside the real compressor: the sieve sends the original.
    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("scorer down")

    with monkeypatch.context() as m:
        m.setattr(relevance.scorer, "score", broken)
        out = compressor.compress_documents(docs, QUESTION)
        assert all(a is b for a, b in zip(out, docs, strict=True))
        aout = asyncio.run(compressor.acompress_documents(docs, QUESTION))
        assert all(a is b for a, b in zip(aout, docs, strict=True))
    assert sieve.stats.errors == 2 and sieve.stats.compressed == 0

    # A compressor whose output does not have the request's shape: reverted.
    class Shapeless:
        fingerprint = "shapeless"

        def compress(self, prompt: Any, *, ratio: float | None = None) -> Any:
            return relevance.compress(prompt[:-2], ratio=ratio)  # a document went missing

        def similarity(self, a: str, b: str) -> float:
            return 1.0

    (tmp_path / "other").mkdir()
    other = make_sieve(tmp_path / "other", Shapeless())
    out = SieveDocumentCompressor(sieve=other, verify=False, ratio=0.33).compress_documents(
        docs, QUESTION
    )
    assert all(a is b for a, b in zip(out, docs, strict=True))
    assert other.stats.errors == 1 and other.stats.compressed == 0

    # A fault in the adapter's own code after the sieve: the documents as they came.
    def no_joint(*a: object, **k: object) -> None:
        raise UnsupportedRequest("broken")

    monkeypatch.setattr("promptsieve_langchain._documents._Joint.result", no_joint)
    with caplog.at_level(logging.DEBUG, logger="promptsieve_langchain"):
        out = compressor.compress_documents(docs, QUESTION)
    assert all(a is b for a, b in zip(out, docs, strict=True))
    assert "UnsupportedRequest" in caplog.text  # logged by type, never with document text
    assert not {w for d in docs for w in d.page_content.split() if len(w) > 5} & set(
        caplog.text.split()
    )
    aout = asyncio.run(compressor.acompress_documents(docs, QUESTION))
    assert all(a is b for a, b in zip(aout, docs, strict=True))
