"""A pre-registered readout computes the registered analysis on the committed results."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmarks.bigbench.multidoc import multidoc_raw
from benchmarks.confirm import REGISTERED, main, readout
from benchmarks.screening_power import rung_decision

ROOT = Path(__file__).resolve().parent.parent
# session 34's 200 items (README: "Reordering the kept passages"): the registration's arms
# on items 1-200 of the same draw, so the registered code must reproduce those figures
SESSION34 = ROOT / "benchmarks/results/headline-2k-reorder-0.5/results.json"
REG = REGISTERED["2k-coarse-reorder-2x"]
ON_1_200 = replace(REG, first_item=1, n=200)


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    out: dict[str, Any] = json.loads(SESSION34.read_text())
    return out


def test_registered_docs_exist_and_name_their_code() -> None:
    for name, reg in REGISTERED.items():
        text = (ROOT / reg.doc).read_text()
        assert f"benchmarks.confirm {name}" in text
        assert f"items {reg.first_item}–{reg.first_item + reg.n - 1}" in text


def test_item_ids_are_the_draws() -> None:
    # the ids the readout expects are the ids the bench gives the same draw's items
    reg = replace(REG, first_item=3, n=2)
    draw = multidoc_raw("test", 2000, 4, 0, count=lambda t: len(t.split()))
    assert reg.item_ids() == [m.id for m in draw[2:4]]


def test_reproduces_the_session34_figures(results: dict[str, Any]) -> None:
    out = readout(ON_1_200, results)
    assert out["complete"] and out["collected"] == 200
    assert out["mcnemar"]["a_only"] == 16 and out["mcnemar"]["b_only"] == 14
    assert out["primary"]["difference"] == pytest.approx(0.01)
    assert out["primary"]["low"] > -0.05 and out["primary"]["verdict"].startswith("non-inferior")
    assert out["accuracy"]["none"][0] == pytest.approx(109 / 200)
    assert out["agreement"][0] == pytest.approx(149 / 200)
    coarse = readout(replace(ON_1_200, method="coarse"), results)
    assert coarse["mcnemar"]["a_only"] == 7 and coarse["mcnemar"]["b_only"] == 10
    assert coarse["primary"]["verdict"].startswith("not shown")


def test_sequential_verdict_is_the_screening_replays(results: dict[str, Any]) -> None:
    # two implementations of the SDK's labelled test on the same pairs in the same order
    out = readout(ON_1_200, results)
    rows = {(r["item"], r["method"]): r for r in results["rows"]}
    cells = np.array(
        [
            (
                rows[(i, "none")]["correct"],
                rows[(i, "coarse-reorder")]["correct"],
                rows[(i, "coarse-reorder")]["agree"],
            )
            for i in ON_1_200.item_ids()
        ],
        dtype=bool,
    )
    passed, used = rung_decision(cells, "labelled", ON_1_200.delta, budget=200)
    assert out["sequential"]["decision"] == ("pass" if passed else "fail")
    assert out["sequential"]["pairs"] == used


def test_missing_and_errored_items_count_wrong_and_make_it_incomplete(
    results: dict[str, Any],
) -> None:
    full = readout(ON_1_200, results)
    broken = copy.deepcopy(results)
    ids = ON_1_200.item_ids()
    right = next(
        i
        for i in ids
        if any(
            r["item"] == i and r["method"] == "coarse-reorder" and r["correct"]
            for r in broken["rows"]
        )
    )
    for r in broken["rows"]:
        if r["item"] == right and r["method"] == "coarse-reorder":
            r["error"] = "timeout"
    broken["rows"] = [r for r in broken["rows"] if r["item"] != ids[-1]]
    out = readout(ON_1_200, broken)
    assert not out["complete"] and out["collected"] == 198
    assert out["primary"]["verdict"].startswith("incomplete (198 of 200")
    lost = next(r for r in results["rows"] if r["item"] == ids[-1] and r["method"] == "none")
    lost_right = int(lost["correct"])
    assert out["accuracy"]["none"][0] == pytest.approx(
        full["accuracy"]["none"][0] - lost_right / 200
    )
    assert out["accuracy"]["coarse-reorder"][0] < full["accuracy"]["coarse-reorder"][0]


def test_cli_writes_the_readout_next_to_the_results(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "results.json").write_text(SESSION34.read_text())
    out = main(["2k-coarse-reorder-2x", str(tmp_path)])
    # the registered range (items 201-600) is not in session 34's results: nothing collected
    assert out["collected"] == 0 and out["primary"]["verdict"].startswith("incomplete (0 of 400")
    assert "Pairs collected: 0 of 400" in capsys.readouterr().out
    assert (
        json.loads((tmp_path / "confirm-2k-coarse-reorder-2x.json").read_text())["collected"] == 0
    )
    with pytest.raises(SystemExit):
        main(["2k-coarse-reorder-2x", str(tmp_path / "nowhere")])
