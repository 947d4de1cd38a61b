"""The screen-and-apply gate on a real SQLite store (and a dead Redis for outages)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from promptsieve import ConfigError
from promptsieve.fidelity import (
    Action,
    Gate,
    GateConfig,
    RedisStore,
    SQLiteStore,
    VerdictKey,
    VerdictState,
    guard_ok,
)

KEY = VerdictKey("qa", "gemma-3-270m", "proxy-1", "s1")


class Clock:
    """A settable clock (TTL tests cannot wait a week)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _gate(tmp_path: Path, clock: Clock, **cfg: object) -> Gate:
    config = GateConfig(**{"ratios": (0.8, 0.5, 0.3), "seed": 0, "ttl": 3600.0, **cfg})  # type: ignore[arg-type]
    return Gate(SQLiteStore(tmp_path / "v.sqlite3"), config, clock=clock)


def _drive(gate: Gate, agree: Callable[[float], bool], until: int = 1000) -> list[str]:
    """Send requests through the gate, answering shadow comparisons with ``agree(ratio)``."""
    seen = []
    for _ in range(until):
        d = gate.decide(KEY)
        seen.append(f"{d.action.value}:{d.ratio}")
        if d.action is Action.SHADOW:
            assert d.ratio is not None
            gate.record(KEY, d.ratio, agree(d.ratio))
        elif d.action is Action.APPLY or d.action is Action.BYPASS:
            v = gate.verdict(KEY)
            if v is not None and v.state is not VerdictState.SCREENING:
                break
    return seen


def test_ladder_walks_to_the_most_aggressive_passing_ratio(tmp_path: Path) -> None:
    clock = Clock()
    gate = _gate(tmp_path, clock, monitor_rate=0.0)
    seen = _drive(gate, lambda r: r >= 0.5)
    assert seen.count("shadow:0.8") == 30 and seen.count("shadow:0.5") == 30
    assert 1 <= seen.count("shadow:0.3") <= 10  # all disagree: fails fast
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.PASSED and v.ratio == 0.5
    assert v.lower is not None and v.counts_at(0.8).n == 30
    d = gate.decide(KEY)
    assert d.action is Action.APPLY and d.ratio == 0.5 and not d.monitor


def test_first_ratio_failing_fails_and_expiry_rescreens(tmp_path: Path) -> None:
    clock = Clock()
    gate = _gate(tmp_path, clock)
    _drive(gate, lambda r: False)
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.FAILED and v.ratio is None
    assert gate.decide(KEY).action is Action.BYPASS
    clock.now += 3601  # TTL over: re-screen as a new generation from the first ratio
    d = gate.decide(KEY)
    assert d.action is Action.SHADOW and d.ratio == 0.8
    v2 = gate.verdict(KEY)
    assert v2 is not None and v2.generation == v.generation + 1 and v2.counts_at(0.8).n == 0


def test_budget_runs_out_and_in_flight_is_capped(tmp_path: Path) -> None:
    clock = Clock()
    gate = _gate(tmp_path, clock, budget=5)
    first = [gate.decide(KEY).action for _ in range(8)]  # nothing reported back yet
    assert first.count(Action.SHADOW) == 5 and first[5:] == [Action.BYPASS] * 3
    for _ in range(5):
        gate.record(KEY, 0.8, True)  # 5 agreements cannot pass at tau=0.9: budget
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.FAILED and v.reason == "budget"


def test_monitoring_revokes_and_ttl_rescreens(tmp_path: Path) -> None:
    clock = Clock()
    gate = _gate(tmp_path, clock, ratios=(0.8,), monitor_rate=1.0)
    _drive(gate, lambda r: True)
    d = gate.decide(KEY)
    assert d.action is Action.APPLY and d.monitor and d.ratio == 0.8
    applied = 0
    while d.action is Action.APPLY:
        applied += 1
        gate.record(KEY, 0.8, applied % 2 == 0)  # the target drifted: half disagree
        d = gate.decide(KEY)
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.REVOKED and v.upper is not None
    assert v.upper < 0.9 and applied < 40
    assert d.action is Action.BYPASS
    clock.now += 3601
    assert gate.decide(KEY).action is Action.SHADOW


def test_monitoring_keeps_a_good_verdict(tmp_path: Path) -> None:
    clock = Clock()
    gate = _gate(tmp_path, clock, ratios=(0.8,), monitor_rate=1.0)
    _drive(gate, lambda r: True)
    for i in range(200):
        gate.record(KEY, 0.8, i % 50 != 0)  # 98 % agreement
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.PASSED and v.monitor.n == 200


def test_errors_and_stale_results_are_not_counted(tmp_path: Path) -> None:
    clock = Clock()
    gate = _gate(tmp_path, clock)
    assert gate.decide(KEY).action is Action.SHADOW
    gate.record(KEY, 0.8, None)  # target error
    gate.record(KEY, 0.5, True)  # a ratio that is not under test
    v = gate.verdict(KEY)
    assert v is not None and v.counts_at(0.8).n == 0 and v.counts_at(0.5).n == 0


def test_shadow_sampling_is_seeded(tmp_path: Path) -> None:
    runs = []
    for i in range(2):
        gate = _gate(tmp_path / str(i), Clock(), shadow_rate=0.3, seed=42)
        runs.append([gate.decide(KEY).action for _ in range(60)])
    assert runs[0] == runs[1]
    assert 5 <= runs[0].count(Action.SHADOW) <= 35


def test_store_outage_bypasses_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gate = Gate(RedisStore(f"redis://127.0.0.1:{port}/0", socket_timeout_s=0.3), GateConfig())
    with caplog.at_level(logging.WARNING, logger="promptsieve.fidelity.gate"):
        for _ in range(3):
            assert gate.decide(KEY).action is Action.BYPASS
        gate.record(KEY, 0.8, True)  # does not raise either
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_config_validation_and_guard() -> None:
    for bad in (
        {"tau": 1.0},
        {"ratios": ()},
        {"ratios": (0.5, 0.5)},
        {"monitor_rate": 2.0},
        {"budget": 0},
        {"ratios": (1.5,)},
    ):
        with pytest.raises(ConfigError):
            GateConfig(**bad)  # type: ignore[arg-type]
    assert guard_ok(0.9, 0.8) and not guard_ok(0.7, 0.8)
