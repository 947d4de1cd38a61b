"""How a :class:`~promptsieve.Sieve` is configured, and what it needs from its parts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from promptsieve._config_types import check_field_types, check_wait
from promptsieve._errors import ConfigError
from promptsieve.fidelity import Decision, GateConfig, TargetOutput, VerdictKey
from promptsieve.fidelity.gate import check_guard_threshold
from promptsieve.prompt import Request

if TYPE_CHECKING:
    from promptsieve.compressor import CompressorConfig

__all__ = ["CompressorLike", "GateLike", "SieveConfig"]


class CompressorLike(Protocol):
    """What the sieve needs from a compressor (``promptsieve.Compressor`` fits).

    ``compress`` returns an object with ``prompt`` and ``changed``; a ``similarity``
    attribute (float) on it spares the instance guard the :meth:`similarity` call, and a
    ``passage_similarity`` attribute (float, ``Compression.passage_similarity``: the cosine
    over the kept passages only) is tested instead of it when present.
    """

    @property
    def fingerprint(self) -> str: ...
    def compress(self, prompt: Any, *, ratio: float | None = ...) -> Any: ...
    def similarity(self, a: str, b: str) -> float: ...


class GateLike(Protocol):
    """What the sieve needs from a gate (``promptsieve.fidelity.Gate`` fits)."""

    def decide(self, key: VerdictKey) -> Decision: ...
    def record(self, key: VerdictKey, ratio: float, agreed: bool | None) -> None: ...


#: SieveConfig(judge=...) with a gate in agreement mode, which never reads the judge's labels.
_JUDGE_NEEDS_LABELLED = (
    "SieveConfig(judge=...) labels answers for a gate in labelled mode, but the gate is in "
    "agreement mode and would never read them: pass GateConfig(mode='labelled') "
    "(SieveConfig(gate=...), or Gate(store, GateConfig(mode='labelled'))), or drop judge"
)


@dataclass(frozen=True)
class SieveConfig:
    """How the sieve decides; wrong values raise :class:`ConfigError` at construction
    (``store_path`` included: see its comment)."""

    #: False = explicit opt-out of screening: compress every request at ``ratio``.
    verify: bool = True
    #: The fixed ratio used when ``verify`` is False (required then).
    ratio: float | None = None
    #: Task name used when neither ``promptsieve.task(...)`` nor the adapter names one;
    #: None derives it from target model + system prompt + compressor settings.
    task: str | None = None
    #: Passed to ``Gate(store, gate)`` when the sieve builds its own gate (ratio ladder, τ, δ).
    gate: GateConfig | None = None
    #: SQLite file of the default verdict store (None: the store's own default path).
    #: Checked at construction (ConfigError): not a folder, not an existing non-SQLite file,
    #: not a URL, and creatable (missing parent folders are created). For a Redis store
    #: pass ``Sieve(config, gate=Gate(RedisStore(url), config.gate))``.
    store_path: str | Path | None = None
    #: Passed to ``Compressor(compressor)`` when the sieve builds its own compressor.
    compressor: CompressorConfig | None = None
    #: Agreement metric: "exact", "numeric", "choice", "json", "tool_calls", "f1:0.8",
    #: "cosine:0.9", a callable (the target as judge: ``target_judge(complete)``), or None to
    #: pick one from the original output's shape. The string "judge" is offline only.
    metric: str | Callable[[TargetOutput, TargetOutput], bool] | None = None
    #: Live labelled mode (``GateConfig(mode="labelled")``): ``judge(request, output)`` says
    #: whether ``output`` answers ``request`` correctly (a gold lookup, or a call to a judge
    #: model). Each shadow comparison then reports the pair of labels with
    #: ``Gate.record_pair``; a judge that raises reports "not counted", never a label.
    judge: Callable[[Request, TargetOutput], bool] | None = None
    #: Instance guard: keep the original when the proxy's cosine between original and
    #: compressed text falls below the threshold (no target call is spent on it). For the
    #: coarse-to-fine budget the cosine is taken over the passages it kept
    #: (``Compression.passage_similarity``): passages dropped whole are left out of both sides.
    guard: bool = True
    #: None: the gate config's ``guard_threshold`` (0.8 by default).
    guard_threshold: float | None = None
    #: Scoring time budget per request (finite, > 0); past it the original goes out.
    scoring_budget_ms: float = 500.0
    #: Threads that score prompts (the caller waits at most the budget for one).
    scoring_workers: int = 2
    #: Threads that send shadow/monitor comparisons to the target.
    max_background: int = 2
    #: Comparisons queued or running at most (memory and target calls in flight).
    max_pending: int = 8
    #: When ``max_pending`` comparisons are already queued: "wait" holds the live call up to
    #: ``backpressure_wait_ms`` for a slot (screening keeps pace with the traffic; latency is
    #: added only while screening, under load); "skip" drops the comparison at once. Skips
    #: are counted (``SieveStats.comparisons_skipped``) and logged. See docs/architecture.md.
    backpressure: Literal["wait", "skip"] = "wait"
    backpressure_wait_ms: float = 1000.0
    #: At :meth:`Sieve.close` and at interpreter exit: seconds to wait for in-flight
    #: comparisons before abandoning them (counted in ``comparisons_abandoned``).
    drain_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.ratio is not None and not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"ratio must be in (0, 1], got {self.ratio!r}")
        if not self.verify and self.ratio is None:
            raise ConfigError("verify=False applies a fixed ratio: set SieveConfig(ratio=...)")
        if self.guard_threshold is not None:
            check_guard_threshold(self.guard_threshold)
        # waits the platform can take: longer ones overflow every lock wait (OverflowError)
        check_wait("scoring_budget_ms", self.scoring_budget_ms, zero_ok=False, unit="ms")
        for name in ("scoring_workers", "max_background", "max_pending"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        check_wait("backpressure_wait_ms", self.backpressure_wait_ms, unit="ms")
        check_wait("drain_timeout_s", self.drain_timeout_s)
        labelled = self.gate is not None and self.gate.mode == "labelled"
        if labelled and self.judge is None:
            raise ConfigError(
                "GateConfig(mode='labelled') on live traffic needs SieveConfig(judge=...): a "
                "callable (request, output) -> bool that labels an answer correct"
            )
        if self.judge is not None and self.gate is not None and not labelled:
            raise ConfigError(_JUDGE_NEEDS_LABELLED)
        if self.task is not None and not self.task.strip():
            raise ConfigError("task must be a non-empty string")
        if self.store_path is not None:
            from promptsieve.fidelity._sqlite_store import check_sqlite_file, check_store_location

            owner = "SieveConfig(store_path=...)"
            hint = "; for Redis pass Sieve(config, gate=Gate(RedisStore(url), config.gate))"
            check_store_location(owner, self.store_path, redis=False, hint=hint)
            check_sqlite_file(owner, self.store_path)
        from promptsieve.fidelity import get_metric, metric_name

        metric_name(self.metric)  # a name or a callable
        if self.metric == "judge":  # live traffic has no completion function to judge with
            raise ConfigError(
                'metric="judge" names the offline judge (screen(), promptsieve screen --metric '
                "judge); on live traffic pass the judge itself: "
                "SieveConfig(metric=target_judge(complete)), complete(prompt) -> TargetOutput"
            )
        if isinstance(self.metric, str):
            # an unknown name or a bad threshold raises ConfigError now; cosine's embedding
            # is the compressor's proxy, checked by the Sieve (a stand-in here, never called)
            get_metric(self.metric, embed=_never_called)

    def settings_key(self) -> str:
        """Sieve settings that change what a verdict means (part of the verdict key).

        Only the test's meaning counts (metric, guard, τ, δ, the ladder): rates, budgets and
        TTLs do not, so ``promptsieve screen --store`` and a live sieve agree on the key.
        """
        from promptsieve.fidelity.keys import settings_key

        return settings_key(
            self.gate,
            metric=self.metric,
            guard=self.guard,
            guard_threshold=self.guard_threshold,
        )


def _never_called(*_: Any) -> Any:  # stands in for the proxy's embed when a name is checked
    raise AssertionError("never called")
