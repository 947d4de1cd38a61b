"""Sieve observers end to end: a wrapped OpenAI client against a scripted server on
127.0.0.1, the real gate and SQLite store, OpenTelemetry's in-memory exporters and the
savings ledger — the figures they report match the sieve's own stats, and no prompt or
answer text reaches a span, a metric or the store file."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _ci import require_module

# ruff: noqa: E402 - the imports below follow the check that their extra is installed
require_module("opentelemetry.sdk", reason="the OpenTelemetry SDK (dev extra) is missing")

import openai
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from _scripted_server import Recorded, Reply, ScriptedServer, chat_completion, prompt_words
from _sieve_helpers import WordDropCompressor
from promptsieve import Sieve, SieveConfig
from promptsieve._report import read_report
from promptsieve.fidelity import Gate, GateConfig, SQLiteStore
from promptsieve.otel import OTelObserver
from promptsieve.savings import SavingsLedger
from promptsieve_openai import wrap_openai

SECRET = "ZEBRAQUOKKA"  # appears in every prompt and answer; must appear nowhere else
MODEL = "gpt-4o-mini"
# the target answers a short fixed text (with the secret) whatever the prompt: every
# comparison agrees, so the task passes screening and later requests go out compressed


def _messages(i: int) -> list[dict[str, Any]]:
    filler = " ".join(f"{SECRET} passage {i} sentence {k} about the harbour." for k in range(30))
    return [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": f"{filler}\n\nQuestion {i}: where is the harbour?"},
    ]


def _answer(rec: Recorded) -> Reply:
    return Reply(json=chat_completion(f"{SECRET} north", prompt_tokens=prompt_words(rec.json)))


@pytest.fixture()
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer(_answer) as srv:
        yield srv


@pytest.fixture()
def observed(tmp_path: Path) -> Iterator[Any]:
    spans = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    store_path = tmp_path / "verdicts.sqlite3"
    gate = Gate(SQLiteStore(store_path), GateConfig(tau=0.6, ratios=(0.5,), seed=3))
    sieve = Sieve(SieveConfig(task="harbour-qa", guard=False), compressor=WordDropCompressor(),
                  gate=gate)  # fmt: skip
    sieve.add_observer(OTelObserver(tracer_provider=tp, meter_provider=mp))
    ledger = sieve.add_observer(SavingsLedger(store_path, flush_interval_s=0))
    yield sieve, tp, spans, reader, store_path, ledger
    sieve.close()
    tp.shutdown()
    mp.shutdown()


def _totals(reader: InMemoryMetricReader) -> dict[str, float]:
    data = reader.get_metrics_data()
    assert data is not None
    out: dict[str, float] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = sum(p.value for p in m.data.data_points)  # type: ignore[union-attr]
                for p in m.data.data_points:
                    assert SECRET not in repr(p.attributes)
    return out


def _check(sieve: Sieve, spans: InMemorySpanExporter, reader: InMemoryMetricReader,
           store_path: Path, n: int) -> None:  # fmt: skip
    st = sieve.stats.snapshot()
    assert st["compressed"] > 0, st  # the task passed and compression was applied
    assert st["comparisons"] > 0 and st["agreements"] == st["comparisons"]
    finished = spans.get_finished_spans()
    calls = [s for s in finished if s.name == "caller"]
    comps = [s for s in finished if s.name == "promptsieve comparison"]
    assert len(calls) == n
    assert len(comps) == st["comparisons"]
    decisions = [dict(s.attributes or {})["promptsieve.decision"] for s in calls]
    assert decisions[0] == "shadow" and decisions[-1] == "apply"
    last = dict(calls[-1].attributes or {})
    assert last["promptsieve.verdict.state"] == "passed"
    assert last["gen_ai.usage.input_tokens"] == last["promptsieve.tokens.after"]
    assert last["promptsieve.tokens.after"] < last["promptsieve.tokens.before"]
    assert all(c.parent is not None for c in comps)  # children of the caller's span
    assert {dict(c.attributes or {})["promptsieve.verdict.state"] for c in comps} <= {
        "screening", "passed"}  # fmt: skip
    for s in finished:
        assert SECRET not in repr(dict(s.attributes or {})), s.name
    m = _totals(reader)
    assert m["promptsieve.requests"] == st["requests"] == n
    assert m["promptsieve.tokens.before"] == st["tokens_before"]
    assert m["promptsieve.tokens.after"] == st["tokens_after"]
    assert m["promptsieve.comparisons"] == st["comparisons"]
    assert m["promptsieve.screening.calls"] == st["screening_calls"]
    data = read_report(store_path)
    (task,) = data.tasks
    assert task.task == "harbour-qa" and task.state == "passed"
    assert (task.requests, task.compressed) == (n, st["compressed"])
    assert task.tokens_saved == st["tokens_before"] - st["tokens_after"] > 0
    assert task.screening_calls == st["screening_calls"]
    for f in store_path.parent.iterdir():
        assert SECRET.encode() not in f.read_bytes(), f.name


def test_sync_client(server: ScriptedServer, observed: Any) -> None:
    sieve, tp, spans, reader, store_path, ledger = observed
    client = wrap_openai(openai.OpenAI(base_url=server.url, api_key="x", max_retries=0), sieve)
    tracer = tp.get_tracer("app")
    n = 14
    for i in range(n):
        with tracer.start_as_current_span("caller"):
            r = client.chat.completions.create(model=MODEL, messages=_messages(i))
        assert SECRET in (r.choices[0].message.content or "")
        assert sieve.flush(10)  # one comparison at a time: the test's order is deterministic
    ledger.flush()
    _check(sieve, spans, reader, store_path, n)


def test_async_client(server: ScriptedServer, observed: Any) -> None:
    sieve, tp, spans, reader, store_path, ledger = observed
    client = wrap_openai(openai.AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0), sieve)
    tracer = tp.get_tracer("app")
    n = 14

    async def run() -> None:
        for i in range(n):
            with tracer.start_as_current_span("caller"):
                await client.chat.completions.create(model=MODEL, messages=_messages(i))
            assert await sieve.aflush(10)

    asyncio.run(run())
    ledger.flush()
    _check(sieve, spans, reader, store_path, n)
