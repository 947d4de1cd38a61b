"""Verdict stores: where screening counts and verdicts live, shared by threads and processes.

A verdict is cached per :class:`VerdictKey` (task, target model, proxy fingerprint,
compressor settings); change any of them and it is a different verdict, which is how a new
proxy, target or setting invalidates old ones. The store keeps keys, counts, bounds and
states — never prompt text.

Two operations carry the concurrency story:

* ``record`` adds one paired comparison to a counter with an atomic increment (SQLite
  UPSERT inside its write lock, Redis HINCRBY in a Lua script), so concurrent processes lose no
  counts. The sequential test depends only on the counts, so counters are the whole state.
* ``put`` writes a verdict with compare-and-set on ``version``: a transition computed from a
  stale read loses instead of overwriting a newer one.

Counters belong to a verdict *generation*; re-screening starts a new generation, so late
results from an old one cannot leak into the new test. Besides agreement counts per ratio a
generation holds labelled pairs per ratio (four cell counters, :class:`Pairs`, for labelled
non-inferiority) and noise-floor counts (the original against a meaning-preserving variant
of itself). Each verdict records the e-value of its test, and :meth:`VerdictStore.verdicts`
lists all of them, which is what e-BH across a store's tasks reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from promptsieve._errors import ConfigError, StoreError, missing_extra
from promptsieve.fidelity.labelled import Pairs

__all__ = [
    "Counts",
    "RedisStore",
    "SQLiteStore",
    "StoredVerdict",
    "Verdict",
    "VerdictKey",
    "VerdictState",
    "VerdictStore",
    "default_store_path",
]

log = logging.getLogger(__name__)


class VerdictState(str, Enum):
    UNSCREENED = "unscreened"
    SCREENING = "screening"
    PASSED = "passed"
    FAILED = "failed"
    REVOKED = "revoked"


@dataclass(frozen=True)
class VerdictKey:
    """What a verdict is about. ``settings`` is the compressor's settings key (any string)."""

    task: str
    target_model: str
    proxy_fingerprint: str
    settings: str

    @property
    def digest(self) -> str:
        """Stable id of the key (settings may be long; the store keeps only this hash)."""
        raw = json.dumps(
            [self.task, self.target_model, self.proxy_fingerprint, self.settings],
            ensure_ascii=False,
        )
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class Counts:
    """Paired comparisons at one ratio: how many, and how many agreed."""

    n: int = 0
    agree: int = 0


@dataclass(frozen=True)
class Verdict:
    """A cached screen-and-apply verdict.

    ``ratio``: the most aggressive ratio that passed so far (the one applied once PASSED).
    ``testing``: the ratio under test (SCREENING) or monitored (PASSED).
    ``counts``: screening counts per ratio; ``monitor``: monitoring counts at ``ratio``;
    ``pairs``: labelled (original correct, compressed correct) cells per ratio; ``noise``:
    noise-floor comparisons (all for the current ``generation`` only). ``e_value``: the
    e-value behind the state (for a pass, the smallest over the ladder's passed rungs; see
    :mod:`promptsieve.fidelity.ebh`). ``version`` increases with every write.
    """

    state: VerdictState = VerdictState.UNSCREENED
    ratio: float | None = None
    testing: float | None = None
    counts: Mapping[float, Counts] = field(default_factory=dict)
    monitor: Counts = Counts()
    pairs: Mapping[float, Pairs] = field(default_factory=dict)
    noise: Counts = Counts()
    e_value: float | None = None
    lower: float | None = None
    upper: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    expires_at: float | None = None
    generation: int = 0
    version: int = 0
    reason: str = ""

    def expired(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.expires_at is not None and now >= self.expires_at

    def counts_at(self, ratio: float) -> Counts:
        return self.counts.get(_ratio_key(ratio), Counts())

    def pairs_at(self, ratio: float) -> Pairs:
        return self.pairs.get(_ratio_key(ratio), Pairs())

    def replace(self, **changes: Any) -> Verdict:
        return dataclasses.replace(self, **changes)


def _ratio_key(ratio: float) -> float:
    return round(float(ratio), 6)


def _slot(ratio: float, monitor: bool) -> str:
    return f"{'m' if monitor else 's'}{_ratio_key(ratio)!r}"


_NOISE_SLOT = "n"
_CELLS = ("11", "10", "01", "00")


def _pair_slot(ratio: float, cell: str) -> str:
    return f"p{_ratio_key(ratio)!r}:{cell}"


def _settings_digest(key: VerdictKey) -> str:
    return hashlib.sha256(key.settings.encode("utf-8")).hexdigest()[:16]


def _finite(x: float | None) -> float | None:
    if x is None or math.isnan(x):
        return None
    return min(float(x), 1e300)  # JSON has no infinity


def _meta_of(v: Verdict, key: VerdictKey | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "state": v.state.value,
        "ratio": v.ratio,
        "testing": v.testing,
        "lower": v.lower,
        "upper": v.upper,
        "created_at": v.created_at,
        "updated_at": v.updated_at,
        "expires_at": v.expires_at,
        "reason": v.reason,
        "e_value": _finite(v.e_value),
    }
    if key is not None:  # for listing (e-BH); the settings only as a hash
        meta["key"] = [key.task, key.target_model, key.proxy_fingerprint, _settings_digest(key)]
    return meta


def _verdict_of(
    meta: Mapping[str, Any], generation: int, version: int, counters: Mapping[str, tuple[int, int]]
) -> Verdict:
    counts: dict[float, Counts] = {}
    cells: dict[float, dict[str, int]] = {}
    monitor = noise = Counts()
    for slot, (n, agree) in counters.items():
        kind = slot[0]
        if kind == _NOISE_SLOT:
            noise = Counts(n, agree)
            continue
        if kind == "p":
            raw_ratio, _, cell = slot[1:].partition(":")
            cells.setdefault(_ratio_key(float(raw_ratio)), {})[cell] = n
            continue
        ratio = float(slot[1:])
        if kind == "s":
            counts[_ratio_key(ratio)] = Counts(n, agree)
        elif meta.get("ratio") is not None and _ratio_key(ratio) == _ratio_key(meta["ratio"]):
            monitor = Counts(n, agree)
    return Verdict(
        state=VerdictState(meta["state"]),
        ratio=meta.get("ratio"),
        testing=meta.get("testing"),
        counts=counts,
        monitor=monitor,
        pairs={r: Pairs.from_cells(c) for r, c in cells.items()},
        noise=noise,
        e_value=meta.get("e_value"),
        lower=meta.get("lower"),
        upper=meta.get("upper"),
        created_at=float(meta.get("created_at") or 0.0),
        updated_at=float(meta.get("updated_at") or 0.0),
        expires_at=meta.get("expires_at"),
        generation=generation,
        version=version,
        reason=meta.get("reason") or "",
    )


@dataclass(frozen=True)
class StoredVerdict:
    """One entry of :meth:`VerdictStore.verdicts`: what a verdict is about, and the verdict.

    ``settings_digest`` is a hash of the key's settings (the store never keeps the settings
    text); ``verdict`` carries no counts.
    """

    digest: str
    task: str
    target_model: str
    proxy_fingerprint: str
    settings_digest: str
    verdict: Verdict


def _stored(digest: str, meta: Mapping[str, Any], generation: int, version: int) -> StoredVerdict:
    task, model, fp, settings = [*(meta.get("key") or []), "", "", "", ""][:4]
    return StoredVerdict(
        digest, str(task), str(model), str(fp), str(settings),
        _verdict_of(meta, generation, version, {}),
    )  # fmt: skip


@runtime_checkable
class VerdictStore(Protocol):
    """Where verdicts and counts live. Every method raises StoreError when the store is down."""

    def get(self, key: VerdictKey) -> Verdict | None:
        """The verdict with the current generation's counts, or None if never written."""
        ...

    def put(self, key: VerdictKey, verdict: Verdict, *, expected_version: int | None) -> bool:
        """Write ``verdict`` if the stored version is ``expected_version`` (None: absent).

        Returns False (and writes nothing) when another writer got there first. The stored
        version becomes ``expected_version + 1`` (1 when new); counts are not written here.
        """
        ...

    def record(
        self, key: VerdictKey, generation: int, ratio: float, agreed: bool, *, monitor: bool = False
    ) -> Counts:
        """Atomically add one comparison at ``ratio``; returns the counts after it."""
        ...

    def record_pair(
        self,
        key: VerdictKey,
        generation: int,
        ratio: float,
        original_correct: bool,
        compressed_correct: bool,
    ) -> Pairs:
        """Atomically add one labelled pair at ``ratio``; returns the four cells after it."""
        ...

    def record_noise(self, key: VerdictKey, generation: int, agreed: bool) -> Counts:
        """Atomically add one noise-floor comparison; returns the noise counts after it."""
        ...

    def verdicts(self) -> list[StoredVerdict]:
        """Every verdict in the store (without counts), e.g. for e-BH across tasks."""
        ...

    def delete(self, key: VerdictKey) -> None: ...

    def close(self) -> None: ...


def default_store_path() -> Path:
    from promptsieve._paths import cache_dir

    return cache_dir() / "verdicts.sqlite3"


# -- SQLite -------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    id TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    target_model TEXT NOT NULL,
    proxy_fingerprint TEXT NOT NULL,
    generation INTEGER NOT NULL,
    version INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counts (
    id TEXT NOT NULL,
    generation INTEGER NOT NULL,
    slot TEXT NOT NULL,
    n INTEGER NOT NULL,
    agree INTEGER NOT NULL,
    PRIMARY KEY (id, generation, slot)
);
"""


class SQLiteStore:
    """The embedded default: one SQLite file (WAL, busy timeout), a connection per thread.

    Safe across threads and processes: writes take SQLite's write lock (BEGIN IMMEDIATE),
    readers never block writers (WAL), and a forked child opens its own connection.
    """

    def __init__(self, path: str | Path | None = None, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        self._busy_ms = int(busy_timeout_s * 1000)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        with self._errors():
            conn = self._conn()
            conn.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        conn = sqlite3.connect(
            self.path, timeout=self._busy_ms / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._lock:
            self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"verdict store {self.path}: {exc}") from exc

    def get(self, key: VerdictKey) -> Verdict | None:
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN")  # one snapshot for the verdict and its counts
            try:
                row = conn.execute(
                    "SELECT generation, version, meta FROM verdicts WHERE id = ?", (key.digest,)
                ).fetchone()
                if row is None:
                    return None
                generation, version, meta = row
                counters = {
                    slot: (n, agree)
                    for slot, n, agree in conn.execute(
                        "SELECT slot, n, agree FROM counts WHERE id = ? AND generation = ?",
                        (key.digest, generation),
                    )
                }
            finally:
                conn.execute("COMMIT")
            return _verdict_of(json.loads(meta), generation, version, counters)

    def put(self, key: VerdictKey, verdict: Verdict, *, expected_version: int | None) -> bool:
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            ok = False
            try:
                row = conn.execute(
                    "SELECT version FROM verdicts WHERE id = ?", (key.digest,)
                ).fetchone()
                current = None if row is None else int(row[0])
                if current == expected_version:
                    conn.execute(
                        "INSERT INTO verdicts (id, task, target_model, proxy_fingerprint, "
                        "generation, version, meta) VALUES (?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT(id) DO UPDATE SET generation = excluded.generation, "
                        "version = excluded.version, meta = excluded.meta",
                        (
                            key.digest,
                            key.task,
                            key.target_model,
                            key.proxy_fingerprint,
                            verdict.generation,
                            (expected_version or 0) + 1,
                            json.dumps(_meta_of(verdict, key)),
                        ),
                    )
                    conn.execute(
                        "DELETE FROM counts WHERE id = ? AND generation < ?",
                        (key.digest, verdict.generation),
                    )
                    ok = True
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return ok

    def record(
        self, key: VerdictKey, generation: int, ratio: float, agreed: bool, *, monitor: bool = False
    ) -> Counts:
        with self._errors():
            return self._increment(key, generation, _slot(ratio, monitor), agreed)

    def _increment(self, key: VerdictKey, generation: int, slot: str, agreed: bool) -> Counts:
        """Add one comparison to ``slot`` (one atomic statement); the counts after it."""
        row = (
            self._conn()
            .execute(
                "INSERT INTO counts (id, generation, slot, n, agree) VALUES (?, ?, ?, 1, ?) "
                "ON CONFLICT(id, generation, slot) DO UPDATE SET n = n + 1, "
                "agree = agree + excluded.agree RETURNING n, agree",
                (key.digest, generation, slot, int(bool(agreed))),
            )
            .fetchone()
        )
        return Counts(int(row[0]), int(row[1]))

    def record_pair(
        self,
        key: VerdictKey,
        generation: int,
        ratio: float,
        original_correct: bool,
        compressed_correct: bool,
    ) -> Pairs:
        cell = Pairs.cell(original_correct, compressed_correct)
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")  # the increment and the read are one snapshot
            try:
                self._increment(key, generation, _pair_slot(ratio, cell), False)
                slots = [_pair_slot(ratio, c) for c in _CELLS]
                rows = conn.execute(
                    "SELECT slot, n FROM counts WHERE id = ? AND generation = ? "
                    "AND slot IN (?, ?, ?, ?)",
                    (key.digest, generation, *slots),
                ).fetchall()
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
        found = {slot.rpartition(":")[2]: int(n) for slot, n in rows}
        return Pairs.from_cells(found)

    def record_noise(self, key: VerdictKey, generation: int, agreed: bool) -> Counts:
        with self._errors():
            return self._increment(key, generation, _NOISE_SLOT, agreed)

    def verdicts(self) -> list[StoredVerdict]:
        with self._errors():
            rows = (
                self._conn()
                .execute("SELECT id, generation, version, meta FROM verdicts ORDER BY id")
                .fetchall()
            )
        return [_stored(d, json.loads(m), int(g), int(v)) for d, g, v, m in rows]

    def delete(self, key: VerdictKey) -> None:
        with self._errors():
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM counts WHERE id = ?", (key.digest,))
                conn.execute("DELETE FROM verdicts WHERE id = ?", (key.digest,))
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends it by itself on some errors
    (SQLITE_FULL, SQLITE_IOERR), and a second ROLLBACK would hide the real error."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


# -- Redis --------------------------------------------------------------------------------

# KEYS[1] verdict hash; ARGV: expected version ("" = absent), generation, meta json, expire-at ms
_PUT_LUA = """
local cur = redis.call('HGET', KEYS[1], 'version')
if (ARGV[1] == '' and cur) or (ARGV[1] ~= '' and cur ~= ARGV[1]) then return 0 end
local nextv = 1
if cur then nextv = tonumber(cur) + 1 end
redis.call('HSET', KEYS[1], 'version', nextv, 'generation', ARGV[2], 'meta', ARGV[3])
if ARGV[4] ~= '' then redis.call('PEXPIREAT', KEYS[1], ARGV[4])
else redis.call('PERSIST', KEYS[1]) end
return 1
"""

# KEYS[1] counts hash, KEYS[2] verdict hash; ARGV: slot, agreed (0/1). The counts key expires
# with the verdict key (so a live verdict never loses its counts mid-test).
_RECORD_LUA = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|n', 1)
local a = redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|a', tonumber(ARGV[2]))
local ttl = redis.call('PTTL', KEYS[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return {n, a}
"""

# Retention beyond a verdict's expiry: an expired verdict is still readable (so the gate
# re-screens it as a new generation) before Redis drops it.
_REDIS_GRACE_S = 24 * 3600.0


class RedisStore:
    """Verdicts shared by a fleet through Redis (redis-py).

    Counts are HINCRBY inside a Lua script (atomic per comparison); verdict writes are a
    Lua compare-and-set on ``version``; keys expire a day after the verdict does.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: Any = None,
        prefix: str = "promptsieve:",
        socket_timeout_s: float = 2.0,
    ) -> None:
        try:
            import redis
        except ImportError:
            raise missing_extra("redis", "redis") from None
        self._redis = redis
        if client is None:
            try:
                client = redis.Redis.from_url(
                    url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
                )
            except ValueError as exc:
                raise ConfigError(f"bad Redis URL {url!r}: {exc}") from exc
        self.client = client
        self.prefix = prefix
        self._put = client.register_script(_PUT_LUA)
        self._record = client.register_script(_RECORD_LUA)

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r})"

    def _vkey(self, key: VerdictKey) -> str:
        return f"{self.prefix}v:{key.digest}"

    def _ckey(self, key: VerdictKey, generation: int) -> str:
        return f"{self.prefix}c:{key.digest}:{generation}"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._redis.RedisError as exc:
            raise StoreError(f"verdict store (Redis) {what} failed: {exc}") from exc

    def get(self, key: VerdictKey) -> Verdict | None:
        raw = self._call("get", self.client.hgetall, self._vkey(key))
        if not raw:
            return None
        data = {_s(k): _s(v) for k, v in raw.items()}
        generation, version = int(data["generation"]), int(data["version"])
        counters_raw = self._call("get", self.client.hgetall, self._ckey(key, generation))
        fields = {_s(k): int(v) for k, v in counters_raw.items()}
        counters: dict[str, tuple[int, int]] = {}
        for name, value in fields.items():
            slot, _, part = name.rpartition("|")
            n, agree = counters.get(slot, (0, 0))
            counters[slot] = (value, agree) if part == "n" else (n, value)
        return _verdict_of(json.loads(data["meta"]), generation, version, counters)

    def put(self, key: VerdictKey, verdict: Verdict, *, expected_version: int | None) -> bool:
        expire = ""
        if verdict.expires_at is not None:
            expire = str(math.ceil((verdict.expires_at + _REDIS_GRACE_S) * 1000))
        ok = self._call(
            "put",
            self._put,
            keys=[self._vkey(key)],
            args=[
                "" if expected_version is None else str(expected_version),
                str(verdict.generation),
                json.dumps(_meta_of(verdict, key)),
                expire,
            ],
        )
        if ok and expire:
            ckey = self._ckey(key, verdict.generation)
            self._call("put", self.client.pexpireat, ckey, int(expire))
        return bool(ok)

    def record(
        self, key: VerdictKey, generation: int, ratio: float, agreed: bool, *, monitor: bool = False
    ) -> Counts:
        return self._increment(key, generation, _slot(ratio, monitor), agreed)

    def _increment(self, key: VerdictKey, generation: int, slot: str, agreed: bool) -> Counts:
        """Add one comparison to ``slot`` (one Lua script, atomic); the counts after it."""
        n, agree = self._call(
            "record",
            self._record,
            keys=[self._ckey(key, generation), self._vkey(key)],
            args=[slot, int(bool(agreed))],
        )
        return Counts(int(n), int(agree))

    def record_pair(
        self,
        key: VerdictKey,
        generation: int,
        ratio: float,
        original_correct: bool,
        compressed_correct: bool,
    ) -> Pairs:
        cell = Pairs.cell(original_correct, compressed_correct)
        self._increment(key, generation, _pair_slot(ratio, cell), False)
        # then one atomic read of the four cells (counters only grow)
        fields = [f"{_pair_slot(ratio, c)}|n" for c in _CELLS]
        values = self._call("record", self.client.hmget, self._ckey(key, generation), fields)
        return Pairs.from_cells({c: int(v or 0) for c, v in zip(_CELLS, values, strict=True)})

    def record_noise(self, key: VerdictKey, generation: int, agreed: bool) -> Counts:
        return self._increment(key, generation, _NOISE_SLOT, agreed)

    def verdicts(self) -> list[StoredVerdict]:
        out = []
        pattern = f"{self.prefix}v:*"
        for name in self._call("list", lambda: list(self.client.scan_iter(match=pattern))):
            raw = self._call("list", self.client.hgetall, name)
            if not raw:
                continue  # expired between the scan and the read
            data = {_s(k): _s(v) for k, v in raw.items()}
            digest = _s(name)[len(self.prefix) + 2 :]
            meta = json.loads(data["meta"])
            out.append(_stored(digest, meta, int(data["generation"]), int(data["version"])))
        return sorted(out, key=lambda v: v.digest)

    def delete(self, key: VerdictKey) -> None:
        raw = self._call("delete", self.client.hget, self._vkey(key), "generation")
        keys = [self._vkey(key)]
        if raw is not None:
            keys += [self._ckey(key, g) for g in range(int(_s(raw)) + 1)]
        self._call("delete", self.client.delete, *keys)

    def close(self) -> None:
        with contextlib.suppress(self._redis.RedisError):
            self.client.close()


def _s(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
