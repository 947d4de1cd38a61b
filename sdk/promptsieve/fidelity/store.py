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

The data model lives in ``_verdict``, the stores in ``_sqlite_store`` and ``_redis_store``;
this module is their public face.
"""

from __future__ import annotations

from promptsieve.fidelity._redis_store import RedisStore
from promptsieve.fidelity._sqlite_store import (
    SQLiteStore,
    check_sqlite_file,
    check_store_location,
    default_store_path,
    is_redis_url,
)
from promptsieve.fidelity._verdict import (
    Counts,
    StoredVerdict,
    Verdict,
    VerdictKey,
    VerdictState,
    VerdictStore,
)
from promptsieve.fidelity.labelled import Pairs as Pairs  # kept importable from here

__all__ = [
    "Counts",
    "RedisStore",
    "SQLiteStore",
    "StoredVerdict",
    "Verdict",
    "VerdictKey",
    "VerdictState",
    "VerdictStore",
    "check_sqlite_file",
    "check_store_location",
    "default_store_path",
    "is_redis_url",
]
