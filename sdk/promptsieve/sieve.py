"""The sieve: what every adapter calls around one request to the target.

An adapter wraps each request in ``with sieve.call(request, task, ...) as call:`` (or
``async with``). Entering asks the gate what to do for the request's task and, only where a
verdict has passed (or the caller opted out of verification), compresses the prompt within
a time budget; ``call.payload`` is what to send. Leaving records the outcome and, for
shadow and monitor decisions, sends the other variant to the target in the background,
compares the two outputs and feeds the sequential test. The request path fails open:
whatever goes wrong inside, the original prompt goes out.

How a request travels, and which module holds what: ``docs/architecture.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextvars
import inspect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from promptsieve._call import Call
from promptsieve._comparisons import Comparisons
from promptsieve._config_types import check_instance, check_members, check_not_config
from promptsieve._errors import ConfigError
from promptsieve._events import SieveObserver, notify, request_event
from promptsieve._lifecycle import (
    AsyncSend,
    Job,
    SyncSend,
    adrive,
    compare_flow,
    drive,
    prepare_flow,
)
from promptsieve._plan import Comparison, Plan, Reason, Variant
from promptsieve._sieve_config import _JUDGE_NEEDS_LABELLED, CompressorLike, GateLike, SieveConfig
from promptsieve._sieve_stats import SieveStats
from promptsieve._threads import DOOR_WAIT_S, ComputeDoor, DaemonPool, register
from promptsieve.fidelity import GateConfig, TargetOutput, VerdictKey, guard_ok, verdict_key
from promptsieve.prompt import COMPRESSIBLE_ROLES, Prompt, Request

__all__ = [
    "Call",
    "Comparison",
    "CompressorLike",
    "GateLike",
    "Plan",
    "Prompt",
    "Reason",
    "Request",
    "Sieve",
    "SieveConfig",
    "SieveStats",
]

log = logging.getLogger(__name__)


def _check_parts(config: object, compressor: object, gate: object) -> None:
    """ConfigError for a wrong kind of part, without loading anything (see Sieve)."""
    from promptsieve.compressor import CompressorConfig

    check_instance("Sieve", "config", config, SieveConfig)
    check_not_config("Sieve", "compressor", compressor, CompressorConfig, "a Compressor",
                     "SieveConfig(compressor=...)")  # fmt: skip
    check_not_config("Sieve", "gate", gate, GateConfig, "a Gate", "SieveConfig(gate=...)")
    check_members("Sieve", "compressor", compressor, ("fingerprint", "compress"), "a Compressor")
    check_members("Sieve", "gate", gate, ("decide", "record"), "a promptsieve.fidelity.Gate")
    metric = getattr(config, "metric", None)
    # the cosine metric embeds with the compressor's proxy (looked up without loading it)
    no_proxy = compressor is not None and inspect.getattr_static(compressor, "proxy", None) is None
    if _cosine(metric) and no_proxy:
        raise ConfigError(
            f"SieveConfig(metric={metric!r}) embeds answers with the compressor's proxy, "
            f"but {type(compressor).__name__} has no proxy: use a promptsieve Compressor, "
            "or another metric (e.g. 'answer', 'f1:0.8')"
        )


def _cosine(metric: object) -> bool:
    """Whether ``metric`` names the cosine metric, which embeds with the proxy."""
    return isinstance(metric, str) and metric.strip().partition(":")[0] == "cosine"


_P = TypeVar("_P")
#: Threads for the async driver's blocking steps, per sieve (as many as asyncio's default
#: executor has on a 4-core machine).
_BLOCKING_WORKERS = 8


class Sieve:
    """Decides per request whether to compress, and runs shadow/monitor comparisons.

    One instance serves many threads and event loops; build it once and share it. Defaults
    (``Compressor(config.compressor)``, ``Gate(SQLiteStore(config.store_path), config.gate)``)
    are built on first use, the compressor on a scoring thread so that loading the proxy
    never blocks a request past the scoring budget (:meth:`warmup` loads it up front).

    Close it with :meth:`close` / :meth:`aclose`, or use it as a (async) context manager;
    a sieve still open at interpreter exit is closed then (bounded by
    ``config.drain_timeout_s``, and 10 s for all sieves together), and a forked child
    re-creates its threads.

    Raises :class:`~promptsieve.ConfigError` at construction, loading nothing: when
    ``config`` is not a :class:`SieveConfig`; when a ``CompressorConfig`` or ``GateConfig`` is
    passed where the built part belongs; when ``compressor`` lacks ``fingerprint`` and
    ``compress``, or ``gate`` lacks ``decide`` and ``record``; and when a labelled-mode
    ``gate`` comes without ``SieveConfig(judge=...)``, or ``SieveConfig(judge=...)`` with a
    gate in agreement mode (it would never read the judge's labels); and when
    ``SieveConfig(metric="cosine...")`` meets a ``compressor`` without a proxy to embed with.
    """

    def __init__(
        self,
        config: SieveConfig | None = None,
        *,
        compressor: CompressorLike | None = None,
        gate: GateLike | None = None,
    ) -> None:
        _check_parts(config, compressor, gate)
        self.config = config or SieveConfig()
        # the gate's mode: a GateLike that does not say (no config.mode) is taken at its word
        if gate is not None:
            mode = getattr(getattr(gate, "config", None), "mode", None)
        else:
            mode = (self.config.gate or GateConfig()).mode
        if mode == "labelled" and self.config.judge is None:
            raise ConfigError(
                "a Gate in mode='labelled' on live traffic needs SieveConfig(judge=...): a "
                "callable (request, output) -> bool that labels an answer correct"
            )
        if mode == "agreement" and self.config.judge is not None:
            raise ConfigError(_JUDGE_NEEDS_LABELLED)
        self.stats = SieveStats()
        self._compressor = compressor
        self._gate = gate
        self._metric: Callable[[TargetOutput, TargetOutput], bool] | None = None
        self._metric_resolved = False
        self._warned: set[str] = set()
        self._closed = False
        #: Told of every request and comparison (counts only): see :meth:`add_observer`.
        self.observers: list[SieveObserver] = []
        self._start_threads()
        register(self)

    def add_observer(self, observer: SieveObserver) -> SieveObserver:
        """Tell ``observer`` of every request and comparison from now on; returns it.

        Observers (``promptsieve.otel.OTelObserver``, ``promptsieve.savings.SavingsLedger``,
        your own :class:`~promptsieve.SieveObserver`) get counts and decisions, never prompt
        text; one that raises is logged once and ignored.
        """
        self.observers.append(observer)
        return observer

    def _notify_request(self, plan: Plan, prompt_tokens: int | None) -> None:
        if self.observers:
            notify(self.observers, request_event(plan, prompt_tokens))

    def _start_threads(self) -> None:
        """Locks, pools and bookkeeping (again in a forked child, where none survive)."""
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._scoring = DaemonPool("promptsieve-score", self.config.scoring_workers)
        self._background = DaemonPool("promptsieve-compare", self.config.max_background)
        #: the async driver's blocking steps (verdict store, metric, judge); the sync
        #: driver runs them on the thread that drives the flow
        self._blocking = DaemonPool("promptsieve-io", _BLOCKING_WORKERS)
        self._loading: cf.Future[CompressorLike] | None = None
        self._door = ComputeDoor()
        self._comparisons = Comparisons(self)

    # -- the parts ------------------------------------------------------------------------
    @property
    def gate(self) -> GateLike:
        """The gate (``Gate(SQLiteStore(config.store_path), config.gate)`` unless given)."""
        if self._gate is None:
            with self._lock:
                if self._gate is None:
                    from promptsieve.fidelity import Gate, SQLiteStore

                    self._gate = Gate(SQLiteStore(self.config.store_path), self.config.gate)
        return self._gate

    @property
    def gate_config(self) -> GateConfig | None:
        """The gate's settings, without building the gate or opening its store: a given
        gate's ``config`` (None for a GateLike without one), else ``config.gate`` or the
        defaults."""
        if self._gate is not None:
            return getattr(self._gate, "config", None)
        return self.config.gate or GateConfig()

    @property
    def compressor(self) -> CompressorLike:
        """The compressor, built (and its proxy loaded) now if need be."""
        if self._compressor is None:
            with self._build_lock:  # one build, whichever thread asks first
                if self._compressor is None:
                    self._compressor = self._build_compressor()
        return self._compressor

    @property
    def _loaded_compressor(self) -> CompressorLike | None:
        """The compressor if it is ready, else None (never loads)."""
        return self._compressor

    @property
    def closed(self) -> bool:
        return self._closed

    def warmup(self) -> None:
        """Build the defaults and load the proxy now rather than on the first requests.

        Raises what loading raises (``ConfigError`` for a missing extra or a bad export).
        """
        _ = self.compressor.fingerprint
        if self.config.verify:
            _ = self.gate

    def _build_compressor(self) -> CompressorLike:
        from promptsieve.compressor import Compressor

        with self._door:  # loading opens onnxruntime sessions
            c = Compressor(self.config.compressor)
            _ = c.fingerprint  # loads the proxy
        return c

    def _load_compressor(self) -> cf.Future[CompressorLike]:
        """A future of the compressor, built once on a scoring thread."""
        with self._lock:
            fut = self._loading
            if fut is None or (fut.done() and fut.exception() is not None):  # retry a failure
                fut = self._loading = self._scoring.submit(lambda: self.compressor)
        return fut

    def verdict_key(self, task: str, model: str) -> VerdictKey:
        """The key under which the gate keeps ``task``'s verdict for target ``model``
        (:func:`promptsieve.fidelity.verdict_key` with this sieve's settings).

        Loads the compressor if need be (its fingerprint is part of the key). Raises
        ConfigError for an empty task or model.
        """
        cfg = self.config
        return verdict_key(
            task,
            model,
            self.compressor.fingerprint,
            cfg.gate,
            metric=cfg.metric,
            guard=cfg.guard,
            guard_threshold=cfg.guard_threshold,
        )

    def _variant(self, prompt: Prompt, ratio: float) -> Variant:
        """Compress ``prompt`` at ``ratio`` and run the instance guard (blocking, CPU).

        Raises what the compressor raises, and ``SieveClosed`` once the sieve is closed.
        """
        compressor = self.compressor
        with self._door:
            comp = compressor.compress(prompt, ratio=ratio)
        if not comp.changed:
            return Variant(None, "unchanged")
        new: Prompt = comp.prompt
        threshold = self._guard_threshold()
        if threshold is None:
            return Variant(new, "applied")
        # from the scoring pass when the compression carries it; else embed both texts
        sim = _guard_similarity(comp)
        if sim is None:
            with self._door:
                sim = float(compressor.similarity(_guard_text(prompt), _guard_text(new)))
        if not guard_ok(sim, threshold):
            return Variant(None, "guard", sim)
        return Variant(new, "applied", sim)

    def _guard_threshold(self) -> float | None:
        if not self.config.guard:
            return None
        if self.config.guard_threshold is not None:
            return self.config.guard_threshold
        cfg = self.config.gate or getattr(self._gate, "config", None)
        threshold = getattr(cfg, "guard_threshold", None)
        return float(threshold) if threshold is not None else GateConfig().guard_threshold

    def _metric_fn(self) -> Callable[[TargetOutput, TargetOutput], bool] | None:
        if not self._metric_resolved:
            from promptsieve.fidelity import get_metric

            embed = getattr(getattr(self._compressor, "proxy", None), "embed", None)
            self._metric = get_metric(self.config.metric, embed=embed)
            self._metric_resolved = True
        return self._metric

    # -- one request ----------------------------------------------------------------------
    def call(
        self,
        request: Request,
        task: str | None = None,
        *,
        original: _P,
        rebuild: Callable[[Prompt], _P],
        send_variant: SyncSend | AsyncSend | None = None,
    ) -> Call[_P]:
        """The lifecycle of one request, for adapters: ``with sieve.call(...) as call:``.

        ``original`` is the adapter's own request (kwargs, messages, ...); ``rebuild(prompt)``
        turns a neutral prompt into the same kind (raising, e.g. ``UnsupportedRequest``,
        when it does not fit: the original then goes out). ``send_variant(prompt)`` sends
        a neutral prompt to the target the way the live call did, without streaming and
        without the sieve (an ``async def`` for ``async with``); None: no comparison.
        ``task`` is the adapter's default task name (``with promptsieve.task(...)`` wins).
        Never raises; see :class:`Call`.
        """
        return Call(self, request, task, original, rebuild, send_variant)

    def prepare(self, request: Request, task: str | None = None) -> Plan:
        """Decide for one request and compress it if so; returns the :class:`Plan`.

        ``task`` is the adapter's default; ``with promptsieve.task(...)`` overrides it.
        Blocks at most ``config.scoring_budget_ms`` on scoring. Never raises: on any
        internal error or a blown budget the plan sends the original.
        """
        return drive(prepare_flow(self, request, task))

    async def aprepare(self, request: Request, task: str | None = None) -> Plan:
        """:meth:`prepare` for event loops: scoring and the store run on threads."""
        return await adrive(prepare_flow(self, request, task), self._scoring, self._blocking)

    def observe(
        self,
        plan: Plan,
        output: TargetOutput | None,
        *,
        usage_prompt_tokens: int | None = None,
        send_variant: SyncSend | None = None,
    ) -> None:
        """Record the live call's outcome; start the comparison the plan owes on a thread.

        ``output`` None: the live response could not be read (a stream), so both variants
        are sent. ``usage_prompt_tokens``: the server's prompt-token count. Returns at
        once; never raises. Adapters use :meth:`call`, which calls this.
        """
        if self._comparisons.must_wait(plan, send_variant):
            self._comparisons.wait_for_slot()
        job = self._job(plan, usage_prompt_tokens, send_variant)
        if job is None or send_variant is None:
            return
        try:
            flow = compare_flow(self, job, output)
            ctx = contextvars.copy_context()
            fut = self._background.submit(ctx.run, drive, flow, send_variant)
        except Exception as exc:  # no thread can start (OS limit, interpreter shutdown)
            self.report_error(exc, "starting a comparison")
            self._comparisons.not_started(job)
            return
        self._comparisons.started(job, fut)

    async def aobserve(
        self,
        plan: Plan,
        output: TargetOutput | None,
        *,
        usage_prompt_tokens: int | None = None,
        send_variant: AsyncSend | None = None,
    ) -> None:
        """:meth:`observe` for event loops: the comparison runs as an asyncio task."""
        if self._comparisons.must_wait(plan, send_variant):  # awaited, no thread held
            await self._comparisons.await_slot()
        job = self._job(plan, usage_prompt_tokens, send_variant)
        if job is None or send_variant is None:
            return
        try:
            flow = compare_flow(self, job, output)
            runner = asyncio.ensure_future(
                adrive(flow, self._scoring, self._blocking, send_variant)
            )
        except Exception as exc:
            self.report_error(exc, "starting a comparison")
            self._comparisons.not_started(job)
            return
        self._comparisons.started(job, runner)

    def revert(self, plan: Plan) -> Plan:
        """The plan with its compression undone (the adapter could not apply it)."""
        if not plan.is_compressed:
            return plan
        self.stats.add(compressed=-1, tokens_after=plan.tokens_before - plan.tokens_after)
        return replace(
            plan,
            sent=plan.request,
            reason="error",
            comparison=None,
            tokens_after=plan.tokens_before,
            compressed=None,
        )

    def abandon(self, plan: Plan) -> None:
        """The plan's comparison will not happen (the live call failed, no target, ...):
        free the gate's shadow slot at once. Never raises."""
        if plan.comparison != "shadow" or plan.key is None or plan.ratio is None:
            return
        try:
            self.gate.record(plan.key, plan.ratio, None)
        except Exception as exc:
            self.report_error(exc, "freeing a shadow slot")

    def report_error(self, exc: BaseException, where: str) -> None:
        """Count an internal error absorbed on the request path; log its type once
        (never its message, which may quote the prompt)."""
        self.stats.add(errors=1)
        self._warn_once(
            f"{where}:{type(exc).__name__}",
            "promptsieve: %s in %s; the request goes out unchanged",
            type(exc).__name__,
            where,
        )
        log.debug("promptsieve: details", exc_info=exc)

    # -- background comparisons -----------------------------------------------------------
    def _job(self, plan: Plan, prompt_tokens: int | None, send: object) -> Job | None:
        """Count usage, tell observers; reserve a slot for the plan's comparison."""
        try:
            self._usage(plan, prompt_tokens)
            self._notify_request(plan, prompt_tokens)
            return self._comparisons.reserve(plan, send)
        except Exception as exc:
            self.report_error(exc, "observe")
            return None

    def _usage(self, plan: Plan, prompt_tokens: int | None) -> None:
        if prompt_tokens is None:
            return
        # The server's count replaces the estimate of what was sent; the saving stays the
        # estimated difference, so before = reported + estimated saving.
        delta = int(prompt_tokens) - plan.tokens_after
        self.stats.add(
            usage_reports=1,
            prompt_tokens_reported=int(prompt_tokens),
            tokens_before=delta,
            tokens_after=delta,
        )

    def _agree(self, original: TargetOutput, compressed: TargetOutput) -> bool:
        """Whether the two outputs agree under the configured metric (or ``auto_metric``)."""
        metric = self._metric_fn()
        if metric is None:
            from promptsieve.fidelity import auto_metric

            metric = auto_metric(original)
        if not _cosine(self.config.metric):  # a user's callable or a text metric runs no
            return bool(metric(original, compressed))  # proxy: close() never waits on it
        with self._door:  # the cosine metric runs the proxy
            return bool(metric(original, compressed))

    # -- logging ---------------------------------------------------------------------------
    def _warn_warming(self) -> None:
        self._warn_once(
            "warming",
            "promptsieve: the proxy is still loading; sending original prompts until it is "
            "ready (call Sieve.warmup() to load it up front)",
            level=logging.INFO,
        )

    def _warn_timeout(self) -> None:
        self._warn_once(
            "timeout",
            "promptsieve: scoring exceeded its %.0f ms budget; sending the original prompt",
            self.config.scoring_budget_ms,
        )

    def _warn_once(self, kind: str, msg: str, *args: object, level: int = logging.WARNING) -> None:
        with self._lock:
            first = kind not in self._warned
            self._warned.add(kind)
        log.log(level if first else logging.DEBUG, msg, *args)

    # -- waiting and closing --------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (None: until done) for comparisons started by sync
        clients; True if none is left. Each is bounded by the target client's own timeout,
        and a forked child never waits for its parent's."""
        return self._comparisons.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:
        """Wait for comparisons started by async clients (and sync ones); True if all done."""
        return await self._comparisons.aflush(timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Stop the sieve: later requests go out unchanged and start no comparison.

        Waits up to ``timeout`` seconds (default ``config.drain_timeout_s``) for in-flight
        comparisons; the rest are abandoned, their shadow slots freed, and counted in
        ``stats.comparisons_abandoned``. Then waits until no thread of this sieve is inside
        the proxy (onnxruntime). True when every comparison finished. Idempotent; never
        raises. Runs for every sieve still open at interpreter exit.
        """
        timeout = self.config.drain_timeout_s if timeout is None else max(0.0, timeout)
        self._closed = True
        finished = self.flush(timeout)
        left = self._comparisons.left()
        for job in left:
            self._comparisons.settle(job, "abandoned")
        if not self._door.shut(DOOR_WAIT_S):
            log.warning("promptsieve: a scoring pass did not end within %.0f s", DOOR_WAIT_S)
        return finished and not left

    async def aclose(self, timeout: float | None = None) -> bool:
        """:meth:`close` for event loops: the loop's comparison tasks get the drain first."""
        timeout = self.config.drain_timeout_s if timeout is None else max(0.0, timeout)
        self._closed = True
        t0 = time.monotonic()
        drained = await self.aflush(timeout)
        left = max(0.0, timeout - (time.monotonic() - t0))
        closed = await asyncio.get_running_loop().run_in_executor(None, self.close, left)
        return drained and closed

    def __enter__(self) -> Sieve:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Sieve:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _close_at_exit(self, timeout: float) -> None:
        self.close(min(timeout, self.config.drain_timeout_s))

    def _after_fork(self) -> None:
        """In a forked child: none of the parent's threads exist; start them afresh."""
        self._start_threads()
        self.stats._after_fork()


def _guard_similarity(comp: object) -> float | None:
    """The cosine the instance guard tests, read off a compression (None: embed both texts).

    ``passage_similarity`` first: over the passages the coarse-to-fine budget kept, so that
    dropping whole passages, which is what that budget is for, does not veto the request
    while thinning inside the kept text still does. Measured on the 1.5B headline's 100
    multi-document items (``python -m benchmarks.guard_calibration``): the whole-text cosine
    had no skill at telling the default's harmful cuts (AUC for agreement 0.42 / 0.47 at ratio
    0.5 / 0.25) and vetoed 24 % / 73 % of them; over the kept passages 1 % / 11 % are vetoed,
    at the same accuracy (50 % / 54 %). Else ``similarity`` (the word and demonstration paths:
    the two are equal there), else None.
    """
    for name in ("passage_similarity", "similarity"):
        value = getattr(comp, name, None)
        if value is not None:
            return float(value)
    return None


def _guard_text(prompt: Prompt) -> str:
    """The text the guard compares: what compression may change (compressible roles)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(m.content for m in prompt if m.role in COMPRESSIBLE_ROLES)
