"""Nothing persists or logs prompt text: a canary planted in every prompt of a wrapper run is
found nowhere afterwards, not in the cache directory, the verdict store, the logs at DEBUG
(tracebacks included) or the messages of exceptions that reached the caller.

The run is a real one: the real proxy, shadow screening (verify=True) with a SQLite store and
a fixed-ratio sieve, both through ``wrap_openai`` against a scripted server on 127.0.0.1, with
faults on the way (target 500s on live and shadow calls, an invalid prompt, a failing
compressor).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from _scripted_server import Recorded, Reply, ScriptedServer, default_responder, error
from promptsieve.compressor import Compressor, CompressorConfig
from promptsieve.proxy import Proxy
from promptsieve.sieve import Sieve, SieveConfig
from promptsieve_openai import wrap_openai

CANARY = "CANARY-q7ZX-4815162342-PRIVATE"
MODEL = "gpt-4o-mini"


def _prompt(i: int) -> str:
    return (
        f"Record {i}. The customer {CANARY} asked about the refund policy for order number "
        f"{1000 + i}. Our support team explained that refunds take about five business days, "
        "and that the original payment method is credited. The customer also mentioned a "
        "delayed parcel and a damaged box, which the team logged for the courier.\n\n"
        f"Question: how long does a refund take for {CANARY}?"
    )


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buf
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def _flaky(rec: Recorded) -> Reply:
    """Every 4th request fails with a 500 (live or shadow), the rest answer "ok"."""
    if len(rec.body) % 4 == 0:
        return error(500, "upstream exploded")
    return default_responder(rec)


def _files(root: Path) -> Iterator[Path]:
    yield from (p for p in root.rglob("*") if p.is_file())


def test_canary_is_found_nowhere_after_a_wrapper_run(
    proxy: Proxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    debug_log: io.StringIO,
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("PROMPTSIEVE_CACHE_DIR", str(cache))
    store = tmp_path / "verdicts.sqlite3"
    comp = Compressor(CompressorConfig(model="gpt-4o"), proxy=proxy)
    screening = Sieve(SieveConfig(store_path=str(store), scoring_budget_ms=30_000), compressor=comp)
    fixed = Sieve(
        SieveConfig(verify=False, ratio=0.5, guard=False, scoring_budget_ms=30_000),
        compressor=comp,
    )
    errors: list[str] = []
    with ScriptedServer(_flaky) as server:
        for sieve in (screening, fixed):
            client = wrap_openai(OpenAI(base_url=server.url, api_key="x", max_retries=0), sieve)
            prompts = [_prompt(i) for i in range(12)]
            prompts.append(f"bad \ud83d text {CANARY} " + _prompt(99))  # ConfigError inside
            for text in prompts:
                messages = [
                    {"role": "system", "content": f"Be brief. Tag: {CANARY}"},
                    {"role": "user", "content": text},
                ]
                try:
                    client.chat.completions.create(model=MODEL, messages=messages)
                except Exception as exc:  # the target's own 500s reach the caller
                    errors.append(f"{type(exc).__name__}: {exc}")
            assert sieve.flush(60)
            sieve.close()
        sent = [b for b in server.bodies() if b]
    assert any(CANARY in str(b) for b in sent)  # the canary did travel to the target
    assert errors, "the fault injection produced no error to inspect"
    assert fixed.stats.errors >= 1  # the invalid prompt was absorbed (fail open)
    assert fixed.stats.compressed >= 1  # compressed text went through the wrapper
    assert screening.stats.comparisons + screening.stats.comparison_errors >= 1  # shadow ran
    assert store.exists() and store.stat().st_size > 0  # the verdict store was written

    found: list[str] = []
    for path in [*_files(cache), *_files(tmp_path)]:
        data = path.read_bytes()
        if CANARY.encode() in data or CANARY.encode("utf-16-le") in data:
            found.append(str(path))
    log_text = debug_log.getvalue()
    assert "promptsieve" in log_text  # DEBUG logging was really captured
    if CANARY in log_text:
        found.append("log: " + log_text[max(0, log_text.index(CANARY) - 200) :][:400])
    found += [e for e in errors if CANARY in e]
    for sieve in (screening, fixed):
        if CANARY in repr(sieve.stats):
            found.append("stats")
    assert not found, found
