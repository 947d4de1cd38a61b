"""Benchmarks: real lm-eval prompts, baselines hitting their ratios, the quick profile."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _ci import require_module

# ruff: noqa: E402 - the imports below follow the check that their extra is installed
require_module("lm_eval")

from benchmarks.baselines import (
    Method,
    RandomPrune,
    SelfInformation,
    Truncate,
    _Words,
    context_ratio,
    count,
    word_self_information,
)
from benchmarks.data import (
    BenchItem,
    NeedleConfig,
    answers_agree,
    bbh_items,
    extract_answer,
    gsm8k_items,
    load_bbh_prompts,
    load_gsm8k_prompt,
    needle_items,
)
from benchmarks.report import percentile, summarize, write_report
from benchmarks.run import BBH_TASKS
from benchmarks.screening import economics
from benchmarks.target import CallCache, TokenLogprobs

# -- data ----------------------------------------------------------------------------------


def test_bbh_cot_prompts_are_the_27_real_tasks() -> None:
    prompts = load_bbh_prompts(True)
    assert len(prompts) == 27
    names = {p.task for p in prompts}
    assert "bbh_cot_fewshot_navigate" in names and "bbh_cot_fewshot_word_sorting" in names
    assert sorted(names) == [f"bbh_cot_fewshot_{t}" for t in BBH_TASKS]  # the profiles' list
    for p in prompts:
        assert len(p.exemplars) == 3
        assert p.target_delimiter == "" and p.fewshot_delimiter == "\n\n"
        for q, a in p.exemplars:
            assert q.startswith("Q: ") and q.endswith("A: Let's think step by step.\n")
            assert "the answer is" in a


def test_direct_prompts_match_cot_answers() -> None:
    """The CoT exemplars' extracted answers equal the direct prompts' targets, all 81."""
    for cot, direct in zip(load_bbh_prompts(True), load_bbh_prompts(False), strict=True):
        assert cot.task.replace("cot_", "") == direct.task
        for (_, a_cot), (_, a_dir) in zip(cot.exemplars, direct.exemplars, strict=True):
            assert extract_answer("cot", a_cot) == extract_answer("direct", a_dir) is not None


def test_gsm8k_has_8_exemplars_with_numeric_gold() -> None:
    p = load_gsm8k_prompt()
    assert len(p.exemplars) == 8
    items = gsm8k_items()
    assert [it.gold for it in items] == ["6", "5", "39", "8", "9", "29", "33", "8"]
    assert "until" not in p.description and p.until[0] == "Q:"


def test_items_hold_out_one_real_exemplar() -> None:
    items = bbh_items(tasks=["navigate"])
    assert len(items) == 3
    p = next(p for p in load_bbh_prompts(True) if p.task.endswith("navigate"))
    for held, it in enumerate(items):
        assert it.question == p.exemplars[held][0]
        assert it.prompt.startswith(p.description)
        # the other two exemplars are the demonstrations, formatted as lm-eval does
        for i, (q, a) in enumerate(p.exemplars):
            assert ((q + a + "\n\n") in it.context) == (i != held)
        assert it.gold in ("yes", "no")
    # the lm-eval formatting: description, demos joined by "\n\n", then the query
    assert items[0].prompt == (
        p.description + "".join(q + a + "\n\n" for q, a in p.exemplars[1:]) + p.exemplars[0][0]
    )


def test_direct_items_use_target_delimiter_space() -> None:
    it = bbh_items(cot=False, tasks=["boolean_expressions"])[0]
    assert "A: False\n\n" in it.context and it.prompt.endswith("A:")
    assert it.gold == "false"


def test_answer_extraction() -> None:
    assert extract_answer("cot", "... So the answer is (B).") == "(b)"
    assert extract_answer("cot", "no final answer here") is None
    assert extract_answer("gsm8k", "So 5 + 4 = 9. The answer is 1,009.") == "1009"
    assert extract_answer("gsm8k", "They had 74 - 35 = 39 left") == "39"  # flexible
    assert extract_answer("direct", " (C)\nmore") == "(c)"
    assert extract_answer("direct", " Yes") == "yes"
    assert extract_answer("needle", " 1234567.") == "1234567"
    assert answers_agree("a", "a") and not answers_agree(None, None)


def test_needle_items_are_seeded_and_sized() -> None:
    cfg = NeedleConfig(sizes=(1000, 2000), per_size=2, needles=3, seed=7)
    a, b = needle_items(cfg), needle_items(cfg)
    assert a == b and len(a) == 4
    assert {it.task for it in a} == {"niah_1k", "niah_2k"}
    for it in a:
        assert it.prompt.count("special magic numbers for") == 3
        assert f"is: {it.gold}." in it.context and it.gold not in it.question
        n = count(it.context)
        size = 1000 if it.task == "niah_1k" else 2000
        assert size <= n <= size * 1.3
    assert needle_items(NeedleConfig(sizes=(1000,), per_size=1, seed=8))[0] != a[0]


def test_bench_item_requires_question_suffix() -> None:
    with pytest.raises(ValueError):
        BenchItem("t", "t#0", "context Q?", "other", "x", "direct")


# -- baselines -----------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.8])
def test_baselines_hit_their_ratios(ratio: float) -> None:
    items = bbh_items(tasks=["navigate"])[:1] + gsm8k_items(1)
    items += needle_items(NeedleConfig(sizes=(1000,), per_size=1))
    for it in items:
        for method in (RandomPrune(), Truncate()):
            out = method.compress(it, ratio)
            assert out.endswith(it.question)
            assert abs(context_ratio(it, out) - ratio) < 0.05, (method.name, it.id)


def test_random_is_seeded_and_truncate_keeps_head_and_tail() -> None:
    it = bbh_items(tasks=["navigate"])[0]
    assert RandomPrune(1).compress(it, 0.5) == RandomPrune(1).compress(it, 0.5)
    assert RandomPrune(1).compress(it, 0.5) != RandomPrune(2).compress(it, 0.5)
    t = Truncate().compress(it, 0.5)
    assert t.startswith(it.context[:40])
    assert it.context.rstrip()[-30:] in t


def test_word_join_keeps_line_breaks() -> None:
    w = _Words.of("a b\n\nc d\ne f")
    keep = np.array([True, False, False, True, False, True])
    assert w.join(keep) == "a\n\nd\nf"


class _FakeLogprobs:
    """Log-probabilities from a rule (rare words = the ones in UPPER case), not a model."""

    def prompt_logprobs(self, text: str) -> TokenLogprobs:
        toks, offs, lps = [], [], []
        pos = 0
        for piece in text.split(" "):
            toks.append(piece if not offs else " " + piece)
            offs.append(pos if not offs else pos - 1)
            lps.append(-9.0 if piece.isupper() else -0.1)
            pos += len(piece) + 1
        return TokenLogprobs(tuple(toks), tuple(offs), tuple(lps), 0.0, False)


def test_selfinfo_drops_low_information_words() -> None:
    ctx = " ".join(["the"] * 20 + ["ZEBRA", "QUASAR"] + ["and"] * 20) + "\n\n"
    item = BenchItem("t", "t#0", ctx + "Q: which?\nA:", "Q: which?\nA:", "x", "direct")
    out = SelfInformation(_FakeLogprobs()).compress(item, 0.2)
    assert "ZEBRA" in out and "QUASAR" in out
    assert context_ratio(item, out) <= 0.25


def test_word_self_information_sums_overlapping_tokens() -> None:
    text = "ab cd"
    lp = TokenLogprobs(("a", "b", " cd"), (0, 1, 2), (None, -1.0, -2.0), 0.0, False)
    scores = word_self_information(text, lp, [(0, 2), (3, 5)])
    assert scores[1] == pytest.approx(2.0)
    assert scores[0] == pytest.approx(2.0 + 1.0)  # the unscored first token counts as the max


# -- cache, report, economics --------------------------------------------------------------


def test_call_cache_roundtrip(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "c.sqlite3")
    key = CallCache.key("local", "m", {"prompt": "p", "max_tokens": 1})
    assert key != CallCache.key("local", "m", {"prompt": "p", "max_tokens": 2})
    assert cache.get(key) is None
    cache.put(key, {"choices": [{"text": "x"}]}, 1.5)
    cache.close()
    again = CallCache(tmp_path / "c.sqlite3")
    assert again.get(key) == ({"choices": [{"text": "x"}]}, 1.5)


def test_economics() -> None:
    e = economics(10_000, 100.0, 500.0, 0.02, requests=1000)
    assert e["net_per_request"] == pytest.approx(90.0)
    assert e["break_even_requests"] == math.ceil(10_000 / 90)
    assert e["net_after_requests"] == pytest.approx(1000 * 90 - 10_000)
    failed = economics(5_000, None, 500.0, 0.02)
    assert failed["break_even_requests"] is None and failed["net_after_requests"] == -5_000


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 95) == 5.0


def _row(method: str, ratio: float, agree: bool, kind: str = "needle") -> dict[str, object]:
    return {
        "task": "niah_1k", "item": "niah_1k#0", "kind": kind, "gold": "1", "base_answer": "1",
        "tokens_before": 1000, "context_tokens": 950, "server_tokens_before": 1100,
        "method": method, "ratio": ratio, "tokens_after": int(1000 * ratio) + 50,
        "server_tokens_after": int(1100 * ratio), "context_kept": ratio,
        "answer": "1" if agree else "2", "agree": agree, "correct": agree,
        "score_s": 0.01, "compress_s": 0.02, "target_s": 1.0, "e2e_s": 1.02, "error": None,
    }  # fmt: skip


def test_report_from_small_results(tmp_path: Path) -> None:
    rows = [_row("none", 1.0, True)]
    rows += [_row(m, r, r > 0.5) for m in ("random", "selfinfo") for r in (0.7, 0.4)]
    rows.append({**_row("random", 0.4, False), "error": "boom"})
    s = summarize(rows)
    rand = next(x for x in s if x["method"] == "random" and x["ratio"] == 0.4)
    assert rand["n"] == 1 and rand["agreement"] == 0.0
    results = {
        "meta": {"profile": "test"},
        "methods": {"head": {"ok": False, "reason": "not landed"}},
        "rows": rows,
        "screening": [
            {
                "task": "niah_1k",
                "method": "random",
                "samples": 4,
                "passed": True,
                "ratio": 0.5,
                "calls": 12,
                "screen_prompt_tokens": 9000,
                "net_per_request": 400.0,
                "net_after_requests": 3_991_000,
                "requests": 10_000,
                "break_even_requests": 23,
            },
        ],
        "screen_plan": {"tau": 0.9, "delta": 0.05, "ladder": [0.8], "monitor_rate": 0.02},
        "prices": {"as_of": "2025-06-01", "usd_per_million_input_tokens": {"gpt-4o": 2.5}},
    }
    md = write_report(results, tmp_path).read_text()
    assert "| random | 0.40 | 1 |" in md and "`head` (not landed)" in md
    assert "Screening economics" in md and "1/1 tasks pass" in md
    assert (tmp_path / "saved_vs_agreement.png").stat().st_size > 1000
    assert (tmp_path / "scorer_latency.png").stat().st_size > 1000


def test_prices_table_is_dated() -> None:
    prices = json.loads((Path(__file__).parents[1] / "benchmarks" / "prices.json").read_text())
    assert prices["as_of"] and "list prices" in prices["note"]
    assert all(v > 0 for v in prices["usd_per_million_input_tokens"].values())


def test_stops_match_lm_eval() -> None:
    from benchmarks.run import STOPS

    assert STOPS["cot"] == load_bbh_prompts(True)[0].until
    assert STOPS["direct"] == load_bbh_prompts(False)[0].until
    assert STOPS["gsm8k"] == load_gsm8k_prompt().until


# -- the real target -----------------------------------------------------------------------


@pytest.mark.slow
def test_local_logprobs_match_the_server_echo(tmp_path: Path) -> None:
    """The in-process log-probabilities equal the local server's echo logprobs."""
    require_module("llama_cpp")
    from benchmarks.target import CompletionTarget, LocalLogprobs, local_target

    text = "The capital of France is Paris. The capital of Italy is"
    with local_target(n_ctx=512) as (url, model):
        echo = CompletionTarget(url, model).prompt_logprobs(text)
    local = LocalLogprobs(n_ctx=512, cache=CallCache(tmp_path / "c.sqlite3")).prompt_logprobs(text)
    assert echo.tokens == local.tokens and echo.offsets == local.offsets
    a = np.array(echo.logprobs[1:], dtype=float)  # the server leaves the first one out
    b = np.array(local.logprobs[1:], dtype=float)
    assert np.allclose(a, b, atol=0.05)


@pytest.mark.slow
def test_quick_profile_end_to_end(tmp_path: Path, bigbench: str) -> None:
    """The CI profile through ``promptsieve bench``: BIG-bench suites on the local Gemma (on
    the synthetic task files of ``tests/_bigbench_fixture.py`` where the sdist is not here)."""
    require_module("llama_cpp")
    from benchmarks.suites import PROFILES

    out = tmp_path / "quick"
    args = ["--profile", "quick", "--out", str(out), "--cache", str(tmp_path / "c.db")]
    cli = shutil.which("promptsieve", path=str(Path(sys.executable).parent))
    assert cli is not None
    run = subprocess.run([cli, "bench", *args], capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"wrote {out / 'results.json'}" in run.stdout
    assert "ETA" in run.stderr  # announced before the run
    for name in ("results.json", "report.md", "accuracy.png", "agreement.png"):
        assert (out / name).stat().st_size > 200, name
    results = json.loads((out / "results.json").read_text())
    profile = PROFILES["quick"]
    data = "bigbench==1.0.0 sdist" if bigbench == "sdist" else "unverified folder "
    assert results["meta"]["bigbench_data"].startswith(data)  # where the items came from
    assert set(results["suites"]) == {s.name for s in profile.suites}
    rows = [r for r in results["rows"] if not r.get("error")]
    assert {r["method"] for r in rows} == set(profile.methods)
    for suite in profile.suites:
        srows = [r for r in rows if r["suite"] == suite.name]
        assert len([r for r in srows if r["method"] == "none"]) == suite.n
        assert {r["ratio"] for r in srows if r["method"] != "none"} == set(profile.ratios)
    for r in rows:
        assert 0 < r["tokens_after"] <= r["tokens_before"]
        if r["method"] in ("random", "truncate"):
            assert abs(r["context_kept"] - r["ratio"]) < 0.1, r
    assert len(results["noise"]) == sum(s.noise for s in profile.suites)
    assert results["screening"] and all(s["calls"] > 0 for s in results["screening"])
    labelled = [s for s in results["screening"] if s["mode"] == "labelled"]
    assert labelled and all(x["original_correct"] is not None for x in labelled[0]["rungs"])
    report = (out / "report.md").read_text()
    assert "## Every method × ratio × suite" in report and "noise floor" in report
    assert ("not comparable with the committed results" in report) == (bigbench != "sdist")
    assert "Screening economics" in report
    # a second run is served from the cache: no new target calls
    again = subprocess.run([cli, "bench", *args], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["meta"]["target_calls"] == 0


class _KeywordTarget:
    """Answers "(a)" (the gold) when the prompt still holds KEEP, else "(b)"."""

    model = "keyword"

    def complete(self, prompt: str, *, max_tokens: int, stop: object = ()) -> object:
        from benchmarks.target import Completion

        return Completion("(a)" if "KEEP" in prompt else "(b)", None, None, 0.0, True, "stop")


class _DropKeep(Method):
    name = "dropkeep"

    def __init__(self, drop: bool) -> None:
        self.drop = drop

    def compress(self, item: BenchItem, ratio: float) -> str:
        return item.prompt.replace("KEEP", "") if self.drop else item.prompt


def test_labelled_screening_passes_non_inferior_and_fails_harmful_compression() -> None:
    """Labelled mode of the benchmark's screening: the SDK's non-inferiority test on gold."""
    from benchmarks.screening import ScreenPlan, screen_task

    items = [
        BenchItem("t", f"t#{i}", f"ctx {i} KEEP\nQ{i}?", f"Q{i}?", "(a)", "direct")
        for i in range(100)
    ]
    plan = ScreenPlan(methods=("dropkeep",), ladder=(0.5,), modes=("labelled",))
    kept = screen_task(items, _DropKeep(False), _KeywordTarget(), plan, max_tokens=4, stop=(),
                       mode="labelled")  # type: ignore[arg-type]  # fmt: skip
    assert kept["passed"] and kept["mode"] == "labelled" and kept["margin"] == "epsilon=0.05"
    rung = kept["rungs"][0]
    assert rung["agree"] == rung["original_correct"] == rung["n"] and 59 <= rung["n"] <= 100
    harmed = screen_task(items, _DropKeep(True), _KeywordTarget(), plan, max_tokens=4, stop=(),
                         mode="labelled")  # type: ignore[arg-type]  # fmt: skip
    assert not harmed["passed"] and harmed["rungs"][0]["agree"] == 0


def test_screen_overrides_are_checked_before_anything_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.run import main

    with pytest.raises(SystemExit):
        main(["--profile", "quick", "--screen-tau", "1.5"])
    assert "--screen-tau and --screen-delta must be in (0, 1)" in capsys.readouterr().err


# -- suite statistics and report ------------------------------------------------------------


def test_wilson_and_mcnemar_match_scipy_definitions() -> None:
    from benchmarks.stats import mcnemar, wilson

    lo, hi = wilson(37, 60)
    assert 0.48 < lo < 0.50 and 0.72 < hi < 0.74  # Wilson 95 % for 37/60
    assert all(math.isnan(x) for x in wilson(0, 0))
    a = [True] * 10 + [False] * 2 + [True] * 20
    b = [False] * 10 + [True] * 2 + [True] * 20
    t = mcnemar(a, b)
    assert (t["a_only"], t["b_only"]) == (10, 2)
    assert abs(t["p"] - 0.0386) < 1e-3  # exact two-sided binomial, 10 vs 2 discordant
    assert mcnemar([True], [True])["p"] == 1.0


def test_paired_difference_is_a_percentile_bootstrap_over_the_items() -> None:
    """10 wins and 2 losses in 32 pairs: +25 points; the interval is the percentile bootstrap
    of the per-item differences (checked against a resampling written out here), seeded."""
    import numpy as np
    from benchmarks.stats import paired_difference

    a = [True] * 10 + [False] * 2 + [True] * 20
    b = [False] * 10 + [True] * 2 + [True] * 20
    diff, lo, hi = paired_difference(a, b)
    assert diff == pytest.approx(0.25)
    d = np.array(a, dtype=float) - np.array(b, dtype=float)
    means = np.random.default_rng(1).choice(d, size=(20_000, len(d))).mean(axis=1)
    ref_lo, ref_hi = np.percentile(means, [2.5, 97.5])
    assert abs(lo - ref_lo) <= 0.04 and abs(hi - ref_hi) <= 0.04 and lo > 0
    assert paired_difference(a, b) == (diff, lo, hi)  # seeded: the same interval again
    assert paired_difference([True] * 5, [True] * 5) == (0.0, 0.0, 0.0)
    assert all(math.isnan(x) for x in paired_difference([], []))
    with pytest.raises(ValueError, match="same length"):
        paired_difference([True], [True, False])


def test_chat_answers_are_parsed_and_scored() -> None:
    from benchmarks.stats import agree, correct, parse_answer

    assert parse_answer("direct", "(B) 10/15/1924") == "(b)"
    assert parse_answer("direct", "Yes, because the story says so.") == "yes"
    assert parse_answer("direct", "**False**") == "false"
    assert parse_answer("direct", "C") == "(c)"
    assert parse_answer("cot", "Step one... So the answer is (D).") == "(d)"
    assert parse_answer("cot", "no final answer") is None
    assert parse_answer("qa", "\nAnswer: the Court of Justice\nmore") == "the Court of Justice"
    gold = "analog and numerical experiments"
    assert correct("qa", "Analog and numerical experiments of rock deformation", gold)
    assert not correct("qa", "Marshall Cohen notes", "become utterly debased")
    assert correct("direct", "(c)", "(c)") and not correct("direct", None, "(c)")
    assert agree("qa", "consumer prices", "Consumer prices.")
    assert not agree("direct", None, None)


def _suite_row(suite: str, method: str, ratio: float, item: int, ok: bool) -> dict[str, object]:
    return {
        "suite": suite, "task": suite, "item": f"{suite}#{item}", "kind": "direct",
        "gold": "(a)", "method": method, "ratio": ratio, "tokens_before": 400,
        "context_tokens": 300, "tokens_after": int(400 * ratio), "context_kept": ratio,
        "answer": "(a)" if ok else "(b)", "correct": ok, "agree": ok, "error": None,
    }  # fmt: skip


def test_suite_report_has_intervals_paired_tests_and_noise(tmp_path: Path) -> None:
    from benchmarks.suite_report import cells, pairwise, write_suite_report

    rows = [_suite_row("bbh_x", "none", 1.0, i, True) for i in range(40)]
    for r in (0.5, 0.25):
        rows += [_suite_row("bbh_x", "truncate", r, i, i % 4 != 0) for i in range(40)]
        rows += [_suite_row("bbh_x", "sentence", r, i, i % 10 != 0) for i in range(40)]
    results = {
        "meta": {"profile": "t", "target": "x", "model": "m", "command": "promptsieve bench"},
        "methods": {"relevance": {"ok": False, "reason": "not landed"}},
        "suites": {"bbh_x": {"kind": "direct", "items": 40, "chance": 0.25,
                             "avg_prompt_tokens": 400.0}},
        "rows": rows,
        "noise": [{"suite": "bbh_x", "item": f"bbh_x#{i}", "agree": i != 3} for i in range(20)],
        "screening": [],
        "screen_plan": {},
    }  # fmt: skip
    cs = cells(results)
    sent = next(c for c in cs if c["method"] == "sentence" and c["ratio"] == 0.5)
    assert sent["vs"] == "truncate" and (sent["wins"], sent["losses"]) == (8, 2)
    assert sent["accuracy_ci"][0] < 0.9 < sent["accuracy_ci"][1]
    md = write_suite_report(results, tmp_path).read_text()
    assert "| bbh_x | 40 | 400 | 100 [91, 100] | 25 | 100 (1) | 95 [76, 99] (20) |" in md
    pairs = {(p["ratio"], p["method"], p["other"]): p for p in pairwise(results)}
    assert {k[1] for k in pairs} == {"sentence"}  # baselines are not compared among themselves
    vs_none = pairs[(0.25, "sentence", "none")]
    assert (vs_none["n"], vs_none["wins"], vs_none["losses"]) == (40, 0, 4)
    assert "| bbh_x | 0.5 | sentence | truncate | 40 | 8 / 2 | 0.109 | +15 [" in md
    diff, lo, hi = vs_none["diff"]  # 4 of 40 lost: -10 points, an interval around it
    assert diff == pytest.approx(-0.1) and -0.25 < lo < diff < hi <= 0.0
    assert (
        f"| bbh_x | 0.25 | sentence | none | 40 | 0 / 4 | 0.125 | -10 [{round(100 * lo):+d}," in md
    )
    assert "relevance (not landed)" in md
    assert (tmp_path / "accuracy.png").stat().st_size > 1000


def test_suites_pool_into_one_table_with_paired_tests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two runs of two suites each pool per (method, ratio): counts, Wilson intervals and
    McNemar on the questions both sides answered; other targets and empty pools refused."""
    from benchmarks.pool_suites import PoolError, main, pool

    def run(suites: list[str], model: str = "m") -> dict[str, object]:
        rows = []
        for s in suites:
            rows += [_suite_row(s, "none", 1.0, i, True) for i in range(20)]
            rows += [_suite_row(s, "truncate", 0.5, i, i % 2 == 0) for i in range(20)]
            rows += [_suite_row(s, "coarse", 0.5, i, i % 4 != 0) for i in range(20)]
        return {"meta": {"model": model}, "rows": rows}

    first = run(["bbh_x", "bbh_y"])
    for row in first["rows"]:  # type: ignore[attr-defined]
        if (row["item"], row["method"]) == ("bbh_x#1", "coarse"):
            row["error"] = "timeout"  # an error is not a row: that question leaves the cell
    for name, data in (("a", first), ("b", run(["bbh_z", "vitaminc"]))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(data))
    out = pool([tmp_path / "a", tmp_path / "b"], prefix="bbh_")
    assert out["suites"] == ["bbh_x", "bbh_y", "bbh_z"]
    cells = {(c["method"], c["ratio"]): c for c in out["cells"]}
    assert cells[("none", 1.0)]["accuracy"]["k"] == 60
    coarse = cells[("coarse", 0.5)]
    assert (coarse["accuracy"]["k"], coarse["accuracy"]["n"]) == (44, 59)
    assert coarse["accuracy"]["low"] < 44 / 59 < coarse["accuracy"]["high"]
    # coarse alone right on odd items (10 a suite, item 1 of bbh_x gone), truncate alone on
    # multiples of 4 (5 a suite)
    vs = coarse["vs_truncate"]
    assert (vs["n"], vs["a_only"], vs["b_only"]) == (59, 29, 15) and 0.01 < vs["p"] < 0.05
    assert (coarse["vs_none"]["a_only"], coarse["vs_none"]["b_only"]) == (0, 15)
    assert "vs_truncate" not in cells[("truncate", 0.5)]
    with pytest.raises(PoolError, match="no suite"):
        pool([tmp_path / "a"], prefix="gsm")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "results.json").write_text(json.dumps(run(["bbh_q"], model="n")))
    with pytest.raises(PoolError, match="different targets"):
        pool([tmp_path / "a", tmp_path / "c"])
    assert main([str(tmp_path / "a"), "--prefix", "bbh_", "--out", str(tmp_path / "p.json")]) == 0
    assert "| coarse | 0.5 | 39 | 74 [" in capsys.readouterr().out
    assert json.loads((tmp_path / "p.json").read_text())["suites"] == ["bbh_x", "bbh_y"]
    assert main([str(tmp_path / "a"), str(tmp_path / "c")]) == 2
    assert "different targets" in capsys.readouterr().err


def test_runs_of_one_target_merge_into_one_ladder(tmp_path: Path) -> None:
    """Two runs (ratios 0.5 and 0.8) become one report on their common items; a run whose
    answer to the same call differs, or of another model, is refused."""
    from benchmarks.merge_runs import MergeError, main, merge

    def run(ratio: float, items: int, model: str = "m", first: int = 0) -> dict[str, object]:
        span = range(first, items)
        rows = [_suite_row("s", "none", 1.0, i, True) for i in span]
        rows += [_suite_row("s", "truncate", ratio, i, i % 2 == 0) for i in span]
        return {
            "meta": {"model": model, "command": f"bench --ratios {ratio}", "target_calls": 5},
            "methods": {"truncate": {"ok": True}},
            "suites": {"s": {"kind": "direct", "avg_prompt_tokens": 400.0}},
            "rows": rows,
            "noise": [{"suite": "s", "item": f"s#{i}", "agree": True} for i in range(items)],
            "screening": [],
        }

    merged = merge([run(0.5, 30), run(0.8, 20)], suite="s")
    assert merged["meta"]["items"] == 20 and merged["meta"]["target_calls"] == 10
    assert {(r["method"], r["ratio"]) for r in merged["rows"]} == {
        ("none", 1.0),
        ("truncate", 0.5),
        ("truncate", 0.8),
    }
    assert len(merged["rows"]) == 60 and len(merged["noise"]) == 20
    other = run(0.8, 20)
    other["rows"][0]["answer"] = "(c)"  # the uncompressed answer to item 0 differs
    with pytest.raises(MergeError, match="answers differ"):
        merge([run(0.5, 30), other])
    dropped = merge([run(0.5, 30), other], drop_differing=True)
    assert dropped["meta"]["dropped_items"] == ["s#0"] and dropped["meta"]["items"] == 19
    assert all(r["item"] != "s#0" for r in dropped["rows"]) and len(dropped["rows"]) == 57
    with pytest.raises(MergeError, match="different targets"):
        merge([run(0.5, 30), run(0.8, 20, model="n")])
    # BIG-bench data: runs before meta["bigbench_data"] read the sdist, as new sdist runs do;
    # a run on an unverified folder (or another split) never joins them
    sdist = run(0.8, 20)
    sdist["meta"]["bigbench_data"] = "bigbench==1.0.0 sdist, sha256 1bb398"  # type: ignore[index]
    assert merge([run(0.5, 30), sdist])["meta"]["items"] == 20
    for extra in ({"bigbench_data": "unverified folder /x"}, {"bigbench_split": "/s.json"}):
        odd = run(0.8, 20)
        odd["meta"].update(extra)  # type: ignore[attr-defined]
        with pytest.raises(MergeError, match="different BIG-bench data"):
            merge([run(0.5, 30), odd])
    # stacked: items 0-19 and 20-29 of one column set, joined with a 0.5 run of items 0-29;
    # a third run that stopped inside item 25 (no truncate row) leaves that item out
    stopped = run(0.25, 27, first=20)
    stopped["rows"] = [
        r for r in stopped["rows"] if (r["item"], r["method"]) != ("s#25", "truncate")
    ]
    stacked = merge([run(0.8, 20), run(0.8, 30, first=20), run(0.5, 30)])
    assert stacked["meta"]["items"] == 30 and len(stacked["rows"]) == 90
    assert merge([run(0.8, 30), run(0.5, 30), stopped])["meta"]["items"] == 6
    with pytest.raises(MergeError, match="no item has a row in every"):
        merge([run(0.8, 20), run(0.5, 30, first=20)])
    # --ratios: the 0.5 column of the first 20 items is left out, so the stack keeps 30
    assert merge([run(0.8, 30), run(0.5, 20)], ratios=[0.8])["meta"]["items"] == 30
    partial = merge([run(0.8, 30), run(0.5, 20)])
    assert partial["meta"]["items"] == 20 and len(partial["meta"]["incomplete_items"]) == 10
    with pytest.raises(MergeError, match="no run has rows at ratios"):
        merge([run(0.8, 30)], ratios=[0.7])
    # --methods: a method run on 10 more items than another keeps its 30 when chosen alone
    more = run(0.5, 30)
    for r in more["rows"]:
        r["method"] = "coarse" if r["method"] == "truncate" else r["method"]
    assert merge([run(0.5, 20), more])["meta"]["items"] == 20
    alone = merge([run(0.5, 20), more], methods=["coarse"])
    assert alone["meta"]["items"] == 30 and {r["method"] for r in alone["rows"]} == {
        "none",
        "coarse",
    }
    for name, data in (("a", run(0.5, 30)), ("b", run(0.8, 20))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(data))
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]) == 0
    assert "| s | truncate | 0.8 | 20 |" in (tmp_path / "m" / "report.md").read_text()
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "m")]) == 2
    assert main([str(tmp_path / "a"), "--ratios", "half", "--out", str(tmp_path / "m")]) == 2
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "results.json").write_text("[]")  # JSON, but not a results.json
    assert main([str(tmp_path / "list"), "--out", str(tmp_path / "m")]) == 2
    assert main([str(tmp_path / "a"), "--out", str(tmp_path / "a" / "results.json")]) == 2


def test_label_suites_on_chat_targets_ask_for_the_answer_format(tmp_path: Path) -> None:
    """Chat targets get the answer-format system message on label suites only; QA bodies
    (and so their cached calls) are unchanged."""
    from benchmarks.suites import CHAT_ANSWER_FORMAT, Suite, _for_suite
    from benchmarks.target import CompletionTarget

    chat = CompletionTarget("http://127.0.0.1:1/v1", "m", chat=True)
    qa = _for_suite(chat, Suite("multidoc", n=1))
    assert qa is chat and qa._body("p", 8, ())["messages"] == [{"role": "user", "content": "p"}]
    bbh = _for_suite(chat, Suite("bbh", n=1, task="navigate"))
    assert bbh._body("p", 8, ())["messages"][0] == {"role": "system", "content": CHAT_ANSWER_FORMAT}
    assert chat.system is None  # the suite's copy, not the shared target
    assert bbh._calls is chat._calls  # one call counter: the run's total counts every suite
    plain = CompletionTarget("http://127.0.0.1:1/v1", "m")
    assert _for_suite(plain, Suite("bbh", n=1, task="navigate")) is plain


def test_coarse_reorder_keeps_what_coarse_keeps_most_relevant_passage_first() -> None:
    from benchmarks.baselines import build_methods

    docs = [
        "The Nile flows north through eleven countries. Its delta lies in Egypt.",
        "Acme Valves was founded in 1990 by Jane Roe in Ohio. It makes industrial valves.",
        "Basalt is a fine-grained volcanic rock. It forms from rapidly cooled lava.",
        "The violin has four strings tuned in fifths. Stradivari made famous violins.",
    ]
    context = "".join(f"Document [{i}]\n{d}\n\n" for i, d in enumerate(docs, 1))
    question = "Question: Who founded Acme Valves?\nAnswer:"
    item = BenchItem("multidoc", "t#1", context + question, question, "Jane Roe", "qa")
    coarse, reordered = build_methods(["coarse", "coarse-reorder"], None)  # type: ignore[arg-type]
    assert coarse.available and reordered.available, (coarse.reason, reordered.reason)
    a, b = coarse.compress(item, 0.6), reordered.compress(item, 0.6)
    blocks_a = a[: -len(question)].strip().split("\n\n")
    blocks_b = b[: -len(question)].strip().split("\n\n")
    assert sorted(blocks_a) == sorted(blocks_b)  # the same passages and words kept
    assert len(blocks_b) >= 2 and blocks_b != blocks_a  # in another order
    assert blocks_b[0].startswith("Document [2]")  # the founder's passage first
    assert b.endswith(question)
