"""Verdict stores against a real SQLite file and a real redis-server."""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from _redis_server import RedisServer, free_port, redis_exe
from promptsieve import StoreError
from promptsieve.fidelity import (
    Counts,
    Pairs,
    RedisStore,
    SQLiteStore,
    Verdict,
    VerdictKey,
    VerdictState,
    VerdictStore,
)

KEY = VerdictKey("faq", "gemma-3-270m", "proxy-abc", "settings-SECRET-123")

PROCS, CALLS = 4, 200


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real redis-server (no persistence) for the session."""
    server = RedisServer(redis_exe(), tmp_path_factory.mktemp("redis"), persistent=False)
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VerdictStore]:
    if request.param == "sqlite":
        s: VerdictStore = SQLiteStore(tmp_path / "verdicts.sqlite3")
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisStore(url, prefix=f"t{time.monotonic_ns()}:")
    yield s
    s.close()


def _screening(generation: int = 1, ttl: float = 3600.0) -> Verdict:
    now = time.time()
    return Verdict(
        state=VerdictState.SCREENING,
        testing=0.8,
        created_at=now,
        updated_at=now,
        expires_at=now + ttl,
        generation=generation,
    )


def test_put_get_roundtrip_and_cas(store: VerdictStore) -> None:
    assert store.get(KEY) is None
    v = _screening()
    assert store.put(KEY, v, expected_version=None)
    assert not store.put(KEY, v, expected_version=None)  # exists already
    got = store.get(KEY)
    assert got is not None
    assert got.state is VerdictState.SCREENING and got.testing == 0.8 and got.version == 1
    assert got.expires_at == pytest.approx(v.expires_at)
    passed = got.replace(state=VerdictState.PASSED, ratio=0.8, lower=0.91, upper=0.99)
    assert not store.put(KEY, passed, expected_version=7)  # stale writer loses
    assert store.put(KEY, passed, expected_version=1)
    got = store.get(KEY)
    assert got is not None and got.state is VerdictState.PASSED and got.version == 2
    assert (got.ratio, got.lower, got.upper) == (0.8, 0.91, 0.99)


def test_record_counts_per_ratio_generation_and_monitor(store: VerdictStore) -> None:
    store.put(KEY, _screening(), expected_version=None)
    assert store.record(KEY, 1, 0.8, True) == Counts(1, 1)
    assert store.record(KEY, 1, 0.8, False) == Counts(2, 1)
    assert store.record(KEY, 1, 0.65, True) == Counts(1, 1)
    got = store.get(KEY)
    assert got is not None
    assert got.counts_at(0.8) == Counts(2, 1) and got.counts_at(0.65) == Counts(1, 1)
    assert got.counts_at(0.5) == Counts()
    # monitoring counts are separate from screening counts at the same ratio
    passed = got.replace(state=VerdictState.PASSED, ratio=0.8)
    assert store.put(KEY, passed, expected_version=got.version)
    assert store.record(KEY, 1, 0.8, False, monitor=True) == Counts(1, 0)
    got = store.get(KEY)
    assert got is not None and got.monitor == Counts(1, 0) and got.counts_at(0.8) == Counts(2, 1)
    # a new generation starts from zero; late results of the old one do not leak in
    assert store.put(KEY, _screening(generation=2), expected_version=got.version)
    store.record(KEY, 1, 0.8, True)
    got = store.get(KEY)
    assert got is not None and got.generation == 2 and got.counts_at(0.8) == Counts()


def test_labelled_pairs_noise_counts_and_e_values(store: VerdictStore) -> None:
    """Labelled cells per ratio, noise-floor counts and the verdict's e-value round-trip."""
    store.put(KEY, _screening(), expected_version=None)
    assert store.record_pair(KEY, 1, 0.8, True, True) == Pairs(1, 0, 0, 0)
    assert store.record_pair(KEY, 1, 0.8, True, False) == Pairs(1, 1, 0, 0)
    assert store.record_pair(KEY, 1, 0.8, False, True) == Pairs(1, 1, 1, 0)
    assert store.record_pair(KEY, 1, 0.5, False, False) == Pairs(0, 0, 0, 1)
    assert store.record_noise(KEY, 1, True) == Counts(1, 1)
    assert store.record_noise(KEY, 1, False) == Counts(2, 1)
    store.record(KEY, 1, 0.8, True)  # agreement counts live beside the pairs
    got = store.get(KEY)
    assert got is not None
    assert got.pairs_at(0.8) == Pairs(1, 1, 1, 0) and got.pairs_at(0.5) == Pairs(0, 0, 0, 1)
    assert got.noise == Counts(2, 1) and got.counts_at(0.8) == Counts(1, 1)
    passed = got.replace(state=VerdictState.PASSED, ratio=0.8, e_value=float("inf"))
    assert store.put(KEY, passed, expected_version=got.version)
    got = store.get(KEY)
    assert got is not None and got.e_value == 1e300  # JSON has no infinity: capped
    listed = store.verdicts()
    assert [(v.digest, v.task, v.target_model) for v in listed] == [
        (KEY.digest, KEY.task, KEY.target_model)
    ]
    assert listed[0].verdict.state is VerdictState.PASSED and listed[0].verdict.e_value == 1e300
    assert "SECRET" not in listed[0].settings_digest and len(listed[0].settings_digest) == 16
    # a new generation starts the pairs and the noise floor from zero
    assert store.put(KEY, _screening(generation=2), expected_version=got.version)
    got = store.get(KEY)
    assert got is not None and got.pairs_at(0.8) == Pairs() and got.noise == Counts()


def test_key_fields_invalidate(store: VerdictStore) -> None:
    store.put(KEY, _screening(), expected_version=None)
    for other in (
        VerdictKey("other-task", KEY.target_model, KEY.proxy_fingerprint, KEY.settings),
        VerdictKey(KEY.task, "gpt-4o", KEY.proxy_fingerprint, KEY.settings),
        VerdictKey(KEY.task, KEY.target_model, "proxy-new", KEY.settings),
        VerdictKey(KEY.task, KEY.target_model, KEY.proxy_fingerprint, "settings-2"),
    ):
        assert store.get(other) is None
    store.delete(KEY)
    assert store.get(KEY) is None


def test_sqlite_default_path_wal_and_no_settings_text(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "v.sqlite3")
    s.put(KEY, _screening(), expected_version=None)
    s.record(KEY, 1, 0.8, True)
    mode = s._conn().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    s.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"SECRET" not in raw  # only a hash of the settings is kept
    from promptsieve.fidelity import default_store_path

    assert default_store_path().name == "verdicts.sqlite3"


def test_redis_keys_expire_with_the_verdict(redis_url: str) -> None:
    """Both keys expire at the verdict's expiry plus a day's grace, rounded up to the next
    millisecond. Read as absolute times (PEXPIRETIME, Redis >= 7): a remaining PTTL raced the
    clock, one millisecond over the bound when the rounding and Redis's clock fell apart."""
    s = RedisStore(redis_url, prefix="ttl:")
    verdict = _screening(ttl=60)
    assert verdict.expires_at is not None
    s.put(KEY, verdict, expected_version=None)
    s.record(KEY, 1, 0.8, True)
    want_ms = math.ceil((verdict.expires_at + 24 * 3600) * 1000)
    assert s.client.execute_command("PEXPIRETIME", f"ttl:v:{KEY.digest}") == want_ms
    assert s.client.execute_command("PEXPIRETIME", f"ttl:c:{KEY.digest}:1") == want_ms
    assert 0 < s.client.pttl(f"ttl:v:{KEY.digest}") <= want_ms - int(time.time() * 1000) + 1000
    s.close()


@pytest.mark.parametrize("ttl", [math.inf, 1e300])
def test_a_verdict_that_never_expires_is_stored_whole(store: VerdictStore, ttl: float) -> None:
    """GateConfig(ttl=math.inf) or a huge ttl: on Redis, put raised OverflowError (inf) or
    wrote the verdict and then failed its PEXPIREAT (1e300), on every decide. Now such a
    verdict is kept without an expiry, as on SQLite."""
    verdict = _screening(ttl=ttl)
    assert store.put(KEY, verdict, expected_version=None)
    store.record(KEY, 1, 0.8, True)
    got = store.get(KEY)
    assert got is not None and got.expires_at == verdict.expires_at
    assert got.counts[0.8].n == 1
    if isinstance(store, RedisStore):
        assert store.client.pttl(store._vkey(KEY)) == -1  # kept without an expiry


def test_outages_raise_store_error(tmp_path: Path) -> None:
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.5)
    with pytest.raises(StoreError):
        dead.get(KEY)
    with pytest.raises(StoreError):
        dead.record(KEY, 1, 0.8, True)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        SQLiteStore(blocker / "verdicts.sqlite3")
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        SQLiteStore(corrupt).get(KEY)


# -- concurrency ----------------------------------------------------------------------------


def _hammer_sqlite(store: SQLiteStore, worker: int) -> None:
    for i in range(CALLS):  # inherited store object: the child must open its own connection
        store.record(KEY, 1, 0.8, (i + worker) % 3 != 0)
        store.record_pair(KEY, 1, 0.8, i % 2 == 0, (i + worker) % 3 != 0)


def _hammer_redis(url: str, prefix: str, worker: int) -> None:
    store = RedisStore(url, prefix=prefix)
    for i in range(CALLS):
        store.record(KEY, 1, 0.8, (i + worker) % 3 != 0)
        store.record_pair(KEY, 1, 0.8, i % 2 == 0, (i + worker) % 3 != 0)


def _expected_agree() -> int:
    return sum((i + w) % 3 != 0 for w in range(PROCS) for i in range(CALLS))


def _expected_pairs() -> Pairs:
    pairs = Pairs()
    for w in range(PROCS):
        for i in range(CALLS):
            pairs = pairs.add(i % 2 == 0, (i + w) % 3 != 0)
    return pairs


def _run(target, args_of) -> None:  # type: ignore[no-untyped-def]
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=target, args=args_of(w)) for w in range(PROCS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0


def test_sqlite_concurrent_processes_lose_no_counts(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "shared.sqlite3")
    store.put(KEY, _screening(), expected_version=None)
    store.get(KEY)  # the parent holds an open connection across the fork
    _run(_hammer_sqlite, lambda w: (store, w))
    got = store.get(KEY)
    assert got is not None and got.counts_at(0.8) == Counts(PROCS * CALLS, _expected_agree())
    assert got.pairs_at(0.8) == _expected_pairs()


def test_redis_concurrent_processes_lose_no_counts(redis_url: str) -> None:
    prefix = f"conc{time.monotonic_ns()}:"
    store = RedisStore(redis_url, prefix=prefix)
    store.put(KEY, _screening(), expected_version=None)
    _run(_hammer_redis, lambda w: (redis_url, prefix, w))
    got = store.get(KEY)
    assert got is not None and got.counts_at(0.8) == Counts(PROCS * CALLS, _expected_agree())
    assert got.pairs_at(0.8) == _expected_pairs()


def test_sqlite_threads_share_one_store(tmp_path: Path) -> None:
    import threading

    store = SQLiteStore(tmp_path / "threads.sqlite3")
    store.put(KEY, _screening(), expected_version=None)
    threads = [
        threading.Thread(target=lambda: [store.record(KEY, 1, 0.5, True) for _ in range(100)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = store.get(KEY)
    assert got is not None and got.counts_at(0.5) == Counts(400, 400)
