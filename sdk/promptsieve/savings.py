"""The savings ledger: per task, per hour, what the sieve saved and spent (counts only).

A :class:`SavingsLedger` is a sieve observer (``sieve.add_observer(SavingsLedger())``) that
adds each request's and comparison's counts to a SQLite table, by default in the verdict
store's own file, so ``promptsieve report --store FILE`` finds verdicts and savings together.
It keeps task names, model names and integers — never prompt or answer text.

Counts are summed in memory and written every ``flush_interval_s`` seconds by a daemon
thread (and at :meth:`flush`, :meth:`close` and interpreter exit) with one atomic UPSERT per
row, so many processes can share one file. The sieve's events only add counts: a write that
waits on a busy file or a slow Redis never holds the user's call or an event loop. A write
that fails is logged and retried at the next flush; it never reaches the caller. A forked
child starts with no counts of its own parent's (they are the parent's to write) and its
own writer thread.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import math
import numbers
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from promptsieve._errors import ConfigError, StoreError, missing_extra
from promptsieve._events import ComparisonEvent, RequestEvent
from promptsieve.fidelity._sqlite_store import check_store_location, is_redis_url, redacted_url

__all__ = ["LedgerRow", "SavingsLedger", "read_ledger"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS savings (
    bucket INTEGER NOT NULL,
    task TEXT NOT NULL,
    target_model TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    compressed INTEGER NOT NULL DEFAULT 0,
    tokens_before INTEGER NOT NULL DEFAULT 0,
    tokens_after INTEGER NOT NULL DEFAULT 0,
    comparisons INTEGER NOT NULL DEFAULT 0,
    agreements INTEGER NOT NULL DEFAULT 0,
    screening_calls INTEGER NOT NULL DEFAULT 0,
    screening_tokens INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, task, target_model)
);
"""


@dataclass
class LedgerRow:
    """Counts of one (bucket, task, target model). ``bucket``: unix seconds it starts at."""

    bucket: int
    task: str
    target_model: str
    requests: int = 0
    compressed: int = 0
    tokens_before: int = 0
    tokens_after: int = 0
    comparisons: int = 0
    agreements: int = 0
    screening_calls: int = 0
    screening_tokens: int = 0

    @property
    def tokens_saved(self) -> int:
        return self.tokens_before - self.tokens_after


_COUNTS = tuple(
    f.name for f in fields(LedgerRow) if f.name not in ("bucket", "task", "target_model")
)


class SavingsLedger:
    """A :class:`~promptsieve.SieveObserver` that keeps savings counts in SQLite or Redis.

    ``path``: SQLite file (default: the default verdict store's file), or a ``redis://`` URL
    (keys ``<redis_prefix>s:<bucket>:<hash of task and model>``, counted with HINCRBY, so a
    fleet shares one ledger; ``rediss://`` and ``unix://`` too). ``bucket_s``: width of
    a time bucket in seconds (default one hour). ``flush_interval_s``: seconds between
    writes, by the ledger's thread (finite; 0: every event is written at once, on the
    caller's thread, for tests and short scripts). Raises
    :class:`ConfigError` for a ``path`` that is neither a str/os.PathLike path nor a Redis URL
    (any other ``scheme://``), a bad bucket or interval, and :class:`StoreError` when the
    file cannot be opened.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        bucket_s: int = 3600,
        flush_interval_s: float = 10.0,
        redis_prefix: str = "promptsieve:",
    ) -> None:
        check_store_location("SavingsLedger(path=...)", path, redis=True)
        if not (_is_number(bucket_s) and 1 <= bucket_s < math.inf):
            raise ConfigError(f"bucket_s must be a number >= 1 second, got {bucket_s!r}")
        if not (_is_number(flush_interval_s) and 0 <= flush_interval_s < math.inf):
            raise ConfigError(
                f"flush_interval_s must be a finite number >= 0 seconds, got {flush_interval_s!r}"
            )
        if path is None:
            from promptsieve.fidelity.store import default_store_path

            path = default_store_path()
        self._redis: Any = None
        self.redis_prefix = redis_prefix
        if _is_redis(path):
            self._redis = _redis_client(str(path))
        #: The SQLite file (unused with Redis); ``location``: the file or the Redis URL.
        self.path = Path(path).expanduser() if self._redis is None else Path()
        self.location = str(path)
        self.bucket_s = int(bucket_s)
        self.flush_interval_s = float(flush_interval_s)
        self._lock = threading.Lock()
        self._rows: dict[tuple[int, str, str], LedgerRow] = {}
        self._last_flush = time.monotonic()
        self._closed = False  # after close(): every event is written at once
        try:
            if self._redis is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self._connect() as conn:
                    conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"savings ledger {self.path}: {exc}") from exc
        ref = weakref.ref(self)
        atexit.register(lambda: (lambda s: s.close() if s is not None else None)(ref()))
        self._wake = threading.Event()
        self._writer_pid: int | None = None
        self._writer: threading.Thread | None = None
        _LEDGERS.add(self)
        if self.flush_interval_s > 0:  # a quiet server still gets its counts written
            self._ensure_writer()

    def _ensure_writer(self) -> bool:
        """Start this process's writer thread once (again in a forked child); False when
        there is none (flush interval 0, or no thread could start): writes go inline."""
        if self._writer_pid != os.getpid():
            self._writer_pid, self._writer = os.getpid(), None
            if self.flush_interval_s > 0:
                thread = threading.Thread(
                    target=_flush_periodically, args=(weakref.ref(self), self._wake),
                    name="promptsieve-savings", daemon=True,
                )  # fmt: skip
                try:
                    thread.start()
                    self._writer = thread
                except RuntimeError:  # no thread (limits, interpreter shutdown): inline
                    log.debug("promptsieve: savings ledger writes inline (no thread)")
        return self._writer is not None

    def __repr__(self) -> str:
        return f"SavingsLedger({self.location!r})"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA journal_mode=WAL")
            yield conn
        finally:
            conn.close()

    def _row(self, when: float, task: str | None, model: str) -> LedgerRow:
        bucket = int(when // self.bucket_s) * self.bucket_s
        key = (bucket, task or "", model)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = LedgerRow(bucket, task or "", model)
        return row

    # -- observer -------------------------------------------------------------------------
    def on_request(self, event: RequestEvent) -> None:
        with self._lock:
            row = self._row(event.time or time.time(), event.task, event.target_model)
            row.requests += 1
            row.compressed += int(event.reason == "applied")
            row.tokens_before += event.tokens_before
            row.tokens_after += event.tokens_after
        self._maybe_flush()

    def on_comparison(self, event: ComparisonEvent) -> None:
        with self._lock:
            row = self._row(event.time or time.time(), event.task, event.target_model)
            row.comparisons += int(event.agreed is not None)
            row.agreements += int(bool(event.agreed))
            row.screening_calls += event.screening_calls
            row.screening_tokens += event.screening_tokens
        self._maybe_flush()

    # -- writing --------------------------------------------------------------------------
    def _maybe_flush(self) -> None:
        due = self._closed or time.monotonic() - self._last_flush >= self.flush_interval_s
        if not due:
            return
        if self._closed or not self._ensure_writer():
            self.flush()
        else:
            self._wake.set()  # the writer thread writes; the caller never waits on it

    def flush(self) -> bool:
        """Write the counts summed so far; True when written (False: kept for next time)."""
        with self._lock:
            rows, self._rows = self._rows, {}
            self._last_flush = time.monotonic()
        if not rows:
            return True
        try:
            if self._redis is not None:
                _redis_write(self._redis, self.redis_prefix, rows.values())
            else:
                self._sqlite_write(rows.values())
        except Exception as exc:  # sqlite3/OS/Redis errors: keep the counts for next time
            log.warning("promptsieve: savings ledger %s: %s; kept for the next flush",
                        self.location, type(exc).__name__)  # fmt: skip
            with self._lock:
                for key, r in rows.items():
                    mine = self._rows.setdefault(key, LedgerRow(r.bucket, r.task, r.target_model))
                    for c in _COUNTS:
                        setattr(mine, c, getattr(mine, c) + getattr(r, c))
            return False
        return True

    def _sqlite_write(self, rows: Iterable[LedgerRow]) -> None:
        cols = ", ".join(_COUNTS)
        marks = ", ".join("?" for _ in _COUNTS)
        sets = ", ".join(f"{c} = {c} + excluded.{c}" for c in _COUNTS)
        sql = (
            f"INSERT INTO savings (bucket, task, target_model, {cols}) VALUES (?, ?, ?, {marks}) "
            f"ON CONFLICT(bucket, task, target_model) DO UPDATE SET {sets}"
        )
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for r in rows:
                    values = [getattr(r, c) for c in _COUNTS]
                    conn.execute(sql, (r.bucket, r.task, r.target_model, *values))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Write what is left (also done at interpreter exit); later events are written at
        once (exit hooks registered earlier, e.g. a logging queue, may still deliver some)."""
        self._closed = True
        self.flush()


def _flush_periodically(ref: weakref.ReferenceType[SavingsLedger], wake: threading.Event) -> None:
    """Write the ledger's counts every ``flush_interval_s`` seconds, or sooner when an event
    finds a write due (``wake``), while the ledger lives (a daemon thread)."""
    while True:
        ledger = ref()
        if ledger is None:
            return
        interval = ledger.flush_interval_s
        del ledger
        wake.wait(interval)
        wake.clear()
        ledger = ref()
        if ledger is None:
            return
        if ledger._rows:
            ledger.flush()
        del ledger


#: Live ledgers, so that a forked child drops its parent's unwritten counts.
_LEDGERS: weakref.WeakSet[SavingsLedger] = weakref.WeakSet()


def _ledgers_after_fork() -> None:
    """In a forked child: the parent's unwritten counts are the parent's to write (else
    both would); a lock the fork copied while held is replaced; the writer thread did not
    survive the fork and starts again at the next due write."""
    for ledger in list(_LEDGERS):
        ledger._lock = threading.Lock()
        ledger._rows = {}
        ledger._wake = threading.Event()
        ledger._writer_pid = None


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_ledgers_after_fork)


# -- Redis --------------------------------------------------------------------------------


def _is_redis(path: str | Path) -> bool:
    return is_redis_url(path)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _redis_client(url: str) -> Any:
    try:
        import redis
    except ImportError as exc:
        raise missing_extra("redis", "redis") from exc
    try:
        return redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)
    except ValueError as exc:
        raise ConfigError(f"bad Redis URL {redacted_url(url)!r}: {exc}") from None


def _redis_key(prefix: str, r: LedgerRow) -> str:
    who = hashlib.sha256(f"{r.task}\x1f{r.target_model}".encode()).hexdigest()[:16]
    return f"{prefix}s:{r.bucket}:{who}"


def _redis_write(client: Any, prefix: str, rows: Iterable[LedgerRow]) -> None:
    """One pipeline (MULTI/EXEC): HSET the names, HINCRBY every count of every row."""
    pipe = client.pipeline(transaction=True)
    for r in rows:
        key = _redis_key(prefix, r)
        pipe.hset(key, mapping={"bucket": r.bucket, "task": r.task, "model": r.target_model})
        for c in _COUNTS:
            if getattr(r, c):
                pipe.hincrby(key, c, getattr(r, c))
    pipe.execute()


def _redis_read(url: str, prefix: str) -> list[LedgerRow]:
    client = _redis_client(url)
    try:
        out = []
        for name in client.scan_iter(match=f"{prefix}s:*"):
            raw = {k.decode(): v.decode() for k, v in client.hgetall(name).items()}
            if not raw:
                continue
            counts = {c: int(raw.get(c, 0)) for c in _COUNTS}
            out.append(LedgerRow(int(raw["bucket"]), raw["task"], raw["model"], **counts))
        return sorted(out, key=lambda r: (r.bucket, r.task, r.target_model))
    except Exception as exc:
        raise StoreError(f"savings ledger (Redis): {type(exc).__name__}: {exc}") from exc
    finally:
        client.close()


def _sqlite_file(path: str | Path) -> Path:
    """``path`` as an existing file; :class:`StoreError` saying what is wrong otherwise."""
    p = Path(path)
    if p.is_dir():
        raise StoreError(f"{p} is a folder: give the SQLite file in it (a .sqlite3 file)")
    if not p.is_file():
        raise StoreError(f"no such store file: {p}")
    return p


def read_ledger(path: str | Path, *, redis_prefix: str = "promptsieve:") -> list[LedgerRow]:
    """Every row of the ledger in ``path`` (a SQLite file, or a ``redis://`` URL with its key
    prefix), oldest bucket first; [] when it has none.

    Raises :class:`StoreError` when the ledger cannot be read.
    """
    if _is_redis(path):
        return _redis_read(str(path), redis_prefix)
    p = _sqlite_file(path)
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=10.0)
        try:
            has = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'savings'"
            ).fetchone()
            if not has:
                return []
            cur = conn.execute(
                f"SELECT bucket, task, target_model, {', '.join(_COUNTS)} FROM savings "
                "ORDER BY bucket, task, target_model"
            )
            return [LedgerRow(*row) for row in cur]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"savings ledger {p}: {exc}") from exc
