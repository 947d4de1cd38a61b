"""Store-side faults on real SQLite files and a real redis-server.

For every fault: the store raises ``StoreError`` (never a driver exception), within its
timeout; the gate absorbs it (``decide`` -> BYPASS, ``record`` drops the comparison), counting
it once in ``Gate.store_errors``; the counts written before the fault are intact and the store
works again once the fault is gone. Through ``wrap_openai`` the user's call succeeds with the
original prompt. Faults: SQLite locked, corrupt, read-only and full (``max_page_count``
simulates a full disk; root ignores file modes, so read-only opens the file ``mode=ro``),
Redis down, slow (a server that never answers) and restarted mid-run, ``kill -9`` of a writer
mid-write, and 8 processes x 8 threads (sync and asyncio) against one store.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _redis_server import RedisServer, free_port, redis_exe
from promptsieve import StoreError
from promptsieve.fidelity import Action, Gate, RedisStore, SQLiteStore, VerdictKey

KEY = VerdictKey("faults", "target-model", "proxy-fp", "settings")
RATIO = 0.5


def _state(store: Any) -> tuple[int, float]:
    """The screening generation and ratio under test the gate created for KEY."""
    v = store.get(KEY)
    assert v is not None and v.testing is not None
    return int(v.generation), float(v.testing)


def _count(store: Any, gen: int, ratio: float) -> tuple[int, int]:
    v = store.get(KEY)
    assert v is not None and v.generation == gen
    c = v.counts_at(ratio)
    return c.n, c.agree


def _assert_absorbed(
    gate: Gate, ratio: float, calls: Callable[[], None] | None = None, faults: int = 2
) -> None:
    """decide + record under the fault: no exception, BYPASS, each fault counted."""
    before = gate.store_errors
    t0 = time.monotonic()
    decision = gate.decide(VerdictKey("fresh-task", "target-model", "proxy-fp", "settings"))
    assert decision.action is Action.BYPASS
    gate.record(KEY, ratio, True)  # a shadow result arriving under the fault
    if calls is not None:
        calls()
    assert gate.store_errors - before == faults
    assert time.monotonic() - t0 < 10


# ---------------------------------------------------------------------------- SQLite


def _sqlite(tmp_path: Path, **kw: Any) -> tuple[SQLiteStore, Gate]:
    store = SQLiteStore(tmp_path / "verdicts.sqlite3", **kw)
    gate = Gate(store)
    gate.decide(KEY)  # creates the screening verdict
    return store, gate


def test_sqlite_locked(tmp_path: Path) -> None:
    store, gate = _sqlite(tmp_path, busy_timeout_s=0.2)
    gen, ratio = _state(store)
    store.record(KEY, gen, ratio, True)
    locker = sqlite3.connect(store.path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            store.record(KEY, gen, ratio, True)
        assert time.monotonic() - t0 < 2.0
        _assert_absorbed(gate, ratio)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert store.record(KEY, gen, ratio, False).n == 2  # the failed writes left no trace
    assert _count(store, gen, ratio) == (2, 1)


def test_sqlite_corrupt(tmp_path: Path) -> None:
    store, gate = _sqlite(tmp_path)
    _, ratio = _state(store)
    store.close()
    size = store.path.stat().st_size
    with store.path.open("r+b") as f:  # garbage over the header and the first pages
        f.write(os.urandom(min(size, 8192)))
    for p in store.path.parent.glob("verdicts.sqlite3-*"):
        p.unlink()
    with pytest.raises(StoreError):
        SQLiteStore(store.path)
    with pytest.raises(StoreError):
        store.get(KEY)
    _assert_absorbed(gate, ratio)


def test_sqlite_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, gate = _sqlite(tmp_path)
    gen, ratio = _state(store)
    store.record(KEY, gen, ratio, True)
    store.close()
    real_connect = sqlite3.connect

    def read_only(path: Any, *args: Any, **kw: Any) -> sqlite3.Connection:
        return real_connect(f"file:{path}?mode=ro", *args, uri=True, **kw)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    with pytest.raises(StoreError, match=r"readonly|read-only|unable to open"):
        store.record(KEY, gen, ratio, True)
    _assert_absorbed(gate, ratio)
    monkeypatch.setattr(sqlite3, "connect", real_connect)
    store.close()
    assert store.record(KEY, gen, ratio, True).n == 2


def test_sqlite_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, gate = _sqlite(tmp_path)
    gen, ratio = _state(store)
    store.record(KEY, gen, ratio, True)
    store.close()
    real_conn = SQLiteStore._conn

    def capped(self: SQLiteStore) -> sqlite3.Connection:
        conn = real_conn(self)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # not one page more: "disk full"
        return conn

    monkeypatch.setattr(SQLiteStore, "_conn", capped)
    verdict = store.get(KEY)
    assert verdict is not None
    full = {"counts": 0, "verdicts": 0}
    for i in range(20_000):  # fill both tables until not even a small row fits
        key = VerdictKey(f"f{i}", "m", "p", "s")
        for table, write in (
            ("counts", lambda k=key: store.record(k, 1, RATIO, True)),
            ("verdicts", lambda k=key: store.put(k, verdict, expected_version=None)),
        ):
            if full[table] < 3:
                try:
                    write()
                except StoreError as exc:
                    assert "full" in str(exc)
                    full[table] += 1
        if min(full.values()) >= 3:
            break
    assert min(full.values()) >= 3, f"the capped database never filled up: {full}"
    # a full disk refuses new rows; counts of a running test update in place and go on
    _assert_absorbed(gate, ratio, lambda: gate.record(KEY, ratio, False), faults=1)
    monkeypatch.setattr(SQLiteStore, "_conn", real_conn)
    store.close()
    assert _count(store, gen, ratio)[0] >= 1  # the count written before the fault is intact
    assert sqlite3.connect(store.path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


_KILL_CHILD = textwrap.dedent(
    """
    import sys, threading
    from promptsieve.fidelity import SQLiteStore, VerdictKey
    store = SQLiteStore(sys.argv[1])
    key = VerdictKey("faults", "target-model", "proxy-fp", "settings")
    lock = threading.Lock()
    def work(t):
        i = 0
        while True:
            store.record(key, 1, 0.5, i % 2 == 0)
            with lock:
                sys.stdout.write(f"{t} {i % 2 == 0}\\n")
                sys.stdout.flush()
            i += 1
    for t in range(4):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def test_kill_9_mid_write_leaves_a_consistent_store(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.sqlite3"
    SQLiteStore(path).close()
    child = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    acked: list[str] = []
    deadline = time.monotonic() + 60
    while len(acked) < 300 and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        acked.append(line)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    acked += child.stdout.read().splitlines(keepends=True)  # acknowledged before the kill
    assert len(acked) >= 300, "the writer did not get going"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    store = SQLiteStore(path)
    rows = store._conn().execute("SELECT n, agree FROM counts").fetchall()
    assert len(rows) == 1
    n, agree = rows[0]
    agreed_acked = sum(1 for a in acked if a.split()[1] == "True")
    # every acknowledged write is there; at most one unacknowledged write per thread more
    assert len(acked) <= n <= len(acked) + 4
    assert agreed_acked <= agree <= agreed_acked + 4 and agree <= n
    assert store.record(KEY, 1, RATIO, True).n == n + 1  # and it takes writes again


PROCS, THREADS, CALLS = 8, 8, 40


def _hammer(kind: str, target: str, proc: int, results: Any) -> None:
    """One process: 4 sync threads and 4 asyncio tasks (to_thread), CALLS records each.

    The timeouts are wide: this counts lost writes, not latency, and 64 writers on a 2-core
    machine (Redis fsyncing every write) can wait past the stores' defaults."""
    store: Any = (
        SQLiteStore(target, busy_timeout_s=60)
        if kind == "sqlite"
        else RedisStore(target, prefix="hammer:", socket_timeout_s=30)
    )
    errors = 0

    def one(i: int) -> None:
        nonlocal errors
        try:
            store.record(KEY, 1, RATIO, i % 3 == 0)
        except StoreError:
            errors += 1

    def thread() -> None:
        for i in range(CALLS):
            one(i)

    async def tasks() -> None:
        async def task() -> None:
            for i in range(CALLS):
                await asyncio.to_thread(one, i)

        await asyncio.gather(*(task() for _ in range(THREADS // 2)))

    ts = [threading.Thread(target=thread) for _ in range(THREADS // 2)]
    for t in ts:
        t.start()
    asyncio.run(tasks())
    for t in ts:
        t.join()
    results.put((proc, errors))


def _run_hammer(kind: str, target: str) -> tuple[float, int]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(kind, target, p, results)) for p in range(PROCS)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    errors = sum(results.get(timeout=300)[1] for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return time.perf_counter() - t0, errors


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_8_processes_x_8_threads_lose_no_counts(kind: str, tmp_path: Path, request: Any) -> None:
    target = (
        str(tmp_path / "verdicts.sqlite3")
        if kind == "sqlite"
        else request.getfixturevalue("redis_server").url
    )
    store: Any = SQLiteStore(target) if kind == "sqlite" else RedisStore(target, prefix="hammer:")
    seconds, errors = _run_hammer(kind, target)
    total = PROCS * THREADS * CALLS
    c = store.record(KEY, 1, RATIO, False)  # one more write reads the totals back
    assert errors == 0
    assert (c.n, c.agree) == (total + 1, PROCS * THREADS * len(range(0, CALLS, 3)))
    print(f"\n{kind}: {total} records from {PROCS}x{THREADS} in {seconds:.1f} s")


# ---------------------------------------------------------------------------- Redis


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_exe(), tmp_path, persistent=True)
    server.start()
    yield server
    server.stop()


def test_redis_down(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="down:", socket_timeout_s=0.5)
    gate = Gate(store)
    gate.decide(KEY)
    gen, ratio = _state(store)
    store.record(KEY, gen, ratio, True)
    redis_server.stop()
    t0 = time.monotonic()
    with pytest.raises(StoreError):
        store.record(KEY, gen, ratio, True)
    assert time.monotonic() - t0 < 3
    _assert_absorbed(gate, ratio)


def test_redis_slow() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections, never answers
    try:
        port = silent.getsockname()[1]
        store = RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout_s=0.3)
        t0 = time.monotonic()
        with pytest.raises(StoreError):
            store.get(KEY)
        assert time.monotonic() - t0 < 3
        _assert_absorbed(Gate(store), 0.5)
    finally:
        silent.close()


def test_redis_restarted_mid_run(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="restart:", socket_timeout_s=0.5)
    gate = Gate(store)
    gate.decide(KEY)
    gen, ratio = _state(store)
    for i in range(50):
        store.record(KEY, gen, ratio, i % 2 == 0)
    redis_server.stop()
    failed = 0
    for _ in range(5):  # writes while it is down: refused, never half-counted
        try:
            store.record(KEY, gen, ratio, True)
        except StoreError:
            failed += 1
    assert failed == 5
    redis_server.start()  # same port, same append-only file
    for i in range(50):
        store.record(KEY, gen, ratio, i % 2 == 0)
    assert _count(store, gen, ratio) == (100, 50)
    assert gate.decide(KEY).action is not None


# ---------------------------------------------------------------------------- through the wrapper


@pytest.mark.parametrize("fault", ["locked", "corrupt", "redis-down"])
def test_wrapped_client_fails_open_on_store_faults(
    fault: str, tmp_path: Path, request: Any
) -> None:
    from openai import OpenAI

    from _scripted_server import ScriptedServer
    from _sieve_helpers import WordDropCompressor, long_text
    from promptsieve.sieve import Sieve, SieveConfig
    from promptsieve_openai import wrap_openai

    path = tmp_path / "verdicts.sqlite3"
    locker = None
    if fault == "redis-down":
        gate = Gate(RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.3))
    elif fault == "locked":
        gate = Gate(SQLiteStore(path, busy_timeout_s=0.2))
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
    else:
        gate = Gate(SQLiteStore(path))
        gate.store.close()
        path.write_bytes(os.urandom(4096))
        for p in tmp_path.glob("verdicts.sqlite3-*"):
            p.unlink()
    sieve = Sieve(SieveConfig(scoring_budget_ms=10_000), compressor=WordDropCompressor(), gate=gate)
    try:
        with ScriptedServer() as server:
            client = wrap_openai(OpenAI(base_url=server.url, api_key="x", max_retries=0), sieve)
            for i in range(3):
                prompt = f"{i} " + long_text(2)
                out = client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
                )
                assert out.choices[0].message.content == "ok"
                assert server.bodies()[-1]["messages"][0]["content"] == prompt
            assert sieve.flush(10)
    finally:
        sieve.close()
        if locker is not None:
            locker.execute("ROLLBACK")
            locker.close()
    assert gate.store_errors == 3  # one per request: decide fell back to BYPASS
    assert sieve.stats.compressed == 0
    assert json.dumps(sieve.stats.decisions)  # decisions stay readable
