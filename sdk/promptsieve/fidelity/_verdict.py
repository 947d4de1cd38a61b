"""The verdict data model both stores share (re-exported by :mod:`promptsieve.fidelity.store`).

:class:`VerdictKey` (what a verdict is about), :class:`Verdict` and its :class:`Counts`, the
:class:`VerdictStore` protocol, and the codec both stores use: counter slots per ratio
(screening ``s``, monitoring ``m``, labelled pair cells ``p``, noise ``n``) and the verdict's
JSON meta (never prompt text; the key's settings only as a hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from promptsieve.fidelity.labelled import Pairs

__all__ = ["Counts", "StoredVerdict", "Verdict", "VerdictKey", "VerdictState", "VerdictStore"]


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
