"""The savings ledger: per task, per hour, what the sieve saved and spent (counts only).

A :class:`SavingsLedger` is a sieve observer (``sieve.add_observer(SavingsLedger())``) that
adds each request's and comparison's counts to a SQLite table, by default in the verdict
store's own file, so ``promptsieve report --store FILE`` finds verdicts and savings together.
It keeps task names, model names and integers — never prompt or answer text.

Counts are summed in memory and written every ``flush_interval_s`` seconds (by a daemon
thread, and at :meth:`flush`, :meth:`close` and interpreter exit) with one atomic UPSERT per
row, so many processes can share one file. A write that fails is logged and retried at the
next flush; it never reaches the caller.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from promptsieve._errors import ConfigError, StoreError
from promptsieve._events import ComparisonEvent, RequestEvent

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
    """A :class:`~promptsieve.SieveObserver` that keeps savings counts in SQLite.

    ``path``: SQLite file (default: the default verdict store's file). ``bucket_s``: width of
    a time bucket in seconds (default one hour). Raises :class:`ConfigError` for a bad
    bucket or interval, :class:`StoreError` when the file cannot be opened.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        bucket_s: int = 3600,
        flush_interval_s: float = 10.0,
    ) -> None:
        if bucket_s < 1:
            raise ConfigError(f"bucket_s must be >= 1 second, got {bucket_s}")
        if flush_interval_s < 0:
            raise ConfigError(f"flush_interval_s must be >= 0 seconds, got {flush_interval_s}")
        if path is None:
            from promptsieve.fidelity.store import default_store_path

            path = default_store_path()
        self.path = Path(path)
        self.bucket_s = int(bucket_s)
        self.flush_interval_s = float(flush_interval_s)
        self._lock = threading.Lock()
        self._rows: dict[tuple[int, str, str], LedgerRow] = {}
        self._last_flush = time.monotonic()
        self._closed = False  # after close(): every event is written at once
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"savings ledger {self.path}: {exc}") from exc
        ref = weakref.ref(self)
        atexit.register(lambda: (lambda s: s.close() if s is not None else None)(ref()))
        if self.flush_interval_s > 0:  # a quiet server still gets its counts written
            threading.Thread(
                target=_flush_periodically, args=(ref, self.flush_interval_s),
                name="promptsieve-savings", daemon=True,
            ).start()  # fmt: skip

    def __repr__(self) -> str:
        return f"SavingsLedger({str(self.path)!r})"

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
        if self._closed or time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def flush(self) -> bool:
        """Write the counts summed so far; True when written (False: kept for next time)."""
        with self._lock:
            rows, self._rows = self._rows, {}
            self._last_flush = time.monotonic()
        if not rows:
            return True
        cols = ", ".join(_COUNTS)
        marks = ", ".join("?" for _ in _COUNTS)
        sets = ", ".join(f"{c} = {c} + excluded.{c}" for c in _COUNTS)
        sql = (
            f"INSERT INTO savings (bucket, task, target_model, {cols}) VALUES (?, ?, ?, {marks}) "
            f"ON CONFLICT(bucket, task, target_model) DO UPDATE SET {sets}"
        )
        try:
            with self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for r in rows.values():
                        values = [getattr(r, c) for c in _COUNTS]
                        conn.execute(sql, (r.bucket, r.task, r.target_model, *values))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except (OSError, sqlite3.Error) as exc:
            log.warning("promptsieve: savings ledger %s: %s; kept for the next flush", self.path,
                        type(exc).__name__)  # fmt: skip
            with self._lock:
                for key, r in rows.items():
                    mine = self._rows.setdefault(key, LedgerRow(r.bucket, r.task, r.target_model))
                    for c in _COUNTS:
                        setattr(mine, c, getattr(mine, c) + getattr(r, c))
            return False
        return True

    def close(self) -> None:
        """Write what is left (also done at interpreter exit); later events are written at
        once (exit hooks registered earlier, e.g. a logging queue, may still deliver some)."""
        self._closed = True
        self.flush()


def _flush_periodically(ref: weakref.ReferenceType[SavingsLedger], interval: float) -> None:
    """Flush every ``interval`` seconds while the ledger lives (a daemon thread)."""
    while True:
        time.sleep(interval)
        ledger = ref()
        if ledger is None:
            return
        if ledger._rows:
            ledger.flush()
        del ledger


def read_ledger(path: str | Path) -> list[LedgerRow]:
    """Every row of the ledger in ``path``, oldest bucket first; [] when it has none.

    Raises :class:`StoreError` when the file cannot be read.
    """
    p = Path(path)
    if not p.is_file():
        raise StoreError(f"no such store file: {p}")
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
