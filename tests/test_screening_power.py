"""The screening-power benchmark decides each rung exactly as the SDK's tests do."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from benchmarks.curtailment import savings
from benchmarks.screening_power import (
    BUDGET,
    DELTA,
    TAU,
    load_outcomes,
    procedure_runs,
    rung_decision,
)

from promptsieve.fidelity.labelled import NonInferiorityTest
from promptsieve.fidelity.stats import Outcome, SequentialTest


def _cells(n: int, p_o: float, p_gain: float, p_loss: float, seed: int) -> np.ndarray:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        o = rng.random() < p_o
        c = (not o and rng.random() < p_gain) or (o and rng.random() >= p_loss)
        rows.append((o, c, o == c if rng.random() < 0.9 else o != c))
    return np.array(rows, dtype=bool)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["labelled", "agreement"])
def test_rung_decision_matches_the_sdk_tests_pair_by_pair(mode: str, seed: int) -> None:
    cells = _cells(100, 0.5, 0.25, 0.03 * seed, seed)
    delta = 0.05 / (1 + seed % 3)
    test = NonInferiorityTest(delta, 100) if mode == "labelled" else SequentialTest(0.9, delta, 100)
    state = None
    for o, c, a in cells:
        state = test.update(bool(o), bool(c)) if mode == "labelled" else test.update(bool(a))
        if state.decision is not Outcome.CONTINUE:
            break
    assert state is not None
    assert rung_decision(cells, mode, delta) == (state.decision is Outcome.PASS, state.n)


@pytest.mark.parametrize("mode", ["labelled", "agreement"])
def test_a_larger_budget_is_the_sdk_test_with_that_budget(mode: str) -> None:
    """``budget`` (GateConfig.budget) sets both the cut and the test's own horizon: on 400
    neutral pairs a 400-pair rung decides as the SDK's 400-budget test, past pair 100."""
    cells = _cells(400, 0.6, 0.08, 0.05, 7)
    budget = 400
    test = (
        NonInferiorityTest(DELTA, budget)
        if mode == "labelled"
        else SequentialTest(TAU, DELTA, budget)
    )
    state = None
    for o, c, a in cells:
        state = test.update(bool(o), bool(c)) if mode == "labelled" else test.update(bool(a))
        if state.decision is not Outcome.CONTINUE:
            break
    assert state is not None and state.n > BUDGET  # decided past the default budget
    assert rung_decision(cells, mode, DELTA, budget=budget) == (
        state.decision is Outcome.PASS,
        state.n,
    )
    assert rung_decision(cells, mode, DELTA)[1] <= BUDGET  # the default budget stops at 100


def test_procedures_on_a_non_monotone_ladder() -> None:
    """A neutral conservative rung blocks fixed sequence; Bonferroni reaches the rung that
    helps, and the bootstrap counts it."""
    rows = []
    for i in range(40):
        item = f"t:{i}"
        o = i % 2 == 0
        rows.append({"suite": "s", "item": item, "method": "none", "ratio": 1.0, "correct": o})
        # 0.8: one loss in four right answers (inferior); 0.5: always right (a gain)
        loss = o and i % 8 == 0
        rows += [
            {"suite": "s", "item": item, "method": "m", "ratio": 0.8, "correct": o and not loss,
             "agree": not loss, "error": None},
            {"suite": "s", "item": item, "method": "m", "ratio": 0.5, "correct": True,
             "agree": o, "error": None},
        ]  # fmt: skip
    out = load_outcomes({"rows": rows}, "m")
    assert out.ratios == (0.8, 0.5) and len(out.items) == 40
    fixed = procedure_runs(out, "fixed_sequence", "labelled", runs=40)
    both = procedure_runs(out, "bonferroni", "labelled", runs=40)
    assert fixed["applied"].get("0.5", 0) == 0 and fixed["pass"][0] < 0.2
    assert both["applied"]["0.5"] >= 36 and both["pass_at_2x"][0] >= 0.9
    assert both["calls"] > fixed["calls"]
    with pytest.raises(ValueError, match="no item"):
        load_outcomes({"rows": rows}, "absent")


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.mark.parametrize(
    "run",
    [
        "headline",
        "headline-ratios",
        "headline-ratios-bonferroni",
        "headline-bbh",
        "headline-vitaminc",
        "standard",
    ],
)
def test_replay_reproduces_what_screen_decided_on_the_committed_runs(run: str) -> None:
    """The bench screened each method with the SDK's ``screen()`` on its items in order; the
    replay of the same outcomes in the same order, uncurtailed as the runs were made, applies
    the same ratio and spends the same compressed calls, in both modes and under both ladder
    tests ("headline": passes at 0.5 and at 0.25, and a pass followed by a failure;
    ``savings`` raises otherwise). Curtailed, it applies the same ratio in fewer calls."""
    results = json.loads((RESULTS / run / "results.json").read_text(encoding="utf-8"))
    plan = results["screen_plan"]
    assert (plan["tau"], plan["delta"], plan["budget"]) == (TAU, DELTA, BUDGET)
    rows = savings(results)
    assert len(rows) >= 6 and all(r["curtailed"] <= r["calls"] for r in rows)
    assert any(r["applied"] is not None for r in rows) or run != "headline"
    agreement = [r for r in rows if r["mode"] == "agreement" and r["applied"] is None]
    assert sum(r["curtailed"] for r in agreement) < sum(r["calls"] for r in agreement) / 2
