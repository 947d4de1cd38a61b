"""A pre-registered readout computes the registered analysis on the committed results."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmarks.bigbench.multidoc import multidoc_raw
from benchmarks.confirm import REGISTERED, cluster_difference, gold_passages, main, readout
from benchmarks.screening_power import rung_decision
from benchmarks.stats import paired_difference

ROOT = Path(__file__).resolve().parent.parent
# session 34's 200 items (README: "Reordering the kept passages"): the registration's arms
# on items 1-200 of the same draw, so the registered code must reproduce those figures
SESSION34 = ROOT / "benchmarks/results/headline-2k-reorder-0.5/results.json"
REG = REGISTERED["2k-coarse-reorder-2x"]
ON_1_200 = replace(REG, first_item=1, n=200)

pytestmark = pytest.mark.usefixtures("bigbench")  # BIG-bench task files


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


def test_gaps_count_against_the_claim(results: dict[str, Any]) -> None:
    full = readout(ON_1_200, results)
    ids = ON_1_200.item_ids()
    rows = [r for r in copy.deepcopy(results["rows"]) if r["item"] in ids]
    right = next(
        r["item"] for r in rows if r["method"] == "coarse-reorder" and r["correct"] and r["agree"]
    )
    for r in rows:  # a failed compressed call: the bench writes a row with its error
        if r["item"] == right and r["method"] == "coarse-reorder":
            r["error"] = "RuntimeError: timeout"
    # an item whose uncompressed call failed: the bench writes no row for it at all
    wrong_none = next(
        i
        for i in ids
        if any(r["item"] == i and r["method"] == "none" and not r["correct"] for r in rows)
    )
    rows = [r for r in rows if r["item"] != wrong_none]
    out = readout(ON_1_200, {"rows": rows})
    assert out["missing"] == [wrong_none] and not out["complete"]
    assert out["primary"]["verdict"].startswith("incomplete (199 of 200 items)")
    assert out["errors"] == {"none": 0, "coarse-reorder": 1} and out["collected"] == 198
    counted = readout(ON_1_200, {"rows": rows}, count_missing=True)
    assert counted["complete"] and not counted["primary"]["verdict"].startswith("incomplete")
    # the missing item's uncompressed answer counts right, its compressed answer wrong
    assert counted["accuracy"]["none"][0] == pytest.approx(full["accuracy"]["none"][0] + 1 / 200)
    lost = 1 + int(
        any(
            r["item"] == wrong_none and r["method"] == "coarse-reorder" and r["correct"]
            for r in results["rows"]
        )
    )
    assert counted["accuracy"]["coarse-reorder"][0] == pytest.approx(
        full["accuracy"]["coarse-reorder"][0] - lost / 200
    )
    assert counted["agreement"][0] < full["agreement"][0]
    assert counted["sequential"]["pairs"] >= out["sequential"]["pairs"]


def test_cluster_bootstrap_counts_a_passage_once() -> None:
    # 60 passages, two questions each with the same outcome: resampling passages gives the
    # interval of the 60 distinct outcomes, while resampling items pretends there are 120
    rng = np.random.default_rng(1)
    d = rng.choice([-1.0, 0.0, 0.0, 1.0], size=60)
    one = paired_difference([x > 0 for x in d], [x < 0 for x in d], seed=0)
    twice = [x for x in d for _ in range(2)]
    clusters = [f"p{j}" for j in range(60) for _ in range(2)]
    low, high = cluster_difference(twice, clusters, resamples=10_000, seed=0)
    assert low == pytest.approx(one[1], abs=0.02) and high == pytest.approx(one[2], abs=0.02)
    naive = paired_difference([x > 0 for x in twice], [x < 0 for x in twice], seed=0)
    assert naive[2] - naive[1] < 0.8 * (high - low)


def test_gold_passages_are_the_draws(results: dict[str, Any]) -> None:
    reg = replace(REG, first_item=3, n=4)
    draw = multidoc_raw("test", 2000, 6, 0)
    assert gold_passages(reg) == [m.doc_ids[m.gold_index] for m in draw[2:6]]


def test_cli_writes_the_readout_next_to_the_results(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "results.json").write_text(SESSION34.read_text())
    out = main(["2k-coarse-reorder-2x", str(tmp_path)])
    # the registered range (items 201-600) is not in session 34's results: nothing collected
    assert out["collected"] == 0 and out["primary"]["verdict"].startswith("incomplete (0 of 400")
    assert len(out["missing"]) == 400
    assert "Pairs collected: 0 of 400" in capsys.readouterr().out
    assert (
        json.loads((tmp_path / "confirm-2k-coarse-reorder-2x.json").read_text())["collected"] == 0
    )
    with pytest.raises(SystemExit):
        main(["2k-coarse-reorder-2x", str(tmp_path / "nowhere")])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "is not a bench results file"),
        ('{"rows": [{"item": "x"}]}', "is not a bench results file"),
        ("not json", "cannot read it as JSON"),
        (
            '{"meta": {"bigbench_data": "unverified folder /x"}, "rows": []}',
            "was run on unverified folder /x: a registered readout takes runs on the verified",
        ),
    ],
)
def test_cli_bad_input_is_one_error_line(
    tmp_path: Path, capsys: Any, content: str, message: str
) -> None:
    f = tmp_path / "results.json"
    f.write_text(content)
    with pytest.raises(SystemExit) as info:
        main(["2k-coarse-reorder-2x", str(f)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m benchmarks.confirm: error: ") and message in err


def test_cli_unwritable_out_is_one_error_line(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "results.json").write_text(SESSION34.read_text())
    (tmp_path / "taken").write_text("")
    with pytest.raises(SystemExit) as info:
        main(["2k-coarse-reorder-2x", str(tmp_path), "--out", str(tmp_path / "taken")])
    assert info.value.code == 2 and "cannot write the readout" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ((), {}, "usage:"),
        (("210",), {}, "210 is not a registered chunk start"),
        (("250", "999"), {}, "999 is not a registered chunk start"),  # before chunk 250 runs
        (("200",), {"PROMPTSIEVE_BIGBENCH_DIR": "/x"}, "the verified bigbench==1.0.0 sdist only"),
        (("200",), "no sdist", "needs the verified bigbench==1.0.0 sdist"),
    ],
)
def test_chunk_runner_runs_only_what_was_registered(
    args: tuple[str, ...], env: dict[str, str] | str, says: str, tmp_path: Path
) -> None:
    """``run-2k-coarse-reorder-2x.sh`` refuses a chunk start outside the registration and a
    data source other than the sdist, before it runs anything (exit 2, one line)."""
    script = ROOT / "benchmarks/preregistered/run-2k-coarse-reorder-2x.sh"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTSIEVE_BIGBENCH")}
    if env == "no sdist":  # an empty cache and registry dir, and an index that refuses at once
        env = {
            "PROMPTSIEVE_CACHE_DIR": str(tmp_path / "cache"),
            "PROMPTSIEVE_REGISTRY_DIR": str(tmp_path / "registry"),
            "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        }
    assert isinstance(env, dict)
    run = subprocess.run(
        ["bash", str(script), *args], env={**clean, **env}, capture_output=True, text=True
    )
    assert run.returncode == 2 and says in run.stderr and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1
