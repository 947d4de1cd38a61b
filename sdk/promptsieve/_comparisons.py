"""The sieve's background comparisons: slots, back-pressure, settling, recording, waiting.

A plan that owes a comparison (shadow or monitor) becomes a :class:`~promptsieve._lifecycle.Job`
once a slot is free: at most ``SieveConfig.max_pending`` are queued or running. When all are
taken, the back-pressure policy decides (``SieveConfig.backpressure``):

* ``"wait"`` (default): the live call waits up to ``backpressure_wait_ms`` for a slot. While a
  task is screening and traffic outruns the comparisons (each costs one compression and one
  target call), the caller is paced to what screening can absorb, so the test gets its
  comparisons and the verdict comes within a small multiple of the test's minimum number of
  comparisons. It costs latency only while screening, only under load, and never more than
  the wait.
* ``"skip"``: the comparison is dropped at once (no added latency; screening may fall far
  behind a fast stream of requests).

Either way a comparison that does not start is counted in ``SieveStats.comparisons_skipped``,
logged (a warning the first time, then every 100th at INFO), and its shadow slot in the gate
is handed back. Every job settles exactly once: recorded, target failed, nothing to compare,
or abandoned (close, exit, cancellation: ``SieveStats.comparisons_abandoned``).

In agreement mode each recorded comparison's original answer is also grouped per task
(:class:`~promptsieve.fidelity._modal.ModalAnswers` on a digest of its normalised text, in
memory only; the 4,096 most recently compared tasks): once a task has passed and at least 95 %
of at least 10 original answers are the same text, a warning is logged once, because agreement
was then high for free. ``ScreenResult.modal_share`` measures the same offline, under the
task's metric; the live measure never calls the metric (a judge would cost target calls).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import logging
import operator
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Literal

from promptsieve._events import comparison_event, notify
from promptsieve._lifecycle import Job
from promptsieve._plan import Plan
from promptsieve.fidelity import TargetOutput, VerdictKey
from promptsieve.fidelity._modal import ModalAnswers, answer_digest, modal_warning

if TYPE_CHECKING:
    from promptsieve.sieve import Sieve

__all__ = ["Comparisons", "Outcome"]

log = logging.getLogger(__name__)

#: How a comparison that records nothing ended.
Outcome = Literal["dropped", "target_failed", "abandoned"]
Runner = cf.Future[None] | asyncio.Task[None]
#: Tasks whose original answers are grouped at once (least recently compared dropped first;
#: each holds three digests and four counts).
_MODAL_TASKS = 4096
#: Once the answers are alike enough, the verdict is read on every this many answers.
_MODAL_CHECK_EVERY = 5
_SAME_TEXT = "the same text, whitespace and case aside"
_LABELLED_FIX = (
    "screen it in labelled mode (GateConfig(mode='labelled') with SieveConfig(judge=...)) "
    "against correct answers"
)


class Comparisons:
    """One sieve's jobs. Thread-safe; re-created in a forked child."""

    def __init__(self, sieve: Sieve) -> None:
        self._sieve = sieve
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._jobs: set[Job] = set()
        #: Event-loop callers waiting for a slot (awaited on their loop, no thread held).
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._modal_lock = threading.Lock()
        self._modal: OrderedDict[VerdictKey, ModalAnswers] = OrderedDict()

    # -- starting -------------------------------------------------------------------------
    def must_wait(self, plan: Plan, send: object) -> bool:
        """Whether the live call should wait for a slot (back-pressure "wait", all taken)."""
        cfg = self._sieve.config
        if plan.comparison is None or send is None or cfg.backpressure != "wait":
            return False
        with self._lock:
            return len(self._jobs) >= cfg.max_pending

    def wait_for_slot(self) -> None:
        """Block up to ``backpressure_wait_ms`` until fewer than ``max_pending`` run."""
        cfg = self._sieve.config
        with self._freed:
            self._freed.wait_for(
                lambda: len(self._jobs) < cfg.max_pending, cfg.backpressure_wait_ms / 1000.0
            )

    async def await_slot(self) -> None:
        """:meth:`wait_for_slot` on an event loop: awaits a freed slot on the loop itself,
        holding no executor thread (64 waiting callers would otherwise fill the loop's
        default executor and queue the gate's store reads behind them)."""
        cfg = self._sieve.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.backpressure_wait_ms / 1000.0
        while True:
            left = deadline - loop.time()
            with self._lock:
                if len(self._jobs) < cfg.max_pending or left <= 0:
                    return
                waiter = (loop, loop.create_future())
                self._waiters.append(waiter)
            try:
                await asyncio.wait_for(asyncio.shield(waiter[1]), left)
            except asyncio.TimeoutError:  # an alias of TimeoutError from 3.11
                return
            finally:
                with self._lock:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def reserve(self, plan: Plan, send: object) -> Job | None:
        """A job for the plan's comparison, or None when none will run (its slot freed)."""
        sieve = self._sieve
        if plan.comparison is None or plan.key is None:
            return None
        job = Job(plan)
        if sieve.closed:
            self.settle(job, "abandoned")
            return None
        if send is None:
            sieve.abandon(plan)
            return None
        with self._lock:
            full = len(self._jobs) >= sieve.config.max_pending
            if not full:
                self._jobs.add(job)
        if full:
            self._skipped(plan)
            return None
        return job

    def _skipped(self, plan: Plan) -> None:
        sieve = self._sieve
        sieve.stats.add(comparisons_skipped=1)
        n = sieve.stats.comparisons_skipped
        cfg = sieve.config
        if n == 1 or n % 100 == 0:
            log.log(
                logging.WARNING if n == 1 else logging.INFO,
                "promptsieve: %d comparison(s) skipped: %d already queued (max_pending) and "
                "backpressure=%r; screening needs them to reach a verdict",
                n,
                cfg.max_pending,
                cfg.backpressure,
            )
        sieve.abandon(plan)

    def still_under_test(self, plan: Plan) -> bool:
        """Whether the shadow plan's ratio is still the one under test (a queued comparison
        whose verdict has moved on would spend a compression and a target call for nothing).
        True when the gate cannot tell (a GateLike without ``verdict``, a store outage)."""
        read = getattr(self._sieve.gate, "verdict", None)
        if read is None or plan.key is None or plan.ratio is None:
            return True
        try:
            verdict = read(plan.key)
        except Exception:
            return True
        if verdict is None:
            return True
        testing = getattr(verdict, "testing", None)
        state = getattr(getattr(verdict, "state", None), "value", None)
        return state == "screening" and testing is not None and abs(testing - plan.ratio) < 1e-9

    def not_started(self, job: Job) -> None:
        """A reserved job whose comparison could not start: free its slot, settle it."""
        self._finished(job)

    def started(self, job: Job, runner: Runner) -> None:
        job.runner = runner
        runner.add_done_callback(lambda _r: self._finished(job))

    def _finished(self, job: Job) -> None:
        with self._freed:
            self._jobs.discard(job)
            self._freed.notify_all()
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:  # wake the event-loop waiters on their own loops
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(_wake, fut)
        if not job.settled:  # cancelled (a loop closed under it) or died: counted once
            self.settle(job, "abandoned")

    # -- settling -------------------------------------------------------------------------
    def settle(self, job: Job, outcome: Outcome, *, error: BaseException | None = None) -> None:
        """Settle a comparison that records nothing: free its shadow slot, count it."""
        if not job.settle():
            return
        sieve = self._sieve
        if outcome == "abandoned":
            sieve.stats.add(comparisons_abandoned=1)
        elif outcome == "target_failed":
            sieve.stats.add(comparison_errors=1)
            sieve._warn_once(
                f"target:{type(error).__name__}",
                "promptsieve: the target failed a background comparison (%s); not counted",
                type(error).__name__,
            )
        sieve.abandon(job.plan)
        if outcome == "target_failed":
            self._notify(job, None)

    def record(self, job: Job, original: TargetOutput, compressed: TargetOutput) -> None:
        """Compare the two outputs under the metric and record the result with the gate."""
        sieve = self._sieve
        plan = job.plan
        agreed = sieve._agree(original, compressed)
        if not job.settle():
            return
        sieve.stats.add(comparisons=1, agreements=int(agreed), disagreements=int(not agreed))
        assert plan.key is not None and plan.ratio is not None
        record_pair = getattr(sieve.gate, "record_pair", None)
        if sieve.config.judge is not None and record_pair is not None:
            # labelled mode: the judge labels both answers; the gate tests non-inferiority
            record_pair(
                plan.key,
                plan.ratio,
                self._label(plan, original),
                self._label(plan, compressed),
            )
        else:
            sieve.gate.record(plan.key, plan.ratio, agreed)
            self._track_modal(plan.key, original)
        self._notify(job, agreed)

    def _track_modal(self, key: VerdictKey, original: TargetOutput) -> None:
        """Group the original answer by its normalised text (a digest; no metric call, so no
        judge call, and no answer text held); warn once when the task passed on answers that
        are nearly all alike. Never raises (a fault here costs the warning, nothing else)."""
        sieve = self._sieve
        read = getattr(sieve.gate, "verdict", None)
        if read is None or sieve.config.judge is not None:  # no verdict to see, or labelled
            return
        try:
            with self._modal_lock:
                answers = self._modal.pop(key, None) or ModalAnswers()
                self._modal[key] = answers  # most recent last
                while len(self._modal) > _MODAL_TASKS:
                    self._modal.popitem(last=False)
                if answers.warned:
                    return
                answers.add(answer_digest(original), operator.eq)
                warning = modal_warning(answers.share, answers.n, _LABELLED_FIX, alike=_SAME_TEXT)
                if warning is None or answers.n % _MODAL_CHECK_EVERY:
                    return  # the verdict is read on every 5th answer only (a store read)
            verdict = read(key)  # outside the lock
            if getattr(getattr(verdict, "state", None), "value", None) != "passed":
                return
            with self._modal_lock:
                if answers.warned:
                    return
                answers.warned = True
            log.warning("promptsieve: task %r passed screening, but %s", key.task, warning)
        except Exception as exc:  # a store outage while reading the verdict, say
            log.debug("promptsieve: modal answer tracking failed (%s)", type(exc).__name__)

    def _label(self, plan: Plan, output: TargetOutput) -> bool | None:
        """The user's judge on one answer; None (not counted) when it raises."""
        judge = self._sieve.config.judge
        assert judge is not None
        try:
            return bool(judge(plan.request, output))
        except Exception as exc:
            self._sieve.stats.add(judge_errors=1)
            self._sieve._warn_once(
                f"judge:{type(exc).__name__}",
                "promptsieve: the judge raised %s; that comparison is not counted",
                type(exc).__name__,
            )
            return None

    def record_noise(self, job: Job, original: TargetOutput, rewritten: TargetOutput) -> None:
        """Record a noise-floor comparison (the original vs a meaning-preserving rewrite of it,
        :func:`promptsieve.fidelity.noise.variant`) with ``Gate.record_noise``; it never counts
        toward the verdict's test. A gate without ``record_noise`` only gets its slot freed."""
        sieve = self._sieve
        plan = job.plan
        agreed = sieve._agree(original, rewritten)
        if not job.settle():
            return
        sieve.stats.add(noise_comparisons=1, noise_agreements=int(agreed))
        assert plan.key is not None and plan.ratio is not None
        record = getattr(sieve.gate, "record_noise", None)
        if record is not None:
            record(plan.key, agreed)
        else:
            sieve.gate.record(plan.key, plan.ratio, None)

    def _notify(self, job: Job, agreed: bool | None) -> None:
        sieve = self._sieve
        if not sieve.observers:
            return
        state = None
        read = getattr(sieve.gate, "verdict", None)  # Gate has it; a GateLike may not
        try:
            verdict = read(job.plan.key) if read is not None and job.plan.key else None
            state = str(verdict.state.value) if verdict is not None else None
        except Exception:  # a store outage: the state stays unknown
            state = None
        notify(sieve.observers, comparison_event(job.plan, agreed, calls=job.calls,
                                                 verdict_state=state))  # fmt: skip

    # -- waiting and closing --------------------------------------------------------------
    def runners(self) -> list[Runner]:
        with self._lock:
            return [j.runner for j in self._jobs if j.runner is not None]

    def left(self) -> list[Job]:
        with self._lock:
            return list(self._jobs)

    def flush(self, timeout: float | None) -> bool:
        """Wait for the thread-run comparisons; True if none is left."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pending = [r for r in self.runners() if isinstance(r, cf.Future)]
            if not pending:
                return True
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            _, not_done = cf.wait(pending, timeout=left)
            if not_done and deadline is not None and time.monotonic() >= deadline:
                return False

    async def aflush(self, timeout: float | None) -> bool:
        """Wait for this loop's comparison tasks, then the threads'; True if all done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            tasks = [r for r in self.runners() if isinstance(r, asyncio.Task)]
            if not tasks:
                break
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            _, not_done = await asyncio.wait(tasks, timeout=left)
            if not_done and deadline is not None and time.monotonic() >= deadline:
                return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, left)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
