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

from promptsieve import Call, Plan, Prompt, Request, Sieve, UnsupportedRequest
from promptsieve_langchain._convert import model_name
from promptsieve_langchain._sieves import EVENT, resolve, with_question
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
        calls: list[Call[Document]] = []
        with with_question(query or None):
            for doc in documents:
                with self._call(sieve, doc) as call:  # nothing to compare: no target here
                    calls.append(call)
        self._dispatch([c.plan for c in calls], callbacks)
        return [_document(c) for c in calls]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        sieve = self._resolve()
        await asyncio.to_thread(self._resolve.warm)
        with with_question(query or None):
            # gather() copies the context into each task, the question with it.
            calls = await asyncio.gather(*(self._acompress(sieve, doc) for doc in documents))
        plans = [c.plan for c in calls]
        try:
            await adispatch_custom_event(
                EVENT, _event(plans, self.task), config={"callbacks": callbacks}
            )
        except Exception as exc:
            log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)
        return [_document(c) for c in calls]

    async def _acompress(self, sieve: Sieve, doc: Document) -> Call[Document]:
        async with self._call(sieve, doc) as call:
            return call

    def _call(self, sieve: Sieve, doc: Document) -> Call[Document]:
        def rebuild(prompt: Prompt) -> Document:
            if not isinstance(prompt, str):
                raise UnsupportedRequest("a document stays a string")
            return doc.model_copy(update={"page_content": prompt})

        request = Request(doc.page_content, self.target_model, _ENDPOINT)
        return sieve.call(request, self.task, original=doc, rebuild=rebuild)

    def _dispatch(self, plans: Sequence[Plan], callbacks: Callbacks | None) -> None:
        try:
            dispatch_custom_event(EVENT, _event(plans, self.task), config={"callbacks": callbacks})
        except Exception as exc:
            log.debug("promptsieve: could not dispatch the event: %s", type(exc).__name__)


def _document(call: Call[Document]) -> Document:
    """The compressed document, with token counts in ``metadata["promptsieve"]``."""
    doc, plan = call.payload, call.plan
    if not plan.is_compressed:
        return doc
    meta = {
        **doc.metadata,
        "promptsieve": {
            "tokens_before": plan.tokens_before,
            "tokens_after": plan.tokens_after,
            "ratio": plan.ratio,
        },
    }
    return doc.model_copy(update={"metadata": meta})


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
