"""The paper's repeated t-interval against promptsieve's tests, and e-BH, by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.screening_sim import agreement_times, ebh_simulation, t_interval_times, wilson

from promptsieve import ConfigError
from promptsieve.fidelity import SequentialTest, e_bh

TAU, DELTA, N = 0.9, 0.05, 50


def test_repeated_t_interval_is_invalid_under_optional_stopping() -> None:
    """Stopping at the first decisive look of a fixed-sample 95 % t-interval passes a task at
    the boundary most of the time; the mixture test at the same settings stays under delta."""
    agreed = np.random.default_rng(0).random((4000, N)) < TAU
    t_pass, t_fail = t_interval_times(agreed, TAU, 0.95, n_min=2)
    paper = float(np.mean((t_pass <= N) & (t_pass < t_fail)))
    t_pass10, t_fail10 = t_interval_times(agreed, TAU, 0.95, n_min=10)
    paper10 = float(np.mean((t_pass10 <= N) & (t_pass10 < t_fail10)))
    m_pass, m_fail = agreement_times(SequentialTest(TAU, DELTA, budget=None), agreed)
    ours = float(np.mean((m_pass <= N) & (m_pass < m_fail)))
    assert paper > 0.5 and paper10 > 4 * DELTA  # wildly above delta
    assert ours <= DELTA


def test_calls_to_pass_at_high_agreement_stay_at_the_limit() -> None:
    agreed = np.random.default_rng(98).random((3000, 100)) < 0.98
    t_pass, t_fail = agreement_times(SequentialTest(TAU, DELTA, budget=None), agreed)
    passed = (t_pass <= 100) & (t_pass < t_fail)
    assert float(np.median(t_pass[passed])) <= 30  # 29 is the minimum for any valid test
    assert wilson(int(passed.sum()), len(passed))[1] > 0.75


def test_e_bh_controls_the_false_discovery_share() -> None:
    res = ebh_simulation(60, seed=3, budget=100)
    for name in ("per-task", "e-BH, stopped at pass", "e-BH, screened on"):
        assert res[name]["fdr"] <= DELTA, name
    assert res["e-BH, screened on"]["true_discoveries"] > 10  # it has some power
    # stopping a task that cannot pass any more saves calls and changes no decision
    full = ebh_simulation(60, seed=3, budget=100, curtail=False)
    for name in ("per-task", "e-BH, screened on"):
        assert res[name]["discoveries"] == full[name]["discoveries"], name
        assert res[name]["fdr"] == full[name]["fdr"], name
        assert res[name]["calls_per_task"] < 0.8 * full[name]["calls_per_task"], name


def test_e_bh_procedure() -> None:
    """Wang & Ramdas (2022): k* = max{k : e_(k) >= K / (q k)}."""
    e = {"a": 100.0, "b": 45.0, "c": 25.0, "d": 0.5}
    assert e_bh(e, 0.1) == {"a", "b", "c"}  # 25 >= 4 / (0.1 * 3) = 13.3
    assert e_bh(e, 0.05) == {"a", "b"}  # 25 < 4 / (0.05 * 3) = 26.7; 45 >= 40
    assert e_bh({"a": 100.0, "b": 45.0, "c": 21.0}, 0.05) == {"a", "b", "c"}  # K = 3: 20
    assert e_bh(e, 0.05, k_total=40) == set()  # 100 < 40 / 0.05
    assert e_bh({"x": float("inf"), "y": float("nan")}, 0.05) == {"x"}
    assert e_bh({}, 0.05) == set()
    with pytest.raises(ConfigError, match="q must be"):
        e_bh(e, 1.5)
    with pytest.raises(ConfigError, match="k_total"):
        e_bh(e, 0.05, k_total=2)
