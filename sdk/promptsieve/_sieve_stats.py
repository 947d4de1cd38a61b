"""The sieve's counters: one thread-safe object, real fields, a plain-dict snapshot."""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any

from promptsieve.fidelity import Action

__all__ = ["SieveStats"]


@dataclass
class SieveStats:
    """Counters of one sieve (and of LangChain sieves derived from it); thread-safe.

    Token counts are estimates with the target model's tokenizer, replaced by the server's
    own ``usage`` where the response reports it. Read fields directly, or take
    :meth:`snapshot` (a plain dict for logs and dashboards).
    """

    #: Requests prepared.
    requests: int = 0
    #: Requests sent compressed.
    compressed: int = 0
    #: Compressions the instance guard refused (live and shadow).
    guard_skips: int = 0
    #: Internal faults the request path absorbed (the original went out).
    errors: int = 0
    #: Requests whose scoring exceeded ``scoring_budget_ms`` (also counted in ``errors``).
    timeouts: int = 0
    #: Requests sent unchanged because the proxy was still loading.
    warming: int = 0
    #: Prompt tokens of the originals / of what was sent.
    tokens_before: int = 0
    tokens_after: int = 0
    #: Responses that reported usage, and the prompt tokens they reported.
    usage_reports: int = 0
    prompt_tokens_reported: int = 0
    #: Target calls made for background comparisons.
    screening_calls: int = 0
    #: Completed comparisons, and how they came out.
    comparisons: int = 0
    agreements: int = 0
    disagreements: int = 0
    #: Noise-floor comparisons (original vs a meaning-preserving rewrite of itself; never in
    #: the test) and how many of them agreed (``GateConfig.noise_rate``).
    noise_comparisons: int = 0
    noise_agreements: int = 0
    #: Labelled mode: judge calls that raised (that comparison is not counted).
    judge_errors: int = 0
    #: Comparisons whose target call failed (not counted in the test).
    comparison_errors: int = 0
    #: Comparisons not started because ``max_pending`` comparisons were already queued.
    comparisons_skipped: int = 0
    #: Comparisons given up at :meth:`Sieve.close`, interpreter exit or cancellation.
    comparisons_abandoned: int = 0
    #: Gate decisions by action ("bypass", "shadow", "apply").
    decisions: dict[str, int] = field(default_factory=lambda: {a.value: 0 for a in Action})
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to named counters atomically; raises AttributeError for an unknown name."""
        with self._lock:
            for name, n in counts.items():
                if name not in _COUNTERS:
                    raise AttributeError(f"SieveStats has no counter {name!r}")
                setattr(self, name, getattr(self, name) + n)

    def decided(self, action: Action) -> None:
        with self._lock:
            self.decisions[action.value] = self.decisions.get(action.value, 0) + 1

    @property
    def tokens_saved(self) -> int:
        """Estimated prompt tokens not sent (``tokens_before - tokens_after``)."""
        with self._lock:
            return self.tokens_before - self.tokens_after

    def snapshot(self) -> dict[str, Any]:
        """Every counter as a plain dict, plus ``decisions`` and ``tokens_saved``."""
        with self._lock:
            out: dict[str, Any] = {name: getattr(self, name) for name in _COUNTERS}
            out["decisions"] = dict(self.decisions)
        out["tokens_saved"] = out["tokens_before"] - out["tokens_after"]
        return out

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at fork time


_COUNTERS: tuple[str, ...] = tuple(
    f.name
    for f in dataclasses.fields(SieveStats)
    if f.type in ("int", int) and not f.name.startswith("_")
)
