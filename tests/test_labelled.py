"""Labelled non-inferiority: validity at the boundary by simulation, decisions, bad settings."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.screening_sim import labelled_times, sample_cells

from promptsieve import ConfigError
from promptsieve.fidelity import NonInferiorityTest, Outcome, Pairs, check_margin
from promptsieve.fidelity.stats import CURTAILED

DELTA = 0.05
RUNS, HORIZON = 2000, 200


@pytest.mark.parametrize(
    ("kw", "law"),
    [
        ({"epsilon": 0.05}, (0.65, 0.05, 0.00, 0.30)),  # only losses, 5 points
        ({"epsilon": 0.05}, (0.30, 0.30, 0.25, 0.15)),  # many swaps both ways
        ({"rho": 0.9}, (0.54, 0.06, 0.00, 0.40)),  # 0.6 -> 0.54
        ({"rho": 0.9}, (0.30, 0.20, 0.15, 0.35)),  # 0.5 -> 0.45 with swaps
    ],
)
def test_false_pass_rate_at_the_boundary_is_at_most_delta(
    kw: dict[str, float], law: tuple[float, ...]
) -> None:
    """Any crossing of the pass boundary within 200 looks (no budget, no fail stop) is rarer
    than delta when acc(c) sits exactly on the null boundary."""
    test = NonInferiorityTest(DELTA, None, **kw)
    cells = sample_cells(np.random.default_rng(sum(int(x * 100) for x in law)), law, RUNS, HORIZON)
    t_pass, _ = labelled_times(test, cells)
    assert float(np.mean(t_pass <= HORIZON)) <= DELTA


def test_the_same_simulation_passes_non_inferior_compression() -> None:
    """The harness is not trivially quiet: with no loss at all the same simulation passes
    every run (after 70 pairs at eps = 0.05), and with a 10-point loss against a 0.15 margin
    a good share of runs."""
    test = NonInferiorityTest(DELTA, None, epsilon=0.05)
    cells = sample_cells(np.random.default_rng(1), (0.65, 0.0, 0.0, 0.35), 500, HORIZON)
    t_pass, _ = labelled_times(test, cells)
    assert float(np.mean(t_pass <= HORIZON)) == 1.0 and int(np.max(t_pass)) == 70
    test = NonInferiorityTest(DELTA, None, epsilon=0.15)
    cells = sample_cells(np.random.default_rng(1), (0.6, 0.1, 0.0, 0.3), 500, HORIZON)
    t_pass, _ = labelled_times(test, cells)
    assert float(np.mean(t_pass <= HORIZON)) > 0.2


def test_passes_near_the_information_limit_and_when_compression_helps() -> None:
    test = NonInferiorityTest(DELTA, budget=None)
    # all pairs both right: no valid test at eps=0.05 passes before 59 pairs
    first = next(n for n in range(1, 500) if test.passes([n, 0, 0, 0]))
    assert 59 <= first <= 75
    assert NonInferiorityTest(rho=0.9).passes([34, 0, 0, 0])
    # the multi-document QA cells (6 both, 2 losses, 4 gains, 4 neither) x 8
    assert test.evaluate(Pairs(42, 14, 28, 28)).decision is Outcome.CONTINUE  # x 7
    st = test.evaluate(Pairs(48, 16, 32, 32))
    assert st.decision is Outcome.PASS and st.lower > -0.05 and st.e_value >= 1 / DELTA


def test_inferior_compression_fails_early_and_bounds_cover_the_truth() -> None:
    test = NonInferiorityTest(DELTA, budget=200)
    rng = np.random.default_rng(4)
    st = test.state
    while st.decision is Outcome.CONTINUE:
        o = bool(rng.random() < 0.8)
        c = o and bool(rng.random() < 0.6)  # compression breaks 40 % of right answers
        st = test.update(o, c)
    assert st.decision is Outcome.FAIL and st.reason == "upper bound < margin"
    assert st.n < 60 and st.upper < -0.05 <= st.upper + 0.5
    with pytest.raises(RuntimeError):
        test.update(True, True)


def test_curtailment_stops_when_even_gains_cannot_pass_in_the_pairs_left() -> None:
    """Near the end of the budget a neutral record cannot pass any more: the test fails then
    (reason CURTAILED) and not at the budget; every continuation, gains included, fails."""
    test = NonInferiorityTest(DELTA, budget=100)
    near = Pairs(38, 6, 3, 41)  # 88 pairs, 3 points of accuracy lost: not shown inferior
    st = test.evaluate(near)
    assert st.decision is Outcome.FAIL and st.reason == CURTAILED and st.upper > 0
    assert NonInferiorityTest(DELTA, budget=None).evaluate(near).decision is Outcome.CONTINUE
    assert not test.passes([38, 6, 3 + 12, 41])  # all twelve pairs left are gains
    for k in range(13):  # and any mix of the twelve: fewer gains
        for j in range(13 - k):
            assert not test.passes([38 + j, 6, 3 + k, 41 + (12 - k - j)])
    # four pairs earlier the same record could still pass: the test goes on
    assert test.evaluate(Pairs(36, 6, 3, 39)).decision is Outcome.CONTINUE
    assert test.can_pass([36, 6, 3, 39]) and not test.can_pass([38, 6, 3, 41])


def test_bounds_are_a_confidence_sequence() -> None:
    """The true difference (-0.1) lies inside [lower, upper] at every look in most runs."""
    test = NonInferiorityTest(DELTA, None)
    rng = np.random.default_rng(9)
    misses = 0
    for _ in range(40):
        pairs = Pairs()
        for _ in range(60):
            u = rng.random()
            pairs = pairs.add(u < 0.7, u < 0.6)  # acc 0.7 -> 0.6
            st = test.evaluate(pairs)
            if not st.lower - 1e-9 <= -0.1 <= st.upper + 1e-9:
                misses += 1
                break
    assert misses <= 4


def test_evaluate_matches_update_and_counts() -> None:
    a = NonInferiorityTest()
    seq = [(True, True), (True, False), (False, True), (False, False), (True, True)]
    for o, c in seq:
        a.update(o, c)
    assert a.pairs == Pairs(2, 1, 1, 1)
    assert a.pairs.original_correct == 3 and a.pairs.compressed_correct == 3
    assert NonInferiorityTest().evaluate(a.pairs) == a.state
    assert Pairs.from_cells({"11": 2, "10": 1, "01": 1, "00": 1}) == a.pairs
    assert Pairs.cell(True, False) == "10"
    with pytest.raises(ValueError):
        a.evaluate(Pairs(-1, 0, 0, 0))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"epsilon": 0.6}, r"epsilon must be in \[0.0, 0.5\]"),
        ({"epsilon": -0.01}, r"epsilon must be in \[0.0, 0.5\]"),
        ({"rho": 0.3}, r"rho must be in \[0.5, 1.0\]"),
        ({"rho": 1.2}, r"rho must be in \[0.5, 1.0\]"),
        ({"rho": 0.9, "epsilon": 0.05}, "not both"),
    ],
)
def test_margins_outside_their_range_raise_config_error(kw: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_margin(kw.get("epsilon"), kw.get("rho"))
    with pytest.raises(ConfigError, match=match):
        NonInferiorityTest(**kw)
    assert check_margin(None, None) == (0.05, None)
    with pytest.raises(ConfigError):
        NonInferiorityTest(delta=1.0)
