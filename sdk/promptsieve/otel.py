"""OpenTelemetry for promptsieve (``pip install 'promptsieve[otel]'``).

:class:`OTelObserver` is a sieve observer (``sieve.add_observer(OTelObserver())``) that

* sets span attributes on the caller's current span (the span around the LLM call, when the
  application or an instrumentation opened one; otherwise a ``promptsieve request`` span of
  its own), following the OpenTelemetry GenAI semantic conventions where they apply —
  ``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens`` and
  ``gen_ai.usage.output_tokens`` (only when the server reported usage) — plus promptsieve's
  own ``promptsieve.*`` attributes (task, decision, reason, ratio, tokens before/after/saved,
  verdict state);
* opens a ``promptsieve comparison`` span per background comparison, a child of the caller's
  span (the context is carried to the background thread), with the comparison's kind,
  agreement, screening calls and tokens, and the verdict state after it;
* records counters: ``promptsieve.requests``, ``promptsieve.tokens.before``,
  ``promptsieve.tokens.after``, ``promptsieve.tokens.saved``, ``promptsieve.comparisons``,
  ``promptsieve.agreements``, ``promptsieve.screening.calls`` and
  ``promptsieve.screening.tokens``.

It never records prompt or answer text. Importing this module without the extra raises
:class:`~promptsieve.ConfigError` naming it; nothing else in promptsieve imports it.
Attribute names: https://opentelemetry.io/docs/specs/semconv/gen-ai/ (GenAI spans).
"""

from __future__ import annotations

from typing import Any

from promptsieve._errors import missing_extra
from promptsieve._events import ComparisonEvent, RequestEvent

try:
    from opentelemetry import metrics, trace
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess test
    raise missing_extra("opentelemetry-api", "otel") from _exc

__all__ = ["OTelObserver"]

_SCOPE = "promptsieve"
_OPERATION = {
    "chat": "chat",
    "responses": "chat",
    "messages": "chat",
    "completions": "text_completion",
}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("promptsieve")
    except Exception:  # pragma: no cover - running from a tree without metadata
        return "0"


class OTelObserver:
    """Span attributes and metrics for every request and comparison (see module doc).

    ``tracer_provider`` / ``meter_provider``: default, the global ones
    (``opentelemetry.trace.set_tracer_provider`` etc.). ``own_spans``: open a
    ``promptsieve request`` span when the caller has no recording span (default True).
    """

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        own_spans: bool = True,
    ) -> None:
        version = _version()
        self._tracer = trace.get_tracer(_SCOPE, version, tracer_provider=tracer_provider)
        meter = metrics.get_meter(_SCOPE, version, meter_provider=meter_provider)
        self._own_spans = own_spans
        tok = "{token}"
        self._requests = meter.create_counter(
            "promptsieve.requests", unit="{request}", description="requests seen by the sieve"
        )
        self._before = meter.create_counter(
            "promptsieve.tokens.before", unit=tok, description="prompt tokens before compression"
        )
        self._after = meter.create_counter(
            "promptsieve.tokens.after", unit=tok, description="prompt tokens sent to the target"
        )
        self._saved = meter.create_counter(
            "promptsieve.tokens.saved", unit=tok, description="prompt tokens saved"
        )
        self._comparisons = meter.create_counter(
            "promptsieve.comparisons", unit="{comparison}", description="paired comparisons"
        )
        self._agreements = meter.create_counter(
            "promptsieve.agreements", unit="{comparison}", description="comparisons that agreed"
        )
        self._screen_calls = meter.create_counter(
            "promptsieve.screening.calls", unit="{call}", description="extra target calls spent"
        )
        self._screen_tokens = meter.create_counter(
            "promptsieve.screening.tokens", unit=tok, description="prompt tokens of those calls"
        )

    # -- requests -------------------------------------------------------------------------
    def on_request(self, event: RequestEvent) -> None:
        attrs = _request_attributes(event)
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(attrs)
        elif self._own_spans:
            with self._tracer.start_as_current_span(
                "promptsieve request", kind=trace.SpanKind.INTERNAL, attributes=attrs
            ):
                pass
        labels = _labels(event.task, event.target_model)
        labels["promptsieve.decision"] = event.decision or "none"
        labels["promptsieve.reason"] = event.reason
        self._requests.add(1, labels)
        base = _labels(event.task, event.target_model)
        self._before.add(event.tokens_before, base)
        self._after.add(event.tokens_after, base)
        self._saved.add(max(0, event.tokens_saved), base)

    # -- comparisons ----------------------------------------------------------------------
    def on_comparison(self, event: ComparisonEvent) -> None:
        attrs: dict[str, Any] = {
            "gen_ai.request.model": event.target_model,
            "promptsieve.comparison.kind": event.kind,
            "promptsieve.screening.calls": event.screening_calls,
            "promptsieve.screening.tokens": event.screening_tokens,
            **_present(
                {
                    "promptsieve.task": event.task,
                    "promptsieve.ratio": event.ratio,
                    "promptsieve.comparison.agreed": event.agreed,
                    "promptsieve.verdict.state": event.verdict_state,
                }
            ),
        }
        if event.agreed is None:
            attrs["promptsieve.comparison.error"] = True
        with self._tracer.start_as_current_span(
            "promptsieve comparison", kind=trace.SpanKind.INTERNAL, attributes=attrs
        ):
            pass
        labels = _labels(event.task, event.target_model)
        labels["promptsieve.comparison.kind"] = event.kind
        if event.agreed is not None:
            labels["promptsieve.comparison.agreed"] = event.agreed
            self._comparisons.add(1, labels)
            self._agreements.add(int(event.agreed), _labels(event.task, event.target_model))
        self._screen_calls.add(event.screening_calls, _labels(event.task, event.target_model))
        self._screen_tokens.add(event.screening_tokens, _labels(event.task, event.target_model))


def _labels(task: str | None, model: str) -> dict[str, Any]:
    return {"promptsieve.task": task or "", "gen_ai.request.model": model}


def _request_attributes(event: RequestEvent) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": _OPERATION.get(event.endpoint, event.endpoint),
        "gen_ai.request.model": event.target_model,
        "promptsieve.decision": event.decision or "none",
        "promptsieve.reason": event.reason,
        "promptsieve.tokens.before": event.tokens_before,
        "promptsieve.tokens.after": event.tokens_after,
        "promptsieve.tokens.saved": event.tokens_saved,
    }
    return attrs | _present(
        {
            "gen_ai.usage.input_tokens": event.input_tokens,
            "gen_ai.usage.output_tokens": event.output_tokens,
            "promptsieve.task": event.task,
            "promptsieve.ratio": event.ratio,
            "promptsieve.verdict.state": event.verdict_state,
        }
    )


def _present(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes that are set (OpenTelemetry attribute values cannot be None)."""
    return {k: v for k, v in attrs.items() if v is not None}
