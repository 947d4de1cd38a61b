"""promptsieve[otel]: span attributes and metrics, checked with the SDK's in-memory exporters."""

from __future__ import annotations

import contextvars
import subprocess
import sys
import textwrap
import threading
from typing import Any

import pytest

from _ci import require_module

# ruff: noqa: E402 - the imports below follow the check that their extra is installed
require_module("opentelemetry.sdk", reason="the OpenTelemetry SDK (dev extra) is missing")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from promptsieve._events import ComparisonEvent, RequestEvent, SieveObserver, notify
from promptsieve.otel import OTelObserver


@pytest.fixture()
def otel() -> Any:
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    obs = OTelObserver(tracer_provider=tp, meter_provider=mp)
    yield obs, tp, spans, reader
    tp.shutdown()
    mp.shutdown()


def _sums(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    out: dict[str, list[tuple[dict[str, Any], float]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "promptsieve"
            for m in sm.metrics:
                out[m.name] = [(dict(p.attributes or {}), p.value) for p in m.data.data_points]
    return out


APPLIED = RequestEvent("qa", "gpt-4o-mini", "chat", "apply", "applied", 0.5, 1200, 700,
                       input_tokens=700, output_tokens=12, verdict_state="passed")  # fmt: skip


def test_observer_fits_the_protocol(otel: Any) -> None:
    assert isinstance(otel[0], SieveObserver)


def test_attributes_go_on_the_callers_span(otel: Any) -> None:
    obs, tp, spans, _ = otel
    tracer = tp.get_tracer("app")
    with tracer.start_as_current_span("chat gpt-4o-mini"):
        notify([obs], APPLIED)
    (span,) = spans.get_finished_spans()  # no span of its own: the caller's got the attributes
    a = dict(span.attributes or {})
    assert span.name == "chat gpt-4o-mini"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o-mini"
    assert a["gen_ai.usage.input_tokens"] == 700
    assert a["gen_ai.usage.output_tokens"] == 12
    assert a["promptsieve.decision"] == "apply"
    assert a["promptsieve.verdict.state"] == "passed"
    assert (a["promptsieve.tokens.before"], a["promptsieve.tokens.after"]) == (1200, 700)
    assert a["promptsieve.tokens.saved"] == 500
    assert a["promptsieve.ratio"] == 0.5 and a["promptsieve.task"] == "qa"


def test_without_a_span_it_opens_its_own(otel: Any) -> None:
    obs, _, spans, _ = otel
    ev = RequestEvent("qa", "m", "completions", "bypass", "bypass", None, 50, 50)
    obs.on_request(ev)
    (span,) = spans.get_finished_spans()
    a = dict(span.attributes or {})
    assert span.name == "promptsieve request"
    assert a["gen_ai.operation.name"] == "text_completion"
    assert "gen_ai.usage.input_tokens" not in a  # not reported: not made up


def test_comparison_span_is_a_child_of_the_callers_span(otel: Any) -> None:
    obs, tp, spans, _ = otel
    tracer = tp.get_tracer("app")
    ev = ComparisonEvent("qa", "gpt-4o-mini", "shadow", 0.5, True, 1, 600,
                         verdict_state="screening")  # fmt: skip
    with tracer.start_as_current_span("chat") as parent:
        ctx = contextvars.copy_context()  # what the sieve carries to its background thread
        t = threading.Thread(target=ctx.run, args=(notify, [obs], ev))
        t.start()
        t.join()
    comp, call = sorted(
        spans.get_finished_spans(), key=lambda s: s.name != "promptsieve comparison"
    )
    assert comp.name == "promptsieve comparison"
    assert comp.parent is not None and comp.parent.span_id == parent.get_span_context().span_id
    a = dict(comp.attributes or {})
    assert a["promptsieve.comparison.agreed"] is True
    assert a["promptsieve.comparison.kind"] == "shadow"
    assert (a["promptsieve.screening.calls"], a["promptsieve.screening.tokens"]) == (1, 600)
    assert a["promptsieve.verdict.state"] == "screening"
    assert call.name == "chat"


def test_metrics(otel: Any) -> None:
    obs, _, _, reader = otel
    obs.on_request(APPLIED)
    obs.on_request(APPLIED)
    obs.on_request(RequestEvent("qa", "gpt-4o-mini", "chat", "shadow", "shadow", 0.5, 900, 900))
    obs.on_comparison(ComparisonEvent("qa", "gpt-4o-mini", "shadow", 0.5, True, 1, 450))
    obs.on_comparison(ComparisonEvent("qa", "gpt-4o-mini", "shadow", 0.5, False, 1, 450))
    obs.on_comparison(ComparisonEvent("qa", "gpt-4o-mini", "shadow", 0.5, None, 1, 450))
    m = _sums(reader)
    total = {name: sum(v for _, v in pts) for name, pts in m.items()}
    assert total["promptsieve.requests"] == 3
    assert total["promptsieve.tokens.before"] == 1200 * 2 + 900
    assert total["promptsieve.tokens.after"] == 700 * 2 + 900
    assert total["promptsieve.tokens.saved"] == 1000
    assert total["promptsieve.comparisons"] == 2  # the target error is not a comparison
    assert total["promptsieve.agreements"] == 1
    assert total["promptsieve.screening.calls"] == 3
    assert total["promptsieve.screening.tokens"] == 1350
    decisions = {p[0]["promptsieve.decision"]: p[1] for p in m["promptsieve.requests"]}
    assert decisions == {"apply": 2, "shadow": 1}


def test_a_failing_observer_never_reaches_the_caller(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def on_request(self, event: RequestEvent) -> None:
            raise RuntimeError("boom")

        def on_comparison(self, event: ComparisonEvent) -> None:
            raise RuntimeError("boom")

    notify([Broken()], APPLIED)
    notify([Broken()], ComparisonEvent("qa", "m", "shadow", 0.5, True, 1, 1))
    assert "observer Broken raised RuntimeError" in caplog.text


def test_nothing_is_imported_without_the_extra() -> None:
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        import promptsieve, promptsieve.cli, promptsieve.savings, promptsieve_openai
        assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported"
        class _Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opentelemetry":
                    raise ModuleNotFoundError(name, name=name)
        sys.meta_path.insert(0, _Absent())
        from promptsieve import ConfigError
        try:
            import promptsieve.otel
        except ConfigError as exc:
            print("MSG", exc)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "promptsieve[otel]" in r.stdout
