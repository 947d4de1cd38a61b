"""Each request flow described once, as a generator, and run by a sync or an async driver.

This is the pattern of httpx's ``Auth.auth_flow``: a flow is a generator that *yields* the
effects it needs carried out and receives their results (or their exceptions, thrown in at
the ``yield``). It never blocks and never awaits, so the same flow serves a thread and an
event loop:

* :class:`Wait` — wait for a future of a sieve thread, at most ``timeout`` seconds
  (``TimeoutError`` is thrown in past it; the future is not cancelled);
* :class:`Compute` — run a CPU-bound function (compression): inline in the sync driver,
  on the sieve's scoring threads in the async one, so the loop stays free;
* :class:`Send` — one call to the target through the adapter's ``send_variant``;
* :class:`Blocking` — blocking work (the verdict store, a metric or judge): inline in the
  sync driver, on the sieve's daemon I/O threads in the async one (never the loop's
  default executor, which exit waits for without a bound).

:func:`drive` and :func:`adrive` are the only places where sync and async differ.

The flows:

* :func:`prepare_flow` — decide (gate), compress within the scoring budget, guard → a Plan;
* :func:`compare_flow` — the background shadow/monitor comparison of one plan → the gate.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import hashlib
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from promptsieve._context import current_task
from promptsieve._plan import Plan, Variant
from promptsieve._threads import DaemonPool, SieveClosed
from promptsieve.fidelity import Action, Decision, TargetOutput, VerdictKey
from promptsieve.fidelity.noise import variant as noise_variant
from promptsieve.prompt import COMPRESSIBLE_ROLES, Prompt, Request, TextPart
from promptsieve.tokens import TokenCounter

if TYPE_CHECKING:
    from promptsieve.sieve import Sieve

__all__ = [
    "Blocking",
    "Compute",
    "Flow",
    "Job",
    "Send",
    "Wait",
    "adrive",
    "compare_flow",
    "drive",
    "prepare_flow",
]

_T = TypeVar("_T")


@dataclass(frozen=True)
class Wait:
    future: cf.Future[Any]
    timeout: float | None  # seconds; None: until done


@dataclass(frozen=True)
class Compute:
    fn: Callable[[], Any]


@dataclass(frozen=True)
class Send:
    prompt: Prompt


@dataclass(frozen=True)
class Blocking:
    fn: Callable[[], Any]


Effect = Wait | Compute | Send | Blocking
Flow = Generator[Effect, Any, _T]
SyncSend = Callable[[Prompt], TargetOutput]
AsyncSend = Callable[[Prompt], Awaitable[TargetOutput]]


# -- drivers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Outcome:
    """What the last effect produced: a value, or the exception to throw into the flow."""

    value: Any = None
    error: BaseException | None = None


def _resume(flow: Flow[_T], last: _Outcome) -> Effect | _Done[_T]:
    try:
        return flow.throw(last.error) if last.error is not None else flow.send(last.value)
    except StopIteration as stop:
        return _Done(stop.value)


@dataclass(frozen=True)
class _Done(Generic[_T]):
    value: _T


def drive(flow: Flow[_T], send: SyncSend | None = None) -> _T:
    """Run ``flow`` on this thread: every effect is carried out here, blocking."""
    step = _resume(flow, _Outcome())
    while not isinstance(step, _Done):
        try:
            if isinstance(step, Wait):
                last = _Outcome(step.future.result(step.timeout))
            elif isinstance(step, Send):
                assert send is not None
                last = _Outcome(send(step.prompt))
            else:
                last = _Outcome(step.fn())
        except Exception as exc:
            last = _Outcome(error=_builtin_timeout(exc))
        step = _resume(flow, last)
    return step.value


#: The futures' and asyncio's timeouts where they are not the built-in (Python 3.10; from
#: 3.11 on both are aliases of ``TimeoutError`` and this is empty).
_OTHER_TIMEOUTS = tuple({cf.TimeoutError, asyncio.TimeoutError} - {TimeoutError})


def _builtin_timeout(exc: Exception) -> Exception:
    """``exc``, or a built-in ``TimeoutError`` for another timeout class: the flows catch
    the built-in one."""
    if _OTHER_TIMEOUTS and isinstance(exc, _OTHER_TIMEOUTS):
        return TimeoutError(*exc.args)
    return exc


async def adrive(
    flow: Flow[_T], pool: DaemonPool, blocking: DaemonPool, send: AsyncSend | None = None
) -> _T:
    """Run ``flow`` on the running loop: CPU work goes to ``pool``, blocking work (the verdict
    store, a user's metric or judge) to ``blocking``. Both are daemon threads, never the
    loop's default executor, which ``asyncio.run`` and the interpreter wait for at exit
    without a bound (a slow judge would hold the process past ``drain_timeout_s``)."""
    step = _resume(flow, _Outcome())
    while not isinstance(step, _Done):
        ctx = contextvars.copy_context()
        try:
            if isinstance(step, Wait):
                fut = asyncio.shield(asyncio.wrap_future(step.future))
                last = _Outcome(await asyncio.wait_for(fut, step.timeout))
            elif isinstance(step, Send):
                assert send is not None
                last = _Outcome(await send(step.prompt))
            elif isinstance(step, Compute):
                last = _Outcome(await asyncio.wrap_future(pool.submit(ctx.run, step.fn)))
            else:
                last = _Outcome(await asyncio.wrap_future(blocking.submit(ctx.run, step.fn)))
        except Exception as exc:
            last = _Outcome(error=_builtin_timeout(exc))
        step = _resume(flow, last)
    return step.value


# -- prepare ---------------------------------------------------------------------------------
def prepare_flow(sieve: Sieve, request: Request, task: str | None) -> Flow[Plan]:
    """Decide for one request within the scoring budget; never raises (fails open)."""
    deadline = time.perf_counter() + sieve.config.scoring_budget_ms / 1000.0
    stats = sieve.stats
    try:
        stats.add(requests=1)
        count = TokenCounter.for_model(request.model)
        before = count_prompt(request.prompt, count)
        name = current_task() or task or sieve.config.task
        if sieve.closed:
            stats.add(tokens_before=before, tokens_after=before)
            return Plan.unchanged(request, "closed", tokens=before, task=name)
        if not has_compressible_text(request.prompt):
            stats.add(tokens_before=before, tokens_after=before)
            return Plan.unchanged(request, "nothing", tokens=before, task=name)

        key: VerdictKey | None = None
        if sieve.config.verify:
            compressor = sieve._loaded_compressor
            if compressor is None:
                try:
                    compressor = yield Wait(sieve._load_compressor(), _left(deadline))
                except TimeoutError:
                    stats.add(warming=1, tokens_before=before, tokens_after=before)
                    sieve._warn_warming()
                    return Plan.unchanged(request, "warming", tokens=before)
            if name is None:
                name = derived_task(request, compressor.fingerprint)
            key = sieve.verdict_key(name, request.model)
            # building the default gate opens its store: off the loop too
            decision: Decision = yield Blocking(lambda: sieve.gate.decide(key))
        else:
            assert sieve.config.ratio is not None
            decision = Decision(Action.APPLY, ratio=sieve.config.ratio)
        stats.decided(decision.action)
        common: dict[str, Any] = {"task": name, "key": key, "decision": decision}
        if decision.action != Action.APPLY or decision.ratio is None:
            stats.add(tokens_before=before, tokens_after=before)
            if decision.action == Action.SHADOW and decision.ratio is not None:
                return Plan.unchanged(request, "shadow", tokens=before, comparison="shadow",
                                      ratio=decision.ratio, **common)  # fmt: skip
            return Plan.unchanged(request, "bypass", tokens=before, ratio=decision.ratio,
                                  **common)  # fmt: skip

        ratio = decision.ratio
        ctx = contextvars.copy_context()
        fut = sieve._scoring.submit(ctx.run, sieve._variant, request.prompt, ratio)
        try:
            variant: Variant = yield Wait(fut, _left(deadline))
        except TimeoutError:
            fut.cancel()
            stats.add(errors=1, timeouts=1, tokens_before=before, tokens_after=before)
            sieve._warn_timeout()
            return Plan.unchanged(request, "timeout", tokens=before, ratio=ratio, **common)
        if variant.prompt is None:
            stats.add(guard_skips=int(variant.reason == "guard"))
            stats.add(tokens_before=before, tokens_after=before)
            return Plan.unchanged(request, variant.reason, tokens=before, ratio=ratio,
                                  similarity=variant.similarity, **common)  # fmt: skip
        after = count_prompt(variant.prompt, count)
        stats.add(compressed=1, tokens_before=before, tokens_after=after)
        return Plan(
            request=request,
            sent=Request(variant.prompt, request.model, request.endpoint),
            reason="applied",
            comparison="monitor" if decision.monitor else None,
            ratio=ratio,
            tokens_before=before,
            tokens_after=after,
            similarity=variant.similarity,
            compressed=variant.prompt,
            **common,
        )
    except SieveClosed:  # closed while this request was being prepared
        return Plan.unchanged(request, "closed")
    except Exception as exc:
        sieve.report_error(exc, "prepare")
        return Plan.unchanged(request, "error")


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.perf_counter())


# -- compare ---------------------------------------------------------------------------------
class Job:
    """One background comparison. It settles exactly once: recorded, failed or abandoned."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        #: What runs it: a thread's future (sync) or an asyncio task.
        self.runner: cf.Future[None] | asyncio.Task[None] | None = None
        #: Target calls this comparison has spent (for the sieve's observers).
        self.calls = 0
        self._lock = threading.Lock()
        self._settled = False

    @property
    def settled(self) -> bool:
        return self._settled

    def settle(self) -> bool:
        """Mark settled; True for the first caller only."""
        with self._lock:
            first = not self._settled
            self._settled = True
            return first


class _Settled(Exception):
    """The job was settled elsewhere (close() abandoned it): stop spending target calls."""


def compare_flow(sieve: Sieve, job: Job, output: TargetOutput | None) -> Flow[None]:
    """Send the variant(s) the live call did not, compare, record; settles ``job`` once.

    ``output`` is the live call's output (None: unreadable, e.g. a stream, so both variants
    are sent). Never raises: every outcome settles the job (recorded, target error, nothing
    to compare, abandoned) and frees the gate's shadow slot when it does not record.
    """
    plan = job.plan
    # a shadow decision the gate sampled for the noise floor (GateConfig.noise_rate)
    noise = plan.comparison != "monitor" and plan.decision is not None and plan.decision.noise
    try:
        if plan.comparison == "monitor":
            assert plan.compressed is not None
            original, compressed, live_is_original = plan.request.prompt, plan.compressed, False
        else:
            assert plan.ratio is not None
            prompt, ratio = plan.request.prompt, plan.ratio
            variant: Variant
            if not (yield Blocking(lambda: sieve._comparisons.still_under_test(plan))):
                # queued while the verdict moved on (passed, failed): spend nothing on it
                yield Blocking(lambda: sieve._comparisons.settle(job, "dropped"))
                return
            if noise:  # the noise floor: a meaning-preserving rewrite, not a compression
                rewritten: Prompt = yield Compute(lambda: noise_variant(prompt))
                variant = Variant(None if rewritten == prompt else rewritten, "unchanged")
            else:
                variant = yield Compute(lambda: sieve._variant(prompt, ratio))
            if variant.prompt is None:  # apply would send the original too: nothing to test
                sieve.stats.add(guard_skips=int(variant.reason == "guard"))
                yield Blocking(lambda: sieve._comparisons.settle(job, "dropped"))
                return
            original, compressed, live_is_original = prompt, variant.prompt, True
        try:
            first, second = (original, compressed) if live_is_original else (compressed, original)
            live = output if output is not None else (yield from _send(sieve, job, first))
            other = yield from _send(sieve, job, second)
        except _Settled:
            return
        except Exception as exc:
            error = exc
            yield Blocking(lambda: sieve._comparisons.settle(job, "target_failed", error=error))
            return
        orig_out, comp_out = (live, other) if live_is_original else (other, live)
        record = sieve._comparisons.record_noise if noise else sieve._comparisons.record
        yield Blocking(lambda: record(job, orig_out, comp_out))
    except SieveClosed:
        yield Blocking(lambda: sieve._comparisons.settle(job, "abandoned"))
    except Exception as exc:
        sieve.report_error(exc, "a background comparison")
        yield Blocking(lambda: sieve._comparisons.settle(job, "dropped"))


def _send(sieve: Sieve, job: Job, prompt: Prompt) -> Flow[TargetOutput]:
    if job.settled:
        raise _Settled
    sieve.stats.add(screening_calls=1)
    job.calls += 1
    out: TargetOutput = yield Send(prompt)
    return out


# -- helpers ---------------------------------------------------------------------------------
def count_prompt(prompt: Prompt, count: Callable[[str], int]) -> int:
    """Estimated tokens of every text part (``count`` is the target model's counter)."""
    if isinstance(prompt, str):
        return count(prompt)
    return sum(count(p.text) for m in prompt for p in m.parts if isinstance(p, TextPart))


def has_compressible_text(prompt: Prompt) -> bool:
    if isinstance(prompt, str):
        return bool(prompt.strip())
    return any(
        isinstance(p, TextPart) and not p.protected and p.text.strip()
        for m in prompt
        if m.role in COMPRESSIBLE_ROLES
        for p in m.parts
    )


def derived_task(request: Request, fingerprint: str) -> str:
    """Default task name: target model + system prompt + compressor settings + endpoint."""
    system = ""
    if not isinstance(request.prompt, str):
        system = "\n".join(m.content for m in request.prompt if m.role in ("system", "developer"))
    raw = "\x1f".join((request.endpoint, request.model, system, fingerprint))
    return "auto-" + hashlib.sha256(raw.encode()).hexdigest()[:12]
