"""The adapter-facing call: one request's lifecycle, so that no adapter can get it wrong.

::

    with sieve.call(request, task, original=kwargs, rebuild=conv.rebuild,
                    send_variant=send) as call:
        result = client_method(**call.payload)       # the target's errors reach the caller
        call.read(read_response, result)             # or call.observe(output, usage)
    # leaving: comparison started (shadow/monitor), or the shadow slot freed on failure

Entering prepares the request (the gate's decision, compression within the budget) and
rebuilds the adapter's request from the compressed prompt; when the rebuild fails the
plan is reverted (counted, the original goes out, no monitor comparison compares the
original with itself). Leaving normally, or by ``GeneratorExit`` (a stream closed early),
starts the comparison the plan owes; leaving by any other exception frees the shadow slot.
Nothing here raises: bookkeeping faults are counted and logged by type.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from promptsieve._plan import Plan
from promptsieve.fidelity import TargetOutput
from promptsieve.prompt import Prompt, Request

if TYPE_CHECKING:
    from promptsieve.sieve import Sieve

__all__ = ["Call"]

_P = TypeVar("_P")


class Call(Generic[_P]):
    """One request through the sieve; build it with :meth:`Sieve.call`.

    ``plan`` (after entering): the decision. ``payload``: what the adapter sends — its
    ``original`` request, or ``rebuild(compressed prompt)``.
    """

    def __init__(
        self,
        sieve: Sieve,
        request: Request,
        task: str | None,
        original: _P,
        rebuild: Callable[[Prompt], _P],
        send_variant: Any,
    ) -> None:
        self.sieve = sieve
        self.request = request
        self.task = task
        self.payload: _P = original
        self.plan: Plan = Plan.unchanged(request, "error")
        self._rebuild = rebuild
        self._send = send_variant
        self._output: TargetOutput | None = None
        self._usage: int | None = None
        self._deferred = False
        self._lock = threading.Lock()
        self._finished = False

    # -- entering -------------------------------------------------------------------------
    def __enter__(self) -> Call[_P]:
        self._apply(self.sieve.prepare(self.request, self.task))
        return self

    async def __aenter__(self) -> Call[_P]:
        self._apply(await self.sieve.aprepare(self.request, self.task))
        return self

    def _apply(self, plan: Plan) -> None:
        if plan.is_compressed:
            try:
                self.payload = self._rebuild(plan.sent.prompt)
            except Exception as exc:  # UnsupportedRequest or a bug: the original goes out
                self.sieve.report_error(exc, "rebuilding the request")
                plan = self.sieve.revert(plan)
        self.plan = plan

    # -- the live result ------------------------------------------------------------------
    def observe(self, output: TargetOutput | None, usage_prompt_tokens: int | None = None) -> None:
        """The live call's output (None: unreadable, e.g. a stream) and the server's
        prompt-token count, if it reported one."""
        self._output = output
        self._usage = usage_prompt_tokens

    def read(
        self, reader: Callable[[Any], tuple[TargetOutput | None, int | None]], result: Any
    ) -> None:
        """:meth:`observe` with ``reader(result) -> (output, usage)``; a reader fault is
        counted and the output taken as unreadable."""
        try:
            output, usage = reader(result)
        except Exception as exc:
            self.sieve.report_error(exc, "reading the response")
            output, usage = None, None
        self.observe(output, usage)

    # -- a live output that arrives later (a stream) ---------------------------------------
    def defer(self) -> None:
        """The live output arrives after the block (a stream the caller reads later):
        leaving the block normally does not finish the call; :meth:`finish` /
        :meth:`afinish` does, or :meth:`drop` when it will never come. Each happens once."""
        self._deferred = True

    def finish(self, output: TargetOutput | None, usage_prompt_tokens: int | None = None) -> None:
        """The deferred live output has arrived: start the comparison (on a thread)."""
        if self._take():
            self.sieve.observe(self.plan, output, usage_prompt_tokens=usage_prompt_tokens,
                               send_variant=self._send)  # fmt: skip

    async def afinish(
        self, output: TargetOutput | None, usage_prompt_tokens: int | None = None
    ) -> None:
        """:meth:`finish` for ``async with`` (the comparison runs as an asyncio task)."""
        if self._take():
            await self.sieve.aobserve(self.plan, output, usage_prompt_tokens=usage_prompt_tokens,
                                      send_variant=self._send)  # fmt: skip

    def drop(self) -> None:
        """The deferred output will never come (a stream dropped unread): free the slot."""
        if self._take():
            self.sieve.abandon(self.plan)

    def _take(self) -> bool:
        with self._lock:
            first = not self._finished
            self._finished = True
            return first

    # -- leaving --------------------------------------------------------------------------
    # Leaving normally, or by GeneratorExit (a stream closed early), starts the comparison;
    # any other exception means the live call failed: its shadow slot is freed.
    def _compare(self, exc_type: type[BaseException] | None) -> bool:
        if self._deferred and exc_type is None:
            return False  # finish()/afinish()/drop() will
        if not self._take():
            return False
        if exc_type is None or issubclass(exc_type, GeneratorExit):
            return True
        self.sieve.abandon(self.plan)
        return False

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._compare(exc_type):
            self.sieve.observe(self.plan, self._output, usage_prompt_tokens=self._usage,
                               send_variant=self._send)  # fmt: skip

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._compare(exc_type):
            await self.sieve.aobserve(self.plan, self._output, usage_prompt_tokens=self._usage,
                                      send_variant=self._send)  # fmt: skip
