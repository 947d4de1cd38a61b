"""A retriever document compressor: each document is pruned against the query.

The retriever's query becomes the compressor's question, so what stays in a document is
what the proxy finds relevant to that query. Each returned document is the caller's
document with a new ``page_content`` and its own metadata (plus ``metadata["promptsieve"]``
token counts when it was compressed); documents that were not compressed come back as
the very same objects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, PrivateAttr

from promptsieve.sieve import Plan, Request, Sieve
from promptsieve_langchain._convert import model_name
from promptsieve_langchain._sieves import EVENT, release, resolve, with_question
from promptsieve_langchain._sieves import check_settings as _check

__all__ = ["SieveDocumentCompressor"]

log = logging.getLogger(__name__)

_ENDPOINT = "documents"


class SieveDocumentCompressor(BaseDocumentCompressor):
    """Query-aware compression of retrieved documents, under the sieve's verdict.

    ``task`` names the verdict (a passed verdict applies its ratio); ``verify=False`` with
    ``ratio`` compresses at that ratio without one. ``model`` is the target model's name
    (or the model), which keys the verdict; the compressor never calls it.
    """

    sieve: Any = None
    task: str | None = None
    verify: bool | None = None
    ratio: float | None = None
    model: Any = "unknown"

    model_config = ConfigDict(arbitrary_types_allowed=True)

    _resolve: resolve = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        # Checked before pydantic runs, so that a bad setting raises ConfigError itself.
        _check(data)
        super().__init__(**data)

    def model_post_init(self, context: Any, /) -> None:
        self._resolve = resolve(self.sieve, verify=self.verify, ratio=self.ratio, query_aware=True)

    @property
    def target_model(self) -> str:
        return self.model if isinstance(self.model, str) else model_name(self.model)

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        sieve = self._resolve()
        self._resolve.warm()
        plans: list[Plan] = []
        out: list[Document] = []
        with with_question(query or None):
            for doc in documents:
                plan, sent = sieve.prepare(self._request(doc), self.task)
                release(sieve, plan)
                plans.append(plan)
                out.append(_document(doc, plan, sent.prompt))
        try:
            dispatch_custom_event(EVENT, _event(plans, self.task), config={"callbacks": callbacks})
        except Exception as exc:
            log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)
        return out

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        sieve = self._resolve()
        await asyncio.to_thread(self._resolve.warm)
        with with_question(query or None):
            # gather() copies the context into each task, the question with it.
            results = await asyncio.gather(
                *(sieve.aprepare(self._request(doc), self.task) for doc in documents)
            )
        plans = [plan for plan, _ in results]
        if any(p.comparison == "shadow" for p in plans):
            await asyncio.to_thread(_release_all, sieve, plans)
        out = [_document(d, p, s.prompt) for d, (p, s) in zip(documents, results, strict=True)]
        try:
            await adispatch_custom_event(
                EVENT, _event(plans, self.task), config={"callbacks": callbacks}
            )
        except Exception as exc:
            log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)
        return out

    def _request(self, doc: Document) -> Request:
        return Request(doc.page_content, self.target_model, _ENDPOINT)


def _release_all(sieve: Sieve, plans: Sequence[Plan]) -> None:
    for plan in plans:
        release(sieve, plan)


def _document(doc: Document, plan: Plan, prompt: Any) -> Document:
    if plan.sent is plan.request or not isinstance(prompt, str):
        return doc
    meta = {
        **doc.metadata,
        "promptsieve": {
            "tokens_before": plan.tokens_before,
            "tokens_after": plan.tokens_after,
            "ratio": plan.ratio,
        },
    }
    return doc.model_copy(update={"page_content": prompt, "metadata": meta})


def _event(plans: Sequence[Plan], task: str | None) -> dict[str, Any]:
    before = sum(p.tokens_before for p in plans)
    after = sum(p.tokens_after for p in plans)
    first = next((p for p in plans if p.decision is not None), plans[0])
    return {
        "component": "documents",
        "task": first.task or task,
        "action": first.decision.action.value if first.decision is not None else None,
        "reason": first.reason,
        "documents": len(plans),
        "compressed": any(p.is_compressed for p in plans),
        "documents_compressed": sum(p.is_compressed for p in plans),
        "tokens_before": before,
        "tokens_after": after,
        "tokens_saved": before - after,
    }
