"""SQLiteStore, the embedded default verdict store (see :mod:`promptsieve.fidelity.store`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from promptsieve._errors import ConfigError, StoreError
from promptsieve._paths import existing_ancestor
from promptsieve.fidelity._verdict import (
    _CELLS,
    _NOISE_SLOT,
    Counts,
    StoredVerdict,
    Verdict,
    VerdictKey,
    _meta_of,
    _pair_slot,
    _slot,
    _stored,
    _verdict_of,
)
from promptsieve.fidelity.labelled import Pairs

__all__ = ["SQLiteStore", "default_store_path"]


def default_store_path() -> Path:
    from promptsieve._paths import cache_dir

    return cache_dir() / "verdicts.sqlite3"


# -- what a store location may be -----------------------------------------------------------

#: The URL prefixes redis-py's ``Redis.from_url`` takes. redis-py matches them
#: case-sensitively (``REDIS://`` is refused), and so does promptsieve.
REDIS_URL_PREFIXES = ("redis://", "rediss://", "unix://")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")  # two letters at least: "C://x" is a path
_SQLITE_HEADER = b"SQLite format 3\x00"


def is_redis_url(spec: object) -> bool:
    """True when ``spec`` is a str that redis-py's ``from_url`` takes: it starts with
    ``redis://``, ``rediss://`` or ``unix://`` (lowercase, as redis-py requires)."""
    return isinstance(spec, str) and spec.startswith(REDIS_URL_PREFIXES)


def check_store_location(owner: str, spec: object, *, redis: bool, hint: str = "") -> None:
    """Raise :class:`ConfigError` unless ``spec`` is None, a path (str or os.PathLike) or,
    with ``redis``, a Redis URL (:func:`is_redis_url`). Any other ``scheme://`` string is
    refused, naming the forms that fit: it would otherwise become a local file named
    ``http:/x``. ``owner`` names the setting (``"SieveConfig(store_path=...)"``); ``hint``
    is added when a Redis URL is given where only a file fits."""
    forms = "a SQLite file path (str or os.PathLike)"
    if redis:
        forms += " or a redis://, rediss:// or unix:// URL"
    if spec is None:
        return
    if not isinstance(spec, str | os.PathLike):
        shown = repr(spec)[:60]
        raise ConfigError(f"{owner} must be {forms}, got {type(spec).__name__} {shown}")
    if not isinstance(spec, str) or not _URL.match(spec):
        return
    if redis and is_redis_url(spec):
        return
    scheme = spec.partition("://")[0]  # the rest may hold a password: never shown
    if scheme.lower() + "://" in REDIS_URL_PREFIXES:
        if redis:  # only the case is wrong
            raise ConfigError(
                f"{owner}: write the URL scheme {scheme}:// as {scheme.lower()}:// "
                "(redis-py reads it case-sensitively)"
            )
        raise ConfigError(f"{owner} must be {forms}, not a {scheme}:// URL{hint}")
    raise ConfigError(f"{owner} must be {forms}; the URL scheme {scheme}:// is not supported")


def redacted_url(url: str) -> str:
    """``url`` with its user and password replaced by ``***``, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return scheme + sep + netloc + slash + tail


def check_sqlite_file(owner: str, path: str | os.PathLike[str]) -> None:
    """Raise :class:`ConfigError` when no SQLite store can ever live at ``path`` (checked
    without opening or creating anything): an empty path, a folder, something that is not a
    regular file, an existing non-empty file without the ``SQLite format 3`` header, or a
    path under a regular file. Permissions are not checked: a read-only store still serves
    verdicts, and a store that cannot be written fails open per request (``StoreError``)."""
    if isinstance(path, str) and not path.strip():
        raise ConfigError(f"{owner} is empty: give the SQLite file's path (None: the default)")
    p = Path(path).expanduser()
    try:
        if p.is_dir():
            example = str(p / "verdicts.sqlite3")
            raise ConfigError(
                f"{owner} {str(p)!r} is a folder: give the SQLite file's path, e.g. {example!r}"
            )
        if p.exists():
            if not p.is_file():
                raise ConfigError(f"{owner} {str(p)!r} is not a regular file")
            with p.open("rb") as f:
                head = f.read(len(_SQLITE_HEADER))
            if head and head != _SQLITE_HEADER:
                raise ConfigError(
                    f"{owner} {str(p)!r} exists and is not a SQLite database: give a new "
                    "file path or an existing verdict store"
                )
            return
        folder = existing_ancestor(p.absolute().parent)
        if folder is not None and not folder.is_dir():
            raise ConfigError(
                f"{owner} {str(p)!r} cannot be created: {str(folder)!r} is a file, not a folder"
            )
    except OSError:  # unreadable: the store reports it when it opens (StoreError, fail open)
        return


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

    ``path``: the SQLite file (str or os.PathLike; None: :func:`default_store_path`).
    Raises :class:`~promptsieve.ConfigError` for a ``path`` of another type or a URL (a
    ``redis://`` URL goes to :class:`RedisStore`), and :class:`~promptsieve.StoreError` when
    the file cannot be created or opened, or is not a SQLite database.
    """

    def __init__(self, path: str | Path | None = None, *, busy_timeout_s: float = 10.0) -> None:
        check_store_location(
            "SQLiteStore(path=...)", path, redis=False, hint="; use RedisStore(url) for it"
        )
        self.path = Path(path).expanduser() if path is not None else default_store_path()
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
