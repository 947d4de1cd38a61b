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
    gate = _gate(tmp_path, clock, budget=30)
    first = [gate.decide(KEY).action for _ in range(33)]  # nothing reported back yet
    assert first.count(Action.SHADOW) == 30 and first[30:] == [Action.BYPASS] * 3
    for i in range(30):  # the 30th comparison disagrees: the budget is spent without a pass
        gate.record(KEY, 0.8, i < 29)
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.FAILED and v.reason == "budget"
    assert v.counts_at(0.8).n == 30


def test_screening_stops_once_no_pass_is_left_within_the_budget(tmp_path: Path) -> None:
    """Curtailment: at tau 0.9 three disagreements need 113 agreements to pass, more than a
    budget of 100 holds, so the rung fails at the third instead of spending 97 more calls;
    the next rung is not tried (fixed sequence). A budget no rung can pass is refused."""
    clock = Clock()
    gate = _gate(tmp_path, clock, monitor_rate=0.0)
    answers = iter([True, True, True, False] * 25)
    seen = _drive(gate, lambda r: next(answers))
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.FAILED
    assert v.reason == "cannot pass within the budget" and v.counts_at(0.8).n == 12
    assert v.counts_at(0.8).agree == 9 and len(seen) == 13 and v.counts_at(0.5).n == 0
    # Bonferroni closes a curtailed rung and keeps the others open
    bon = _gate(tmp_path / "b", clock, monitor_rate=0.0, ladder_test="bonferroni")
    at_03 = iter([True, True, True, True, False] * 20)  # 0.3 agrees 80 %
    while (d := bon.decide(KEY)).action is Action.SHADOW:
        assert d.ratio is not None
        bon.record(KEY, d.ratio, d.ratio != 0.3 or next(at_03))
    bv = bon.verdict(KEY)
    assert bv is not None and bv.state is VerdictState.PASSED and bv.ratio == 0.5
    assert bv.counts_at(0.3).n == 10  # at delta/3 its second disagreement leaves no pass
    with pytest.raises(ConfigError, match="needs at least 30; raise budget"):
        GateConfig(budget=29)
    with pytest.raises(ConfigError, match=r"delta/4 = 0\.0125"):
        GateConfig(budget=40, ratios=(0.8, 0.65, 0.5, 0.35), ladder_test="bonferroni")
    assert GateConfig(budget=5, tau=0.5).budget == 5


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


# -- labelled mode, noise floor, e-values, e-BH ---------------------------------------------


def test_labelled_mode_walks_the_ladder_on_pairs(tmp_path: Path) -> None:
    """Compression that helps passes in labelled mode (agreement would fail it)."""
    clock = Clock()
    gate = _gate(tmp_path, clock, mode="labelled", rho=0.9, monitor_rate=0.5, budget=300)
    i = 0
    while True:
        d = gate.decide(KEY)
        if d.action is not Action.SHADOW:
            break
        assert d.ratio is not None
        i += 1
        if d.ratio == 0.3:  # the aggressive rung breaks every right answer
            gate.record_pair(KEY, d.ratio, True, False)
        else:  # original right 60 %, compressed right whenever the original was, plus gains
            gate.record_pair(KEY, d.ratio, i % 5 < 3, i % 5 < 4)
        gate.record(KEY, d.ratio, False)  # agreement results are not counted in this mode
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.PASSED and v.ratio == 0.5
    assert v.pairs_at(0.8).n > 0 and v.counts_at(0.8).n == 0
    assert v.e_value is not None and v.e_value >= 20
    d = gate.decide(KEY)
    assert d.action is Action.APPLY and d.ratio == 0.5 and not d.monitor  # no label to monitor
    # a judge failure (None) is not counted
    gate2 = _gate(tmp_path / "b", clock, mode="labelled")
    gate2.decide(KEY)
    gate2.record_pair(KEY, 0.8, True, None)
    v2 = gate2.verdict(KEY)
    assert v2 is not None and v2.pairs_at(0.8).n == 0


def test_bonferroni_reaches_rungs_behind_a_failing_one(tmp_path: Path) -> None:
    """Fixed sequence stops at a failing 0.8; Bonferroni tests 0.8, 0.5 and 0.3 side by side
    at delta/3, one rung per shadowed request, and applies 0.5, the most aggressive pass."""
    clock = Clock()
    fixed = _gate(tmp_path / "f", clock, monitor_rate=0.0)
    _drive(fixed, lambda r: r == 0.5)
    fv = fixed.verdict(KEY)
    assert fv is not None and fv.state is VerdictState.FAILED and fv.counts_at(0.5).n == 0

    gate = _gate(tmp_path / "b", clock, monitor_rate=0.0, ladder_test="bonferroni")
    seen = _drive(gate, lambda r: r == 0.5)
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.PASSED and v.ratio == 0.5
    assert v.testing == 0.5 and v.reason == "passed at delta/3"
    # the failing rungs stop early; 0.5 needs more agreements than the 30 it needs at delta
    assert 1 <= seen.count("shadow:0.8") <= 10 and 1 <= seen.count("shadow:0.3") <= 10
    n05 = seen.count("shadow:0.5")
    assert v.counts_at(0.5).n == n05 and 30 < n05 <= 100
    state = gate.evaluate(v.counts_at(0.5))
    assert v.e_value == pytest.approx(state.e_value / 3) and state.e_value >= 3 / 0.05
    d = gate.decide(KEY)
    assert d.action is Action.APPLY and d.ratio == 0.5
    # the setting is part of the verdict key: a fixed-sequence sieve never reads this verdict
    from promptsieve.fidelity import settings_key

    assert settings_key(GateConfig()) != settings_key(GateConfig(ladder_test="bonferroni"))


def test_bonferroni_stops_when_the_most_aggressive_rung_passes(tmp_path: Path) -> None:
    """Rungs less aggressive than a pass are moot: once 0.3 passes, screening ends there even
    if 0.8 is still open; comparisons for a decided rung are no longer counted."""
    clock = Clock()
    gate = _gate(tmp_path, clock, monitor_rate=0.0, ladder_test="bonferroni", budget=300)
    rungs: list[float] = []
    while (d := gate.decide(KEY)).action is Action.SHADOW:
        assert d.ratio is not None
        rungs.append(d.ratio)
        # 0.8 agrees 90 %: undecided for long; 0.5 and 0.3 always agree
        gate.record(KEY, d.ratio, d.ratio != 0.8 or len(rungs) % 10 != 0)
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.PASSED and v.ratio == 0.3
    assert v.counts_at(0.8).n < 100 and set(rungs) == {0.8, 0.5, 0.3}
    gate.record(KEY, 0.5, False)  # a late result for a rung that decided: not counted
    assert gate.verdict(KEY).counts_at(0.5).n == v.counts_at(0.5).n  # type: ignore[union-attr]
    # labelled mode, by pairs: only the rung that helps passes
    lab = _gate(tmp_path / "l", clock, mode="labelled", ladder_test="bonferroni", budget=200)
    i = 0
    while (d := lab.decide(KEY)).action is Action.SHADOW:
        assert d.ratio is not None
        i += 1
        if d.ratio == 0.5:  # gains: the compressed answer is right whenever the original is
            lab.record_pair(KEY, d.ratio, i % 5 < 3, i % 5 < 4)
        else:  # losses at 0.8 and 0.3
            lab.record_pair(KEY, d.ratio, True, i % 3 == 0)
    lv = lab.verdict(KEY)
    assert lv is not None and lv.state is VerdictState.PASSED and lv.ratio == 0.5


def test_e_value_is_recorded_per_verdict(tmp_path: Path) -> None:
    clock = Clock()
    gate = _gate(tmp_path, clock, monitor_rate=0.0)
    _drive(gate, lambda r: r >= 0.5)
    v = gate.verdict(KEY)
    assert v is not None and v.state is VerdictState.PASSED
    # the smallest over the two rungs that passed: each crossed 1/delta at its 30th agreement
    state = gate.evaluate(v.counts_at(0.8))
    assert v.e_value is not None and 20 <= v.e_value <= state.e_value
    failed = _gate(tmp_path / "f", clock)
    _drive(failed, lambda r: False)
    fv = failed.verdict(KEY)
    assert fv is not None and fv.state is VerdictState.FAILED and fv.e_value is not None
    assert fv.e_value < 1


def test_noise_decisions_and_floor_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    gate = _gate(tmp_path, clock, noise_rate=0.25)
    noise = shadow = 0
    for i in range(200):
        d = gate.decide(KEY)
        if d.action is not Action.SHADOW:
            continue
        assert d.ratio is not None
        if d.noise:
            noise += 1
            gate.record_noise(KEY, i % 3 == 0)  # the target agrees with itself 1/3 of the time
        else:
            shadow += 1
            gate.record(KEY, d.ratio, i % 40 != 0)  # stays undecided for a while
    assert noise > 0 and shadow > 0 and 0.1 < noise / (noise + shadow) < 0.45
    floor = gate.noise_floor(KEY)
    assert floor is not None and floor.n == noise and floor.upper < 0.9 and floor.tau_above_floor
    assert sum("noise floor" in r.getMessage() for r in caplog.records) == 1  # warned once
    assert gate.config.tau == 0.9  # never lowered
    assert gate.noise_floor(VerdictKey("other", "m", "p", "s")) is None


def test_fdr_mode_applies_only_e_bh_discoveries(tmp_path: Path) -> None:
    """Two tasks pass alone; with fdr_q, only those e-BH discovers across the store apply."""
    clock = Clock()
    store = SQLiteStore(tmp_path / "v.sqlite3")
    cfg = GateConfig(ratios=(0.8,), seed=0, monitor_rate=0.0, fdr_q=0.05)
    gate = Gate(store, cfg, clock=clock)
    keys = [VerdictKey(f"t{i}", "m", "p", "s") for i in range(4)]
    for k, good in zip(keys, (True, True, False, False), strict=True):
        for _ in range(200):
            d = gate.decide(k)
            if d.action is not Action.SHADOW:
                break
            gate.record(k, 0.8, good)
    states = [store.get(k).state for k in keys]
    assert states == [VerdictState.PASSED] * 2 + [VerdictState.FAILED] * 2
    # K = 4 tasks, 2 passed with e ~ 1/delta = 20 < K / (q * 2) = 40: e-BH holds them back
    clock.now += 31  # the gate recomputes e-BH over the store at most every 30 s
    assert [gate.decide(k).action for k in keys[:2]] == [Action.BYPASS] * 2
    plain = Gate(store, GateConfig(ratios=(0.8,), monitor_rate=0.0), clock=clock)
    assert plain.decide(keys[0]).action is Action.APPLY
    # with strong evidence (a large e-value) the task is discovered
    v = store.get(keys[0])
    assert v is not None
    assert store.put(keys[0], v.replace(e_value=1e6), expected_version=v.version)
    fresh = Gate(store, cfg, clock=clock)
    assert fresh.decide(keys[0]).action is Action.APPLY
    assert fresh.decide(keys[1]).action is Action.BYPASS


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"mode": "labelled", "epsilon": 0.7}, r"epsilon must be in \[0.0, 0.5\]"),
        ({"mode": "labelled", "rho": 0.2}, r"rho must be in \[0.5, 1.0\]"),
        ({"epsilon": 0.05}, "margins of mode='labelled'"),
        ({"mode": "nope"}, r"mode=...\) must be one of .agreement., .labelled."),
        ({"noise_rate": 1.0}, "noise_rate"),
        ({"fdr_q": 0.0}, "fdr_q"),
        ({"ladder_test": "bonferroni", "fdr_q": 0.1}, "fixed_sequence' only"),
        ({"ladder_test": "parallel"}, "ladder_test"),
    ],
)
def test_new_settings_are_validated(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GateConfig(**kw)


def test_fdr_mode_screens_on_until_e_bh_can_discover(tmp_path: Path) -> None:
    """With fdr_q, a rung that passes alone keeps screening until e >= K/q (K = 4 tasks in the
    store: 80), so e-BH applies it whatever the other tasks do."""
    clock = Clock()
    store = SQLiteStore(tmp_path / "v.sqlite3")
    cfg = GateConfig(ratios=(0.8,), seed=0, monitor_rate=0.0, fdr_q=0.05)
    gate = Gate(store, cfg, clock=clock)
    keys = [VerdictKey(f"t{i}", "m", "p", "s") for i in range(4)]
    for k in keys:
        assert gate.decide(k).action is Action.SHADOW  # all four tasks are in the store
    used = []
    for k, good in zip(keys, (True, True, False, False), strict=True):
        n = 0
        while gate.decide(k).action is Action.SHADOW:
            gate.record(k, 0.8, good)
            n += 1
        used.append(n)
    v = [store.get(k) for k in keys]
    assert [x.state for x in v if x] == [VerdictState.PASSED] * 2 + [VerdictState.FAILED] * 2
    assert all(x is not None and x.e_value is not None and x.e_value >= 80 for x in v[:2])
    assert used[0] > 30  # more than a plain pass needs (30), fewer than the budget
    assert used[0] < 100
    clock.now += 31
    assert [gate.decide(k).action for k in keys] == [Action.APPLY] * 2 + [Action.BYPASS] * 2
