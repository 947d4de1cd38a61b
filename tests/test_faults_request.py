"""Request-path faults (issue #14.6), with real components throughout.

The real proxy (ONNX graphs on onnxruntime, exported once per session), a real ``openai``
client wrapped with ``wrap_openai`` against the scripted server on 127.0.0.1, a real SQLite
verdict store. For each fault: every user call succeeds (zero user-visible failures), the
original prompt goes out, the fault is counted once per request in ``SieveStats`` and no
count is lost (requests, decisions, comparisons and the store's own counts add up).

Faults: a missing or corrupt proxy export (encoder or scorer graph), onnxruntime raising
while scoring, a scoring timeout, and target 5xx / timeouts / connection resets on the
*shadow* (background) calls. Store-side faults are in ``tests/test_faults_store.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import struct
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI

from _scripted_server import Recorded, Reply, ScriptedServer, chat_completion, error
from _sieve_helpers import long_text
from promptsieve import Sieve, SieveConfig
from promptsieve.compressor import Compressor, CompressorConfig
from promptsieve.fidelity import GateConfig, SQLiteStore
from promptsieve.proxy import Proxy, ProxyConfig
from promptsieve_openai import wrap_openai

MODEL = "gpt-4o-mini"
RESET = "x-test-reset"  # a Reply header the server below turns into a TCP reset


class FaultyServer(ScriptedServer):
    """The scripted server, plus connection resets: a reply carrying the ``RESET`` header
    is answered by closing the socket with SO_LINGER 0 (the peer reads ECONNRESET)."""

    def __init__(self) -> None:
        super().__init__()
        self.resets = 0

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        base: Any = super()._handler_class()
        server = self

        class Handler(base):
            def _send_json(self, reply: Reply) -> None:
                if RESET in reply.headers:
                    server.resets += 1
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                with contextlib.suppress(OSError):  # a client that timed out has gone
                    super()._send_json(reply)

            def finish(self) -> None:
                with contextlib.suppress(OSError, ValueError):  # the socket we reset
                    super().finish()

        return Handler


def _prompts(n: int, tag: str) -> list[str]:
    return [f"Request {tag}-{i}. " + long_text(4) for i in range(n)]


def _content(rec: Recorded) -> str:
    return str(rec.json["messages"][0]["content"])


def _assert_quiet_logs(caplog: pytest.LogCaptureFixture, prompts: list[str]) -> None:
    """Each fault type is logged once, and never with prompt text."""
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == len(set(warnings)), warnings
    for p in prompts:
        assert p[:30] not in caplog.text


@pytest.fixture
def server() -> Iterator[FaultyServer]:
    srv = FaultyServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def scorer_dir(proxy: Proxy) -> Path:
    _ = proxy.scorer_session  # export the scorer graph once (cached for the session)
    assert proxy.scorer_dir is not None
    return proxy.scorer_dir


def _send_all(client: OpenAI, prompts: list[str], sieve: Sieve | None = None) -> None:
    for p in prompts:
        out = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}])
        assert out.choices[0].message.content == "ok"  # the user's call succeeds
        if sieve is not None:
            assert sieve.flush(30)


async def _asend_all(client: AsyncOpenAI, prompts: list[str], sieve: Sieve | None = None) -> None:
    for p in prompts:
        out = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": p}]
        )
        assert out.choices[0].message.content == "ok"
        if sieve is not None:
            assert await sieve.aflush(30)


# ---------------------------------------------------------------------------- proxy export


def _broken_export(kind: str, proxy: Proxy, scorer_dir: Path, root: Path) -> Path:
    """A prebuilt proxy folder (as `promptsieve export --out` writes it) with one fault."""
    root.mkdir()
    if kind == "missing-folder":
        return root  # nothing in it
    enc = root / proxy.export_dir.name
    shutil.copytree(proxy.export_dir, enc, ignore=shutil.ignore_patterns(".lock"))
    scorer = root / scorer_dir.name
    shutil.copytree(scorer_dir, scorer, ignore=shutil.ignore_patterns(".lock"))
    if kind == "missing-model":
        (enc / "model.onnx").unlink()
    elif kind == "corrupt-encoder":
        (enc / "model.onnx").write_bytes(b"\x08\x07not a protobuf" * 512)
    elif kind == "truncated-encoder":
        data = (enc / "model.onnx").read_bytes()
        (enc / "model.onnx").write_bytes(data[: len(data) // 2])
    elif kind == "corrupt-scorer":
        (scorer / "model.onnx").write_bytes(b"\x00garbage\xff" * 512)
    else:  # pragma: no cover
        raise AssertionError(kind)
    return root


@pytest.mark.parametrize(
    "kind",
    ["missing-folder", "missing-model", "corrupt-encoder", "truncated-encoder", "corrupt-scorer"],
)
def test_broken_proxy_export_sends_originals(
    kind: str,
    proxy: Proxy,
    scorer_dir: Path,
    tmp_path: Path,
    server: FaultyServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    prebuilt = _broken_export(kind, proxy, scorer_dir, tmp_path / "prebuilt")
    # the user's defaults (screening with a real SQLite store), graphs read from the folder
    config = SieveConfig(
        task="faults",
        store_path=str(tmp_path / "verdicts.sqlite3"),
        scoring_budget_ms=60_000,  # a loaded CI box: the fault, not the budget, must show
        compressor=CompressorConfig(proxy=ProxyConfig(proxy_dir=prebuilt)),
    )
    prompts = _prompts(3, kind)
    with Sieve(config) as sieve:
        client = wrap_openai(OpenAI(base_url=server.url, api_key="x", max_retries=0), sieve)
        _send_all(client, prompts, sieve)
        stats = sieve.stats.snapshot()
    live = [r for r in server.requests if _content(r) in prompts]
    assert [_content(r) for r in live] == prompts  # every original went out, in order
    assert len(server.requests) == len(prompts)  # nothing compressed was ever sent
    assert stats["requests"] == 3 and stats["compressed"] == 0
    assert stats["errors"] == 3  # each request's fault counted once
    assert stats["timeouts"] == 0 and stats["warming"] == 0
    assert stats["comparisons"] == 0 and stats["screening_calls"] == 0
    assert stats["comparisons_skipped"] == 0 and stats["comparisons_abandoned"] == 0
    # the compressor (encoder and scorer graphs) is built before the gate is asked
    assert sum(stats["decisions"].values()) == 0
    assert stats["tokens_before"] == stats["tokens_after"]
    _assert_quiet_logs(caplog, prompts)


# ---------------------------------------------------------------------------- onnxruntime


@pytest.fixture
def raising_proxy(proxy_cache_dir: Path, scorer_dir: Path) -> Proxy:
    """A real proxy whose scorer and encoder sessions are real onnxruntime sessions of each
    other's graph: every scoring pass (the head's scorer graph, the default sentence scorer's
    encoder) makes onnxruntime raise."""
    bad = Proxy.load(ProxyConfig(cache_dir=proxy_cache_dir))
    _ = bad.scorer_session
    bad._scorer, bad._session = bad._session, bad._scorer  # the fault under test
    for scoring in (lambda: bad.keep_probs("one two three four five"), lambda: bad.embed(["a"])):
        with pytest.raises(Exception) as info:
            scoring()
        assert type(info.value).__module__.startswith("onnxruntime"), type(info.value)
    return bad


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_onnxruntime_raising_sends_originals(
    driver: str,
    raising_proxy: Proxy,
    server: FaultyServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sieve = Sieve(
        SieveConfig(verify=False, ratio=0.5, scoring_budget_ms=60_000),
        compressor=Compressor(CompressorConfig(), proxy=raising_proxy),
    )
    prompts = _prompts(4, f"ort-{driver}")
    try:
        if driver == "sync":
            client = wrap_openai(OpenAI(base_url=server.url, api_key="x", max_retries=0), sieve)
            _send_all(client, prompts)
        else:
            client = wrap_openai(AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0),
                                 sieve)  # fmt: skip
            asyncio.run(_asend_all(client, prompts))
    finally:
        sieve.close()
    assert [_content(r) for r in server.requests] == prompts
    s = sieve.stats.snapshot()
    assert s["requests"] == 4 and s["errors"] == 4 and s["compressed"] == 0
    assert s["timeouts"] == 0 and s["decisions"]["apply"] == 4
    assert s["tokens_before"] == s["tokens_after"] > 0
    _assert_quiet_logs(caplog, prompts)


# ---------------------------------------------------------------------------- scoring timeout


@pytest.mark.parametrize("driver", ["sync", "async"])
def test_scoring_timeout_on_the_real_proxy_sends_originals(
    driver: str, proxy: Proxy, tmp_path: Path, server: FaultyServer
) -> None:
    """A passed verdict in a real SQLite store says APPLY; the real proxy cannot score a
    long prompt in 1 ms, so every request times out and goes out unchanged."""
    from promptsieve.fidelity.store import Verdict, VerdictState

    compressor = Compressor(CompressorConfig(), proxy=proxy)
    sieve = Sieve(
        SieveConfig(task="faults", scoring_budget_ms=1, store_path=str(tmp_path / "v.sqlite3"),
                    gate=GateConfig(monitor_rate=0.0)),
        compressor=compressor,
    )  # fmt: skip
    key = sieve.verdict_key("faults", MODEL)
    now = time.time()
    store: Any = getattr(sieve.gate, "store")  # noqa: B009 - the default Gate's (GateLike has none)
    store.put(
        key,
        Verdict(state=VerdictState.PASSED, ratio=0.5, testing=None, created_at=now,
                updated_at=now, expires_at=now + 3600, generation=1),
        expected_version=None,
    )  # fmt: skip
    prompts = [p + " " + long_text(20) for p in _prompts(3, f"timeout-{driver}")]
    try:
        if driver == "sync":
            client = wrap_openai(OpenAI(base_url=server.url, api_key="x", max_retries=0), sieve)
            _send_all(client, prompts)
        else:
            aclient = wrap_openai(AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0),
                                  sieve)  # fmt: skip
            asyncio.run(_asend_all(aclient, prompts))
        assert sieve.flush(60)  # the late compressions finish (or were cancelled) quietly
    finally:
        sieve.close()
    assert [_content(r) for r in server.requests] == prompts
    s = sieve.stats.snapshot()
    assert s["requests"] == 3 and s["decisions"]["apply"] == 3
    assert s["timeouts"] == 3 and s["errors"] == 3  # counted once each (a timeout is an error)
    assert s["compressed"] == 0 and s["tokens_before"] == s["tokens_after"] > 0
    assert s["comparisons"] == 0 and s["screening_calls"] == 0


# ---------------------------------------------------------------------------- shadow target faults


def _fault_reply(fault: str) -> Reply:
    if fault == "500":
        return error(500, "internal error")
    if fault == "503":
        return error(503, "overloaded")
    if fault == "timeout":
        return Reply(json=chat_completion("late"), delay=6.0)  # the client gives up at 2 s
    return Reply(headers={RESET: "1"})


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("fault", ["500", "503", "timeout", "reset"])
def test_shadow_target_faults_are_counted_and_never_reach_the_user(
    fault: str,
    driver: str,
    proxy: Proxy,
    tmp_path: Path,
    server: FaultyServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Screening (a fresh task in a real SQLite store): the live call sends the original, the
    background call sends the compressed variant, and the target fails that one. Then the
    target heals, and the next comparisons count: the faulty ones freed their slots."""
    prompts = _prompts(3, f"{fault}-{driver}")
    healed = _prompts(2, f"healed-{fault}-{driver}")
    originals = set(prompts) | set(healed)
    broken = [True]
    server.responder = lambda rec: (
        _fault_reply(fault)
        if broken[0] and _content(rec) not in originals
        else Reply(json=chat_completion("ok"))
    )
    store_path = tmp_path / "verdicts.sqlite3"
    sieve = Sieve(
        SieveConfig(task="faults", store_path=str(store_path), scoring_budget_ms=60_000,
                    guard=False),
        compressor=Compressor(CompressorConfig(), proxy=proxy),
    )  # fmt: skip
    kw: dict[str, Any] = {"base_url": server.url, "api_key": "x", "max_retries": 0, "timeout": 2.0}
    try:
        if driver == "sync":
            client = wrap_openai(OpenAI(**kw), sieve)
            _send_all(client, prompts, sieve)
            broken[0] = False
            _send_all(client, healed, sieve)
        else:
            aclient = wrap_openai(AsyncOpenAI(**kw), sieve)

            async def run() -> None:
                await _asend_all(aclient, prompts, sieve)
                broken[0] = False
                await _asend_all(aclient, healed, sieve)

            asyncio.run(run())
        key = sieve.verdict_key("faults", MODEL)
    finally:
        sieve.close()

    reqs = server.requests
    live = [_content(r) for r in reqs if _content(r) in originals]
    assert live == prompts + healed  # the originals went out live, untouched, in order
    variants = [r for r in reqs if _content(r) not in originals]
    assert len(variants) == 5  # one compressed background call per request
    assert all(len(_content(v)) < len(long_text(4)) for v in variants)
    if fault == "reset":
        assert server.resets == 3

    s = sieve.stats.snapshot()
    assert s["requests"] == 5 and s["decisions"]["shadow"] == 5
    assert s["screening_calls"] == 5
    assert s["comparison_errors"] == 3  # each fault counted once ...
    assert s["errors"] == 0  # ... and only there: it is the target's, not ours
    assert s["comparisons"] == 2 and s["agreements"] == 2
    assert s["comparisons_skipped"] == 0 and s["comparisons_abandoned"] == 0
    # the store counted exactly the two good comparisons: no fault became a disagreement
    store = SQLiteStore(store_path)
    try:
        verdict = store.get(key)
        assert verdict is not None and verdict.testing is not None
        counts = verdict.counts_at(verdict.testing)
        assert (counts.n, counts.agree) == (2, 2)
    finally:
        store.close()
    _assert_quiet_logs(caplog, prompts + healed)


# ---------------------------------------------------------------------------- fork


def test_gate_lock_held_at_fork_does_not_deadlock_the_child(tmp_path: Path) -> None:
    """Another thread holds the gate's lock when the process forks: the child's gate gets
    a fresh lock (and no parent in-flight slots), so its first decide() returns."""
    import os
    import signal
    import threading

    from promptsieve.fidelity import Action, Gate, VerdictKey

    gate = Gate(SQLiteStore(tmp_path / "verdicts.sqlite3"))
    key = VerdictKey("fork", MODEL, "fp", "settings")
    assert gate.decide(key).action is Action.SHADOW  # a slot in flight in the parent
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with gate._lock:
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    assert held.wait(10)
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if decide() returns
        signal.alarm(20)
        try:
            ok = gate.decide(VerdictKey("fork-child", MODEL, "fp", "settings")).action
            os._exit(0 if ok is Action.SHADOW and not gate._in_flight.get(("x", 0, 0.0)) else 3)
        except BaseException:
            os._exit(4)
    release.set()
    t.join(10)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
