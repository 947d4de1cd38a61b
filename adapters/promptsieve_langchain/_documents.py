"""A retriever document compressor: the retrieved documents compressed together, against the
query.

All documents of one call go to the sieve as **one** request, under one budget, with the
retriever's query as the compressor's question (coarse-to-fine, in the spirit of
LongLLMLingua's document-level stage: Jiang et al., ACL 2024, arXiv 2310.06839):

1. whole documents, least relevant to the query first (the most relevant one never);
2. then sentences of the documents kept;
3. then words inside the least relevant kept sentence, to meet the budget.

The request is one user message per document and then the query as a protected message;
the compressor is the sieve's, with ``CompressorConfig(coarse_to_fine=True,
part_passages=True)`` (each document one passage, blank lines or not), sharing its proxy.
The gate decides as for any request of the task (one decision per call); a passed verdict
(or ``verify=False`` with ``ratio``) compresses, anything else returns the documents as
they came. The request path fails open: on any internal fault the documents come back
unchanged, the very same objects.

What comes back: the kept documents, in their order (``reorder=True``: most relevant
first), each the caller's document with a new ``page_content`` and its own metadata plus
``metadata["promptsieve"]`` (its ``tokens_before`` / ``tokens_after`` / ``ratio``); a
document nothing was dropped from comes back as the very same object, a dropped one not
at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, PrivateAttr

from promptsieve import (
    Call,
    Message,
    Plan,
    Prompt,
    Request,
    Sieve,
    TextPart,
    TokenCounter,
    UnsupportedRequest,
)
from promptsieve_langchain._convert import model_name
from promptsieve_langchain._sieves import EVENT, keep_scores, resolve, with_question
from promptsieve_langchain._sieves import check_settings as _check

__all__ = ["SieveDocumentCompressor"]

log = logging.getLogger(__name__)

_ENDPOINT = "documents"


class SieveDocumentCompressor(BaseDocumentCompressor):
    """Query-aware compression of retrieved documents, together, under the sieve's verdict.

    ``task`` names the verdict (a passed verdict applies its ratio: the share of the
    documents' compressible tokens kept, all documents together); ``verify=False`` with
    ``ratio`` compresses at that ratio without one. ``model`` is the target model's name
    (or the model), which keys the verdict; the compressor never calls it. ``reorder``:
    return the kept documents most relevant first (by the best relevance score of their
    kept text) instead of in retrieval order.

    ``compress_documents(documents, query)`` returns a list that may be shorter than
    ``documents`` (whole documents dropped); see the module docstring. Raises
    ``promptsieve.ConfigError`` at construction for a bad sieve/verify/ratio combination.
    """

    sieve: Any = None
    task: str | None = None
    verify: bool | None = None
    ratio: float | None = None
    model: Any = "unknown"
    reorder: bool = False

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _resolve: resolve = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        # Checked before pydantic runs, so that a bad setting raises ConfigError itself.
        _check(data)
        super().__init__(**data)

    def model_post_init(self, context: Any, /) -> None:
        self._resolve = resolve(self.sieve, verify=self.verify, ratio=self.ratio, documents=True)

    @property
    def target_model(self) -> str:
        return self.model if isinstance(self.model, str) else model_name(self.model)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        docs = list(documents)
        if not docs:
            return []
        try:
            sieve = self._resolve()
            self._resolve.warm()
            joint = _Joint(docs, query, self.target_model, self.reorder)
            with with_question(query or None), keep_scores() as scores:
                joint.scores = scores
                with self._call(sieve, joint) as call:  # nothing to compare: no target here
                    pass
            out, data = joint.result(call, self.task)
        except Exception as exc:  # fail open: the documents as they came
            _fail_open(exc)
            return docs
        try:
            dispatch_custom_event(EVENT, data, config={"callbacks": callbacks})
        except Exception as exc:
            log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)
        return out

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        docs = list(documents)
        if not docs:
            return []
        try:
            sieve = self._resolve()
            await asyncio.to_thread(self._resolve.warm)
            joint = _Joint(docs, query, self.target_model, self.reorder)
            with with_question(query or None), keep_scores() as scores:
                joint.scores = scores
                async with self._call(sieve, joint) as call:
                    pass
            out, data = joint.result(call, self.task)
        except Exception as exc:  # fail open: the documents as they came
            _fail_open(exc)
            return docs
        try:
            await adispatch_custom_event(EVENT, data, config={"callbacks": callbacks})
        except Exception as exc:
            log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)
        return out

    def _call(self, sieve: Sieve, joint: _Joint) -> Call[list[Document]]:
        return sieve.call(joint.request, self.task, original=joint.docs, rebuild=joint.rebuild)


_WARNED: set[str] = set()


def _fail_open(exc: BaseException) -> None:
    """Log an adapter fault by type (never its message, which may quote a document): a
    warning the first time per type, then at debug level."""
    kind = type(exc).__name__
    level = logging.DEBUG if kind in _WARNED else logging.WARNING
    _WARNED.add(kind)
    log.log(level, "promptsieve: %s compressing documents; they go back unchanged", kind)
    log.debug("promptsieve: details", exc_info=exc)


class _Joint:
    """One call's documents as one request, and the way back from the compressed prompt.

    Message ``i`` holds document ``i``; the last message holds the query, protected (it is
    never compressed, and no document is the final user turn whose question would be
    protected).
    """

    def __init__(self, docs: list[Document], query: str, model: str, reorder: bool) -> None:
        self.docs = docs
        self.reorder = reorder
        self.scores: Mapping[int, float] = {}
        messages = [Message("user", (TextPart(d.page_content),)) for d in docs]
        messages.append(Message("user", (TextPart(query or "", protected=True),)))
        self.request = Request(tuple(messages), model, _ENDPOINT)
        self._count: Callable[[str], int] = TokenCounter.for_model(model)
        self.kept: list[int] = list(range(len(docs)))

    def rebuild(self, prompt: Prompt) -> list[Document]:
        """The documents from the compressed prompt (raises UnsupportedRequest when the
        prompt does not have the request's shape: the sieve then reverts, fail open)."""
        n = len(self.docs)
        if isinstance(prompt, str) or len(prompt) != n + 1:
            raise UnsupportedRequest("the documents' prompt changed shape")
        out: list[tuple[int, Document]] = []
        for i, (doc, msg) in enumerate(zip(self.docs, prompt[:n], strict=True)):
            text = msg.content
            if text == doc.page_content:
                out.append((i, doc))
            elif text.strip():
                out.append((i, self._compressed(doc, text)))
        if not out:
            raise UnsupportedRequest("every document was dropped")
        if self.reorder:
            out.sort(key=lambda e: -self.scores.get(e[0], float("-inf")))  # stable on ties
        self.kept = [i for i, _ in out]
        return [d for _, d in out]

    def _compressed(self, doc: Document, text: str) -> Document:
        before, after = self._count(doc.page_content), self._count(text)
        counts = {
            "tokens_before": before,
            "tokens_after": after,
            "ratio": after / before if before else 1.0,
        }
        meta = {**doc.metadata, "promptsieve": counts}
        return doc.model_copy(update={"page_content": text, "metadata": meta})

    def result(
        self, call: Call[list[Document]], task: str | None
    ) -> tuple[list[Document], dict[str, Any]]:
        """What ``compress_documents`` returns, and the custom event's payload (counts and
        decisions, never text)."""
        plan: Plan = call.plan
        out = call.payload if plan.is_compressed else self.docs
        kept = set(self.kept) if plan.is_compressed else set(range(len(self.docs)))
        before = sum(self._count(d.page_content) for d in self.docs)
        after = sum(self._count(d.page_content) for d in out)
        originals = {id(d) for d in self.docs}
        decision = plan.decision
        data = {
            "component": "documents",
            "task": plan.task or task,
            "action": decision.action.value if decision is not None else None,
            "reason": plan.reason,
            "documents": len(self.docs),
            "compressed": plan.is_compressed,
            "ratio": plan.ratio if plan.is_compressed else None,
            "documents_kept": len(out),
            "documents_dropped": len(self.docs) - len(kept),
            "documents_compressed": sum(id(d) not in originals for d in out),
            "tokens_before": before,
            "tokens_after": after,
            "tokens_saved": before - after,
        }
        return list(out), data
