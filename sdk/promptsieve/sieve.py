"""The sieve: what every adapter calls around one request to the target.

``prepare`` asks the gate what to do for the request's task and, only where a verdict has
passed (or the caller opted out of verification), compresses the prompt within a time
budget. ``observe`` records the outcome and, for shadow and monitor decisions, sends the
other variant to the target in the background through a callable the adapter supplies,
compares the two outputs and feeds the sequential test. The request path fails open:
whatever goes wrong inside, the original prompt goes out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import contextvars
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from promptsieve._context import current_task
from promptsieve._errors import ConfigError
from promptsieve.fidelity import Action, Decision, GateConfig, TargetOutput, VerdictKey, guard_ok
from promptsieve.prompt import COMPRESSIBLE_ROLES, Message, TextPart
from promptsieve.tokens import TokenCounter

if TYPE_CHECKING:
    from promptsieve.compressor import CompressorConfig

__all__ = [
    "Plan",
    "Prompt",
    "Request",
    "Sieve",
    "SieveConfig",
    "SieveStats",
]

log = logging.getLogger(__name__)

#: A neutral prompt: a bare string (completions) or chat messages.
Prompt = str | tuple[Message, ...]
Comparison = Literal["shadow", "monitor"]
_T = TypeVar("_T")


class CompressorLike(Protocol):
    """What the sieve needs from a compressor (``promptsieve.Compressor`` fits).

    ``compress`` returns an object with ``prompt`` and ``changed``; a ``similarity``
    attribute (float) on it spares the instance guard the :meth:`similarity` call.
    """

    @property
    def fingerprint(self) -> str: ...
    def compress(self, prompt: Any, *, ratio: float | None = ...) -> Any: ...
    def similarity(self, a: str, b: str) -> float: ...


class GateLike(Protocol):
    """What the sieve needs from a gate (``promptsieve.fidelity.Gate`` fits)."""

    def decide(self, key: VerdictKey) -> Decision: ...
    def record(self, key: VerdictKey, ratio: float, agreed: bool | None) -> None: ...


@dataclass(frozen=True)
class SieveConfig:
    """How the sieve decides; wrong values raise :class:`ConfigError` at construction."""

    #: False = explicit opt-out of screening: compress every request at ``ratio``.
    verify: bool = True
    #: The fixed ratio used when ``verify`` is False (required then).
    ratio: float | None = None
    #: Task name used when neither ``promptsieve.task(...)`` nor the adapter names one;
    #: None derives it from target model + system prompt + compressor settings.
    task: str | None = None
    #: Passed to ``Gate(store, gate)`` when the sieve builds its own gate (ratio ladder, τ, δ).
    gate: GateConfig | None = None
    #: SQLite file of the default verdict store (None: the store's own default path).
    store_path: str | None = None
    #: Passed to ``Compressor(compressor)`` when the sieve builds its own compressor.
    compressor: CompressorConfig | None = None
    #: Agreement metric: "exact", "numeric", "choice", "json", "tool_calls", "f1:0.8",
    #: "cosine:0.9", a callable, or None to pick one from the original output's shape.
    metric: str | Callable[[TargetOutput, TargetOutput], bool] | None = None
    #: Instance guard: keep the original when the proxy's cosine between original and
    #: compressed text falls below the threshold (no target call is spent on it).
    guard: bool = True
    #: None: the gate config's ``guard_threshold`` (0.8 by default).
    guard_threshold: float | None = None
    #: Scoring time budget per request; past it the original goes out.
    scoring_budget_ms: float = 500.0
    #: Threads that score prompts (the caller waits at most the budget for one).
    scoring_workers: int = 2
    #: Threads that send shadow/monitor comparisons to the target.
    max_background: int = 2
    #: Comparisons waiting or running beyond which new ones are skipped (call budget).
    max_pending: int = 8

    def __post_init__(self) -> None:
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio!r}")
        if not self.verify and self.ratio is None:
            raise ConfigError("verify=False applies a fixed ratio: set SieveConfig(ratio=...)")
        if self.guard_threshold is not None and not -1.0 <= self.guard_threshold <= 1.0:
            raise ConfigError(f"guard_threshold must be in [-1, 1], got {self.guard_threshold!r}")
        if self.scoring_budget_ms <= 0:
            raise ConfigError("scoring_budget_ms must be positive")
        for name in ("scoring_workers", "max_background", "max_pending"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.task is not None and not self.task.strip():
            raise ConfigError("task must be a non-empty string")

    def settings_key(self) -> str:
        """Sieve settings that change what a verdict means (part of the verdict key).

        Only the test's meaning counts (metric, guard, τ, δ, the ladder): rates, budgets and
        TTLs do not, so ``promptsieve screen --store`` and a live sieve agree on the key.
        """
        metric = self.metric
        if callable(metric):
            metric = f"{getattr(metric, '__module__', '')}.{getattr(metric, '__qualname__', '')}"
        gate = self.gate or GateConfig()
        threshold = gate.guard_threshold if self.guard_threshold is None else self.guard_threshold
        raw = repr((metric, self.guard, threshold, gate.tau, gate.delta, tuple(gate.ratios)))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Request:
    """One request in neutral form: the prompt and the target model it goes to."""

    prompt: Prompt
    model: str
    #: Which API it came through ("chat", "completions", "responses"); part of derived names.
    endpoint: str = "chat"


@dataclass(frozen=True)
class Plan:
    """What ``prepare`` decided for one request, and what ``observe`` still owes it."""

    request: Request  # the original
    sent: Request  # what goes to the target (``request`` unless compressed)
    task: str | None
    key: VerdictKey | None
    decision: Decision | None
    #: Why the request goes out as it does: "applied", "bypass", "shadow", "guard",
    #: "unchanged", "nothing", "warming", "timeout", "error".
    reason: str
    #: Background comparison due after the live call (None: none).
    comparison: Comparison | None = None
    #: The ratio compressed at (apply) or under test (shadow).
    ratio: float | None = None
    #: Estimated prompt tokens (target model's tokenizer) of the original and of what was sent.
    tokens_before: int = 0
    tokens_after: int = 0
    #: Proxy cosine between original and compressed (when the guard ran).
    similarity: float | None = None
    #: Set when the verdict was APPLY: the compressed prompt (also ``sent.prompt``).
    compressed: Prompt | None = None

    @property
    def is_compressed(self) -> bool:
        return self.compressed is not None and self.sent is not self.request


class SieveStats:
    """Thread-safe counters; ``snapshot()`` returns a plain dict for logs and dashboards."""

    _FIELDS = (
        "requests",
        "compressed",
        "guard_skips",
        "errors",
        "timeouts",
        "warming",
        "tokens_before",
        "tokens_after",
        "usage_reports",
        "prompt_tokens_reported",
        "screening_calls",
        "comparisons",
        "agreements",
        "disagreements",
        "comparison_errors",
        "comparisons_skipped",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(self._FIELDS, 0)
        self._decisions: dict[str, int] = {a.value: 0 for a in Action}

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                self._counts[name] = self._counts.get(name, 0) + n

    def decided(self, action: Action) -> None:
        with self._lock:
            self._decisions[action.value] = self._decisions.get(action.value, 0) + 1

    def __getattr__(self, name: str) -> int:
        counts = self.__dict__.get("_counts")
        if counts is not None and name in counts:
            return counts[name]
        raise AttributeError(name)

    @property
    def tokens_saved(self) -> int:
        with self._lock:
            return self._counts["tokens_before"] - self._counts["tokens_after"]

    @property
    def decisions(self) -> dict[str, int]:
        with self._lock:
            return dict(self._decisions)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            out["decisions"] = dict(self._decisions)
        out["tokens_saved"] = out["tokens_before"] - out["tokens_after"]
        return out


@dataclass
class _Pending:
    """A plan that still needs a compression before it can go out."""

    request: Request
    task: str
    key: VerdictKey | None
    decision: Decision
    ratio: float
    tokens_before: int
    count: Callable[[str], int]


@dataclass(frozen=True)
class _Variant:
    prompt: Prompt | None  # None: not usable (guard, unchanged)
    reason: str
    similarity: float | None = None


class Sieve:
    """Decides per request whether to compress, and runs shadow/monitor comparisons.

    One instance serves many threads and event loops; build it once and share it.
    Defaults (``Compressor()``, ``Gate(SQLiteStore())``) are built on first use, the
    compressor on a scoring thread so that loading the proxy never blocks a request past
    the scoring budget (call :meth:`warmup` to load it up front).
    """

    def __init__(
        self,
        config: SieveConfig | None = None,
        *,
        compressor: CompressorLike | None = None,
        gate: GateLike | None = None,
    ) -> None:
        self.config = config or SieveConfig()
        self.stats = SieveStats()
        self._compressor = compressor
        self._gate = gate
        self._lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._scoring = _DaemonPool("promptsieve-score", self.config.scoring_workers)
        self._background = _DaemonPool("promptsieve-compare", self.config.max_background)
        self._compressor_future: cf.Future[CompressorLike] | None = None
        self._metric: Callable[[TargetOutput, TargetOutput], bool] | None = None
        self._metric_resolved = False
        self._pending: set[cf.Future[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned: set[str] = set()

    # -- defaults -------------------------------------------------------------------------
    @property
    def gate(self) -> GateLike:
        if self._gate is None:
            with self._lock:
                if self._gate is None:
                    from promptsieve.fidelity import Gate, SQLiteStore

                    self._gate = Gate(SQLiteStore(self.config.store_path), self.config.gate)
        return self._gate

    @property
    def compressor(self) -> CompressorLike:
        """The compressor, built (and its proxy loaded) now if need be."""
        if self._compressor is None:
            with self._build_lock:  # one build, whichever thread asks first
                if self._compressor is None:
                    self._compressor = self._build_compressor()
        return self._compressor

    def warmup(self) -> None:
        """Build the defaults and load the proxy now rather than on the first requests."""
        _ = self.compressor.fingerprint
        if self.config.verify:
            _ = self.gate

    def _build_compressor(self) -> CompressorLike:
        from promptsieve.compressor import Compressor

        c = Compressor(self.config.compressor)
        _ = c.fingerprint  # loads the proxy
        return c

    def _ready_compressor(self, wait: float) -> CompressorLike | None:
        """The compressor, or None while it is still loading after ``wait`` seconds."""
        if self._compressor is not None:
            return self._compressor
        with self._lock:
            if self._compressor_future is None:
                self._compressor_future = self._scoring.submit(lambda: self.compressor)
            fut = self._compressor_future
        try:
            c = fut.result(timeout=wait)
        except cf.TimeoutError:
            return None
        except Exception:
            with self._lock:  # let a later request try again
                if self._compressor_future is fut:
                    self._compressor_future = None
            raise
        self._compressor = c
        return c

    def _metric_fn(self) -> Callable[[TargetOutput, TargetOutput], bool] | None:
        if not self._metric_resolved:
            from promptsieve.fidelity import get_metric

            embed = getattr(getattr(self._compressor, "proxy", None), "embed", None)
            self._metric = get_metric(self.config.metric, embed=embed)
            self._metric_resolved = True
        return self._metric

    # -- prepare --------------------------------------------------------------------------
    @property
    def _budget_s(self) -> float:
        return self.config.scoring_budget_ms / 1000.0

    def prepare(self, request: Request, task: str | None = None) -> tuple[Plan, Request]:
        """Decide for one request; returns the plan and the request to send.

        ``task`` is the adapter's default; ``with promptsieve.task(...)`` overrides it.
        Never raises: on any internal error or a blown scoring budget the original goes out.
        """
        t0 = time.perf_counter()
        try:
            step = self._begin(request, task, deadline=t0 + self._budget_s)
            if step is None:  # not reached: with a deadline _begin never defers
                step = self._warming(request)
            if isinstance(step, Plan):
                return step, step.sent
            fut = self._scoring.submit(
                contextvars.copy_context().run, self._variant, request.prompt, step.ratio
            )
            remaining = max(0.0, t0 + self._budget_s - time.perf_counter())
            try:
                variant = fut.result(timeout=remaining)
            except cf.TimeoutError:
                fut.cancel()
                plan = self._timed_out(request, step)
            else:
                plan = self._finish(step, variant)
        except Exception as exc:
            plan = self._failed(request, exc)
        return plan, plan.sent

    async def aprepare(self, request: Request, task: str | None = None) -> tuple[Plan, Request]:
        """:meth:`prepare` for event loops: scoring runs on a thread, the loop stays free."""
        t0 = time.perf_counter()
        try:
            step = self._begin(request, task, deadline=None)
            if step is None:  # compressor still loading: wait for it without blocking
                step = await self._await_compressor(request, task, t0)
            if isinstance(step, Plan):
                return step, step.sent
            fut = self._scoring.submit(
                contextvars.copy_context().run, self._variant, request.prompt, step.ratio
            )
            remaining = max(0.0, t0 + self._budget_s - time.perf_counter())
            try:
                variant = await asyncio.wait_for(asyncio.wrap_future(fut), remaining)
            except asyncio.TimeoutError:
                fut.cancel()
                plan = self._timed_out(request, step)
            else:
                plan = self._finish(step, variant)
        except Exception as exc:
            plan = self._failed(request, exc)
        return plan, plan.sent

    async def _await_compressor(
        self, request: Request, task: str | None, t0: float
    ) -> Plan | _Pending:
        self._ready_compressor(0.0)  # starts the build
        fut = self._compressor_future
        if fut is not None and self._compressor is None:
            remaining = max(0.0, t0 + self._budget_s - time.perf_counter())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(fut)), remaining)
        step = self._begin(request, task, deadline=time.perf_counter(), counted=True)
        if step is None:
            return self._warming(request)
        return step

    def _begin(
        self,
        request: Request,
        task: str | None,
        *,
        deadline: float | None,
        counted: bool = False,
    ) -> Plan | _Pending | None:
        """Everything before scoring. ``deadline=None`` returns None while the compressor
        is loading (async callers wait for it themselves); otherwise it waits until then."""
        if not counted:
            self.stats.add(requests=1)
        count = TokenCounter.for_model(request.model)
        before = _count_prompt(request.prompt, count)
        name = current_task() or task or self.config.task

        if not _has_compressible_text(request.prompt):
            self.stats.add(tokens_before=before, tokens_after=before)
            return Plan(request, request, name, None, None, "nothing", tokens_before=before,
                        tokens_after=before)  # fmt: skip

        key: VerdictKey | None = None
        if self.config.verify:
            if deadline is None:
                compressor = self._ready_compressor(0.0)
                if compressor is None:
                    return None
            else:
                compressor = self._ready_compressor(max(0.0, deadline - time.perf_counter()))
                if compressor is None:
                    self.stats.add(tokens_before=before, tokens_after=before)
                    return self._warming(request, counted_tokens=True, tokens=before)
            if name is None:
                name = _derived_task(request, compressor.fingerprint)
            key = self.verdict_key(name, request.model)
            decision = self.gate.decide(key)
        else:
            assert self.config.ratio is not None
            decision = Decision(Action.APPLY, ratio=self.config.ratio)
        self.stats.decided(decision.action)

        if decision.action == Action.APPLY and decision.ratio is not None:
            return _Pending(request, name or "", key, decision, decision.ratio, before, count)
        self.stats.add(tokens_before=before, tokens_after=before)
        if decision.action == Action.SHADOW and decision.ratio is not None:
            return Plan(request, request, name, key, decision, "shadow", "shadow",
                        decision.ratio, before, before)  # fmt: skip
        return Plan(request, request, name, key, decision, "bypass", None, decision.ratio,
                    before, before)  # fmt: skip

    def _variant(self, prompt: Prompt, ratio: float) -> _Variant:
        """Compress at ``ratio`` and run the instance guard (on a scoring thread)."""
        compressor = self.compressor
        comp = compressor.compress(prompt, ratio=ratio)
        if not comp.changed:
            return _Variant(None, "unchanged")
        new: Prompt = comp.prompt
        threshold = self._guard_threshold()
        if threshold is None:
            return _Variant(new, "applied")
        # from the scoring pass when the compression carries it; else embed both texts
        sim = getattr(comp, "similarity", None)
        if sim is None:
            sim = float(compressor.similarity(_guard_text(prompt), _guard_text(new)))
        if not guard_ok(sim, threshold):
            return _Variant(None, "guard", sim)
        return _Variant(new, "applied", sim)

    def _guard_threshold(self) -> float | None:
        if not self.config.guard:
            return None
        if self.config.guard_threshold is not None:
            return self.config.guard_threshold
        cfg = self.config.gate or getattr(self._gate, "config", None)
        threshold = getattr(cfg, "guard_threshold", None)
        return float(threshold) if threshold is not None else GateConfig().guard_threshold

    def _finish(self, step: _Pending, variant: _Variant) -> Plan:
        req = step.request
        if variant.prompt is None:
            if variant.reason == "guard":
                self.stats.add(guard_skips=1)
            self.stats.add(tokens_before=step.tokens_before, tokens_after=step.tokens_before)
            return Plan(req, req, step.task, step.key, step.decision, variant.reason, None,
                        step.ratio, step.tokens_before, step.tokens_before,
                        variant.similarity)  # fmt: skip
        sent = Request(variant.prompt, req.model, req.endpoint)
        after = _count_prompt(variant.prompt, step.count)
        self.stats.add(compressed=1, tokens_before=step.tokens_before, tokens_after=after)
        comparison: Comparison | None = "monitor" if step.decision.monitor else None
        return Plan(req, sent, step.task, step.key, step.decision, "applied", comparison,
                    step.ratio, step.tokens_before, after, variant.similarity,
                    variant.prompt)  # fmt: skip

    def _timed_out(self, request: Request, step: _Pending) -> Plan:
        self.stats.add(errors=1, timeouts=1)
        self.stats.add(tokens_before=step.tokens_before, tokens_after=step.tokens_before)
        self._warn_once(
            "timeout",
            "promptsieve: scoring exceeded its %.0f ms budget; sending the original prompt",
            self.config.scoring_budget_ms,
        )
        return Plan(request, request, step.task, step.key, step.decision, "timeout",
                    ratio=step.ratio, tokens_before=step.tokens_before,
                    tokens_after=step.tokens_before)  # fmt: skip

    def _warming(self, request: Request, *, counted_tokens: bool = False, tokens: int = 0) -> Plan:
        self.stats.add(warming=1)
        if not counted_tokens:
            tokens = _count_prompt(request.prompt, TokenCounter.for_model(request.model))
            self.stats.add(tokens_before=tokens, tokens_after=tokens)
        self._warn_once(
            "warming",
            "promptsieve: the proxy is still loading; sending original prompts until it is "
            "ready (call Sieve.warmup() to load it up front)",
            level=logging.INFO,
        )
        return Plan(request, request, None, None, None, "warming", tokens_before=tokens,
                    tokens_after=tokens)  # fmt: skip

    def _failed(self, request: Request, exc: BaseException) -> Plan:
        self.stats.add(errors=1)
        self._warn_once(
            f"error:{type(exc).__name__}",
            "promptsieve: %s in prepare; sending the original prompt",
            type(exc).__name__,
            exc_info=exc,
        )
        return Plan(request, request, None, None, None, "error")

    def revert(self, plan: Plan) -> Plan:
        """The plan with its compression undone (an adapter could not apply it)."""
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

    def report_error(self, exc: BaseException, where: str) -> None:
        """Count an adapter-side internal error and log it once (type only, no prompt)."""
        self.stats.add(errors=1)
        self._warn_once(
            f"{where}:{type(exc).__name__}",
            "promptsieve: %s in %s; the request goes out unchanged",
            type(exc).__name__,
            where,
            exc_info=exc,
        )

    def _warn_once(
        self,
        kind: str,
        msg: str,
        *args: object,
        level: int = logging.WARNING,
        exc_info: BaseException | None = None,
    ) -> None:
        with self._lock:
            first = kind not in self._warned
            self._warned.add(kind)
        # Exception text can quote the prompt, so only the type is logged at WARNING.
        log.log(level if first else logging.DEBUG, msg, *args)
        if exc_info is not None:
            log.debug("promptsieve: details", exc_info=exc_info)

    # -- observe --------------------------------------------------------------------------
    def observe(
        self,
        plan: Plan,
        output: TargetOutput | None,
        *,
        usage_prompt_tokens: int | None = None,
        send_variant: Callable[[Prompt], TargetOutput] | None = None,
    ) -> None:
        """Record the live call's outcome; schedule the comparison the plan owes.

        ``output`` is None when the live response could not be read (a stream); then both
        variants are sent in the background. ``send_variant`` sends a neutral prompt to the
        target the way the live call did, without streaming and without the sieve. Returns
        at once; the comparison runs on a background thread. Never raises.
        """
        try:
            self._usage(plan, usage_prompt_tokens)
            if plan.comparison is None or plan.key is None:
                return
            if send_variant is None or not self._reserve():
                self.abandon(plan)
                return
            ctx = contextvars.copy_context()
            fut = self._background.submit(ctx.run, self._compare, plan, output, send_variant)
            with self._lock:
                self._pending.add(fut)
            fut.add_done_callback(self._release)
        except Exception as exc:
            self._observe_failed(exc)

    async def aobserve(
        self,
        plan: Plan,
        output: TargetOutput | None,
        *,
        usage_prompt_tokens: int | None = None,
        send_variant: Callable[[Prompt], Awaitable[TargetOutput]] | None = None,
    ) -> None:
        """:meth:`observe` for event loops: the comparison runs as an asyncio task."""
        try:
            self._usage(plan, usage_prompt_tokens)
            if plan.comparison is None or plan.key is None:
                return
            if send_variant is None or not self._reserve():
                self.abandon(plan)
                return
            t = asyncio.get_running_loop().create_task(self._acompare(plan, output, send_variant))
            with self._lock:
                self._tasks.add(t)
            t.add_done_callback(self._release_task)
        except Exception as exc:
            self._observe_failed(exc)

    def abandon(self, plan: Plan) -> None:
        """The plan's comparison will not happen (the live call failed, no slot, ...):
        tell the gate, so the shadow slot it reserved is free again. Never raises."""
        if plan.comparison != "shadow" or plan.key is None or plan.ratio is None:
            return
        try:
            self.gate.record(plan.key, plan.ratio, None)
        except Exception as exc:
            self._observe_failed(exc)

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

    def _reserve(self) -> bool:
        with self._lock:
            busy = len(self._pending) + len(self._tasks)
        if busy >= self.config.max_pending:
            self.stats.add(comparisons_skipped=1)
            return False
        return True

    def _release(self, fut: cf.Future[None]) -> None:
        with self._lock:
            self._pending.discard(fut)

    def _release_task(self, t: asyncio.Task[None]) -> None:
        with self._lock:
            self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            self._observe_failed(t.exception() or RuntimeError())

    def _observe_failed(self, exc: BaseException) -> None:
        self.stats.add(errors=1)
        self._warn_once(
            f"observe:{type(exc).__name__}",
            "promptsieve: %s while recording a comparison",
            type(exc).__name__,
            exc_info=exc,
        )

    def _compare(
        self,
        plan: Plan,
        output: TargetOutput | None,
        send: Callable[[Prompt], TargetOutput],
    ) -> None:
        try:
            pair = self._variants(plan)
            if pair is None:
                self.abandon(plan)
                return
            original, compressed, live_is_original = pair
            try:
                if live_is_original:
                    orig_out = output if output is not None else self._send(send, original)
                    comp_out = self._send(send, compressed)
                else:
                    comp_out = output if output is not None else self._send(send, compressed)
                    orig_out = self._send(send, original)
            except Exception as exc:
                self._target_failed(plan, exc)
                return
            self._record(plan, orig_out, comp_out)
        except Exception as exc:
            self._observe_failed(exc)

    async def _acompare(
        self,
        plan: Plan,
        output: TargetOutput | None,
        send: Callable[[Prompt], Awaitable[TargetOutput]],
    ) -> None:
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        try:
            pair = await asyncio.wrap_future(self._scoring.submit(ctx.run, self._variants, plan))
        except Exception:
            self.abandon(plan)
            raise
        if pair is None:
            await loop.run_in_executor(None, ctx.run, self.abandon, plan)
            return
        original, compressed, live_is_original = pair
        try:
            if live_is_original:
                orig_out = output if output is not None else await self._asend(send, original)
                comp_out = await self._asend(send, compressed)
            else:
                comp_out = output if output is not None else await self._asend(send, compressed)
                orig_out = await self._asend(send, original)
        except Exception as exc:
            self._target_failed(plan, exc)
            return
        # The store may touch disk or the network: keep it off the loop.
        await loop.run_in_executor(None, ctx.run, self._record, plan, orig_out, comp_out)

    def _variants(self, plan: Plan) -> tuple[Prompt, Prompt, bool] | None:
        """(original, compressed, whether the live call sent the original)."""
        if plan.comparison == "monitor":
            assert plan.compressed is not None
            return plan.request.prompt, plan.compressed, False
        assert plan.ratio is not None
        variant = self._variant(plan.request.prompt, plan.ratio)
        if variant.prompt is None:
            # Apply would send the original here too, so there is nothing to test.
            if variant.reason == "guard":
                self.stats.add(guard_skips=1)
            return None
        return plan.request.prompt, variant.prompt, True

    def _send(self, send: Callable[[Prompt], TargetOutput], prompt: Prompt) -> TargetOutput:
        self.stats.add(screening_calls=1)
        return send(prompt)

    async def _asend(
        self, send: Callable[[Prompt], Awaitable[TargetOutput]], prompt: Prompt
    ) -> TargetOutput:
        self.stats.add(screening_calls=1)
        return await send(prompt)

    def _target_failed(self, plan: Plan, exc: BaseException) -> None:
        self.stats.add(comparison_errors=1)
        self._warn_once(
            f"target:{type(exc).__name__}",
            "promptsieve: the target failed a background comparison (%s); not counted",
            type(exc).__name__,
        )
        assert plan.key is not None and plan.ratio is not None
        self.gate.record(plan.key, plan.ratio, None)

    def _record(self, plan: Plan, original: TargetOutput, compressed: TargetOutput) -> None:
        try:
            metric = self._metric_fn()
            if metric is None:
                from promptsieve.fidelity import auto_metric

                metric = auto_metric(original)
            agreed = bool(metric(original, compressed))
        except Exception:
            self.abandon(plan)
            raise
        self.stats.add(comparisons=1, agreements=int(agreed), disagreements=int(not agreed))
        assert plan.key is not None and plan.ratio is not None
        self.gate.record(plan.key, plan.ratio, agreed)

    # -- lifecycle ------------------------------------------------------------------------
    def verdict_key(self, task: str, model: str) -> VerdictKey:
        """The key under which the gate keeps ``task``'s verdict for target ``model``."""
        return VerdictKey(
            task=task,
            target_model=model,
            proxy_fingerprint=self.compressor.fingerprint,
            settings=self.config.settings_key(),
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for background comparisons started by sync clients; True if all finished."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return True
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            _, not_done = cf.wait(pending, timeout=left)
            if not_done and deadline is not None and time.monotonic() >= deadline:
                return False

    async def aflush(self, timeout: float | None = None) -> bool:
        """Wait for comparisons started by async clients (and sync ones); True if all done."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                tasks = list(self._tasks)
            if not tasks:
                break
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            _, not_done = await asyncio.wait(tasks, timeout=left)
            if not_done and deadline is not None and time.monotonic() >= deadline:
                return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, left)


class _DaemonPool:
    """A small thread pool of daemon threads: a stuck target call never blocks exit."""

    def __init__(self, name: str, workers: int) -> None:
        self._name = name
        self._workers = workers
        self._queue: queue.SimpleQueue[tuple[cf.Future[Any], Callable[[], Any]]] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., _T], *args: Any) -> cf.Future[_T]:
        fut: cf.Future[_T] = cf.Future()
        self._queue.put((fut, lambda: fn(*args)))
        self._grow()
        return fut

    def _grow(self) -> None:
        with self._lock:
            if len(self._threads) < self._workers:
                t = threading.Thread(
                    target=self._run, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
                t.start()

    def _run(self) -> None:
        while True:
            fut, fn = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)


def _count_prompt(prompt: Prompt, count: Callable[[str], int]) -> int:
    if isinstance(prompt, str):
        return count(prompt)
    return sum(count(p.text) for m in prompt for p in m.parts if isinstance(p, TextPart))


def _has_compressible_text(prompt: Prompt) -> bool:
    if isinstance(prompt, str):
        return bool(prompt.strip())
    return any(
        isinstance(p, TextPart) and not p.protected and p.text.strip()
        for m in prompt
        if m.role in COMPRESSIBLE_ROLES
        for p in m.parts
    )


def _guard_text(prompt: Prompt) -> str:
    """The text the guard compares: what compression may change (compressible roles)."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(m.content for m in prompt if m.role in COMPRESSIBLE_ROLES)


def _derived_task(request: Request, fingerprint: str) -> str:
    """Default task name: target model + system prompt + compressor settings + endpoint."""
    system = ""
    if not isinstance(request.prompt, str):
        system = "\n".join(m.content for m in request.prompt if m.role in ("system", "developer"))
    raw = "\x1f".join((request.endpoint, request.model, system, fingerprint))
    return "auto-" + hashlib.sha256(raw.encode()).hexdigest()[:12]
