"""RedisStore: verdicts shared by a fleet (see :mod:`promptsieve.fidelity.store`)."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from promptsieve._config_types import check_wait
from promptsieve._errors import ConfigError, StoreError, missing_extra
from promptsieve.fidelity._sqlite_store import is_redis_url, redacted_url
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

__all__ = ["RedisStore"]


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
#: Expiries at or past this (the year 9999; ``GateConfig(ttl=math.inf)`` included) are kept
#: without one: Redis refuses a PEXPIREAT that large, after the verdict was written.
_LATEST_EXPIRY_S = 253_402_300_800.0


def _check_url(url: object) -> None:
    """ConfigError unless ``url`` is a str redis-py's ``from_url`` takes (never shown: it
    may hold a password)."""
    if is_redis_url(url):
        return
    what = type(url).__name__
    if isinstance(url, str):
        scheme, sep, _ = url.partition("://")
        what = f"a {scheme}:// URL" if sep else "a str without a URL scheme"
    raise ConfigError(
        "RedisStore(url=...) must be a redis://, rediss:// or unix:// URL (lowercase, as "
        f"redis-py reads it), got {what}; a SQLite file goes to SQLiteStore(path)"
    )


class RedisStore:
    """Verdicts shared by a fleet through Redis (redis-py).

    Counts are HINCRBY inside a Lua script (atomic per comparison); verdict writes are a
    Lua compare-and-set on ``version``; keys expire a day after the verdict does.

    ``url``: a ``redis://``, ``rediss://`` or ``unix://`` URL (lowercase, as redis-py reads
    it), unused when ``client`` (a ``redis.Redis``) is given. Raises
    :class:`~promptsieve.ConfigError` for a ``url`` that is not such a str, or when redis-py
    is not installed.
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
        check_wait("RedisStore(socket_timeout_s=...)", socket_timeout_s, zero_ok=False)
        if client is None:
            _check_url(url)
            try:
                client = redis.Redis.from_url(
                    url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
                )
            except ValueError as exc:
                raise ConfigError(f"bad Redis URL {redacted_url(url)!r}: {exc}") from None
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
        expire = ""  # never expires: no expiry given, or one past what Redis stores
        if verdict.expires_at is not None and verdict.expires_at < _LATEST_EXPIRY_S:
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
