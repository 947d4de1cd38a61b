"""Simulations of the sequential test: false-pass rate under H0, calls needed under H1."""

from __future__ import annotations

import numpy as np
import pytest

from promptsieve.fidelity.stats import CURTAILED, Outcome, SequentialTest

TAU, DELTA = 0.9, 0.05
RUNS = 4000
HORIZON = 300  # longer than any default budget: a stricter check than real screening


def _simulate(p: float, test: SequentialTest, runs: int, horizon: int, seed: int):
    """First pass time and first fail time per run (horizon + 1 = never), vectorised."""
    rng = np.random.default_rng(seed)
    agreed = rng.random((runs, horizon)) < p
    s = np.cumsum(agreed, axis=1)
    f = np.arange(1, horizon + 1)[None, :] - s
    passes, fails = test.passes(s, f), test.fails(s, f)
    never = horizon + 1
    t_pass = np.where(passes.any(axis=1), passes.argmax(axis=1) + 1, never)
    t_fail = np.where(fails.any(axis=1), fails.argmax(axis=1) + 1, never)
    return t_pass, t_fail


@pytest.mark.parametrize("p", [TAU - 0.05, TAU])
def test_false_pass_rate_is_at_most_delta(p: float) -> None:
    test = SequentialTest(TAU, DELTA, budget=None)
    t_pass, t_fail = _simulate(p, test, RUNS, HORIZON, seed=int(p * 1000))
    # Ignoring fail stops counts every path that EVER crosses the pass boundary: an upper
    # bound on the procedure's false-pass rate, which must still be <= delta (Ville).
    ever = float(np.mean(t_pass <= HORIZON))
    procedure = float(np.mean(t_pass < t_fail))
    assert procedure <= ever <= DELTA, (p, ever, procedure)


@pytest.mark.parametrize("tau", [0.8, 0.95])
def test_false_pass_rate_other_taus(tau: float) -> None:
    test = SequentialTest(tau, DELTA, budget=None)
    t_pass, _ = _simulate(tau, test, 2000, HORIZON, seed=7)
    assert float(np.mean(t_pass <= HORIZON)) <= DELTA


def test_median_calls_to_pass_at_high_agreement() -> None:
    test = SequentialTest(TAU, DELTA, budget=None)
    t_pass, _ = _simulate(0.98, test, RUNS, HORIZON, seed=98)
    assert float(np.median(t_pass)) <= 30
    # with the default budget (100 comparisons per ratio) most such tasks pass
    assert float(np.mean(t_pass <= 100)) >= 0.75


def test_false_revoke_rate_when_agreement_holds() -> None:
    """Monitoring (the fail side, no budget) rarely revokes a task that agrees at tau."""
    test = SequentialTest(TAU, DELTA, budget=None)
    _, t_fail = _simulate(TAU, test, 2000, 500, seed=3)
    assert float(np.mean(t_fail <= 500)) <= DELTA


def test_bad_task_fails_fast() -> None:
    test = SequentialTest(TAU, DELTA, budget=100)
    _, t_fail = _simulate(0.5, test, 2000, 100, seed=5)
    assert float(np.median(t_fail)) <= 10


def test_no_pass_before_the_information_limit() -> None:
    """No valid test passes before (1/tau)^n >= 1/delta, i.e. 29 agreements at tau=0.9."""
    test = SequentialTest(TAU, DELTA)
    assert test.min_successes_to_pass(0) == 30
    assert test.min_successes_to_pass(1) is not None
    assert test.min_successes_to_pass(1) > 30


def test_update_walks_to_pass_and_bounds_agree_with_decision() -> None:
    test = SequentialTest(TAU, DELTA, budget=100)
    for i in range(29):
        st = test.update(True)
        assert st.decision is Outcome.CONTINUE, i
        assert st.lower <= TAU <= st.upper
    st = test.update(True)
    assert st.decision is Outcome.PASS and st.lower >= TAU and st.n == 30 == st.successes
    with pytest.raises(RuntimeError):
        test.update(True)


def test_upper_bound_fail_budget_fail_and_curtailment() -> None:
    # without a budget only the fail side stops a test that is losing
    test = SequentialTest(TAU, DELTA, budget=None)
    st = test.state
    while st.decision is Outcome.CONTINUE:
        st = test.update(test.n % 2 == 0)
    assert st.decision is Outcome.FAIL and st.reason == "upper bound < tau" and st.upper < TAU
    # with a budget of 100 the third disagreement stops it: 3 disagreements need 113
    # agreements to pass (min_successes_to_pass), more than the budget can hold
    free = SequentialTest(TAU, DELTA, budget=None)
    assert free.min_successes_to_pass(2) <= 98 < free.min_successes_to_pass(3)
    capped = SequentialTest(TAU, DELTA, budget=100)
    states = [capped.update(i % 5 != 4) for i in range(15)]
    assert [s.decision for s in states[:14]] == [Outcome.CONTINUE] * 14
    assert states[14].decision is Outcome.FAIL and states[14].reason == CURTAILED
    assert states[14].n == 15 and states[14].upper > TAU  # not shown below tau: curtailed
    # the same counts, with the budget run out instead: the verdict curtailment anticipates
    assert SequentialTest(TAU, DELTA, budget=15).evaluate(15, 12).reason == "budget"
    # the last comparison of the budget decides: 29 agreements, then a disagreement at 30
    short = SequentialTest(TAU, DELTA, budget=30)
    states = [short.update(i < 29) for i in range(30)]
    assert states[28].decision is Outcome.CONTINUE
    assert states[-1].decision is Outcome.FAIL and states[-1].reason == "budget"
    # a budget no pass fits in decides before the first comparison
    assert SequentialTest(TAU, DELTA, budget=29).state.reason == CURTAILED
    assert bool(SequentialTest(TAU, DELTA, budget=30).can_pass(0, 0))


def test_curtailment_never_changes_the_verdict() -> None:
    """Every (agreements, disagreements) path within a budget of 40 ends in the same
    decision whether the test stops at curtailment or runs to the budget."""
    budget = 40
    test = SequentialTest(TAU, DELTA, budget=budget)
    curtailed = 0
    for s in range(budget + 1):
        for f in range(budget + 1 - s):
            if bool(test.can_pass(s, f)):
                continue
            curtailed += 1
            left = budget - s - f  # every continuation: k more agreements, j more disagreements
            k, j = np.meshgrid(np.arange(left + 1), np.arange(left + 1), indexing="ij")
            fits = k + j <= left
            assert not test.passes(s + k[fits], f + j[fits]).any(), (s, f)
    assert curtailed > 0


def test_evaluate_matches_update_and_validates() -> None:
    a, b = SequentialTest(), SequentialTest()
    for i in range(40):
        st = a.update(i != 3)
        if st.decision is not Outcome.CONTINUE:
            break
    assert b.evaluate(a.n, a.successes) == a.state
    with pytest.raises(ValueError):
        b.evaluate(3, 4)
    with pytest.raises(ValueError):
        SequentialTest(tau=1.0)
    with pytest.raises(ValueError):
        SequentialTest(budget=0)
