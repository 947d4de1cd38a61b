"""What the sieve tells observers: one event per request, one per comparison.

Observers (OpenTelemetry in :mod:`promptsieve.otel`, the savings ledger in
:mod:`promptsieve.savings`, or your own) implement :class:`SieveObserver` and are attached
with ``Sieve.add_observer``. Events hold counts, names and decisions, never prompt or answer
text. An observer that raises is logged once and otherwise ignored: the request path fails
open.

``on_request`` runs on the caller's thread (inside the caller's tracing span, when there is
one), after the live call returned; ``on_comparison`` runs where the comparison finished (a
background thread or task, with the caller's context variables copied in).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ComparisonEvent",
    "RequestEvent",
    "SieveObserver",
    "comparison_event",
    "notify",
    "request_event",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestEvent:
    """One live request, after the target answered.

    ``decision``: the gate's action ("bypass", "shadow", "apply"), None when no decision was
    taken (nothing compressible, proxy warming, an internal error). ``reason``: why the
    request went out as it did (``Plan.reason``). ``tokens_before``/``tokens_after``: prompt
    tokens of the original and of what was sent (target tokenizer estimate, or the server's
    count when reported). ``input_tokens``/``output_tokens``: the server's usage when it
    reported one. ``verdict_state``: the state the decision implies ("passed" for apply,
    "screening" for shadow), None when the decision does not tell.
    """

    task: str | None
    target_model: str
    endpoint: str
    decision: str | None
    reason: str
    ratio: float | None
    tokens_before: int
    tokens_after: int
    input_tokens: int | None = None
    output_tokens: int | None = None
    verdict_state: str | None = None
    time: float = 0.0  # unix seconds

    @property
    def tokens_saved(self) -> int:
        return self.tokens_before - self.tokens_after


@dataclass(frozen=True)
class ComparisonEvent:
    """One finished background comparison (shadow while screening, monitor after a pass).

    ``agreed``: whether the compressed answer matched the original under the task's metric;
    None when the target failed and nothing was counted. ``screening_calls``: extra target
    calls this comparison spent; ``screening_tokens``: their prompt tokens (estimate).
    ``verdict_state``: the verdict's state after the comparison was recorded, when known.
    """

    task: str | None
    target_model: str
    kind: Literal["shadow", "monitor"]
    ratio: float | None
    agreed: bool | None
    screening_calls: int
    screening_tokens: int
    verdict_state: str | None = None
    time: float = 0.0  # unix seconds


@runtime_checkable
class SieveObserver(Protocol):
    """Receives the sieve's events. Methods must return quickly and may raise (ignored)."""

    def on_request(self, event: RequestEvent) -> None: ...

    def on_comparison(self, event: ComparisonEvent) -> None: ...


_warned: set[str] = set()


def notify(observers: Iterable[SieveObserver], event: RequestEvent | ComparisonEvent) -> None:
    """Hand ``event`` to every observer; an observer's exception is logged once, never raised."""
    for obs in observers:
        try:
            if isinstance(event, RequestEvent):
                obs.on_request(event)
            else:
                obs.on_comparison(event)
        except Exception as exc:
            kind = f"{type(obs).__name__}:{type(exc).__name__}"
            level = logging.DEBUG if kind in _warned else logging.WARNING
            _warned.add(kind)
            log.log(level, "promptsieve: observer %s raised %s; ignored", *kind.split(":"))
            log.debug("promptsieve: details", exc_info=exc)


# -- building events from a plan (what the sieve calls) ---------------------------------------
_IMPLIED_STATE = {"apply": "passed", "shadow": "screening"}


def request_event(plan: Any, usage_prompt_tokens: int | None = None) -> RequestEvent:
    """The :class:`RequestEvent` of a plan after its live call (``Plan`` from the sieve).

    With a server-reported prompt-token count, ``tokens_after`` is that count and
    ``tokens_before`` moves by the same difference (the saving stays the estimated one), as
    in the sieve's stats.
    """
    decision = plan.decision.action.value if plan.decision is not None else None
    before, after = int(plan.tokens_before), int(plan.tokens_after)
    if usage_prompt_tokens is not None:
        delta = int(usage_prompt_tokens) - after
        before, after = before + delta, after + delta
    state = _IMPLIED_STATE.get(decision or "") if plan.key is not None else None
    return RequestEvent(
        task=plan.task,
        target_model=plan.request.model,
        endpoint=plan.request.endpoint,
        decision=decision,
        reason=str(plan.reason),
        ratio=plan.ratio,
        tokens_before=before,
        tokens_after=after,
        input_tokens=None if usage_prompt_tokens is None else int(usage_prompt_tokens),
        verdict_state=state,
        time=time.time(),
    )


def comparison_event(
    plan: Any, agreed: bool | None, *, calls: int, verdict_state: str | None = None
) -> ComparisonEvent:
    """The :class:`ComparisonEvent` of a plan's finished comparison.

    ``calls``: target calls the comparison spent: 1 when the live call's output was used,
    2 when it could not be read (a stream) and both variants were sent. Screening tokens are
    those calls' prompt tokens: the original's count, and for a compressed shadow variant
    the estimate ``tokens_before × ratio`` (its exact count is known only when monitoring).
    """
    live_read = calls <= 1
    before, after = int(plan.tokens_before), int(plan.tokens_after)
    if plan.comparison == "monitor":
        compressed, extra_is_original = after, True
    else:
        compressed, extra_is_original = round(before * (plan.ratio or 1.0)), False
    tokens = before if extra_is_original else compressed
    if calls == 0:
        tokens = 0
    elif not live_read:
        tokens = before + compressed
    return ComparisonEvent(
        task=plan.task,
        target_model=plan.request.model,
        kind=plan.comparison or "shadow",
        ratio=plan.ratio,
        agreed=agreed,
        screening_calls=calls,
        screening_tokens=tokens,
        verdict_state=verdict_state,
        time=time.time(),
    )
