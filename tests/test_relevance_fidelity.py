"""The fidelity benchmark's pruning rules (``benchmarks/relevance_fidelity.py``) and the
relevance head's teacher data and loss (``benchmarks/train_relevance.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from benchmarks.relevance_fidelity import coarse_keep, keep_best_first

pytestmark = pytest.mark.usefixtures("bigbench")  # BIG-bench task files


def test_coarse_keep_drops_whole_passages_first_then_sentences() -> None:
    # passage 0: two weak sentences; passage 1: the answer; passage 2: one weak sentence
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.05])
    doc_of = [0, 0, 1, 1, 2]
    costs = [10] * 5
    assert coarse_keep(scores, doc_of, costs, 0.5) == {2, 3}
    assert coarse_keep(scores, doc_of, costs, 0.25) == {2}
    # a sentence of a strong passage outranks a better-scored one of a weak passage
    scores = np.array([0.5, 0.45, 0.9, 0.4, 0.05])
    assert keep_best_first(scores, costs, 0.5) == {0, 2}
    assert coarse_keep(scores, doc_of, costs, 0.5) == {2, 3}


def test_coarse_keep_never_exceeds_the_budget_and_never_empties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 12))
        scores = rng.random(n)
        doc_of = sorted(rng.integers(0, 4, n).tolist())
        costs = rng.integers(1, 40, n).tolist()
        ratio = float(rng.uniform(0.05, 1.0))
        kept = coarse_keep(scores, doc_of, costs, ratio)
        assert kept
        assert len(kept) == 1 or sum(costs[i] for i in kept) <= ratio * sum(costs)
        best = int(np.argmax(scores))
        assert any(doc_of[i] == doc_of[best] for i in kept)  # the best passage stays


def test_teacher_loss_learns_the_order_below_the_top_sentence() -> None:
    """The teacher's softmax target is nearly one-hot on the answer sentence; the RankNet
    term makes swapping two lower sentences that the teacher orders cost something."""
    import pytest

    torch = pytest.importorskip("torch")
    from benchmarks.train_relevance import Text, item_loss

    drops = np.array([0.0, 9.0, 0.5, 0.2, -0.3])  # nats; the answer sentence is 1
    text = Text("teacher", "c", "q", [(0, 1)] * 5, drops)
    follows = torch.tensor([0.0, 5.0, 2.0, 1.0, -1.0])
    swapped = torch.tensor([0.0, 5.0, 1.0, 2.0, -1.0])  # same top, sentences 2 and 3 swapped
    assert float(item_loss(swapped, text) - item_loss(follows, text)) > 0.05
    flat = Text("teacher", "c", "q", [(0, 1)] * 3, np.array([0.01, 0.0, 0.02]))  # no order
    assert float(item_loss(torch.zeros(3), flat)) == pytest.approx(float(np.log(3)), abs=1e-5)


def test_teacher_items_fit_one_proxy_window(proxy: Any) -> None:
    """The teacher step computes leave-one-out labels only for dev items the head can train
    on: context and question in one request-path window (real proxy, real BIG-bench data)."""
    from benchmarks.train_relevance import (
        build_context,
        doc_sentences,
        question_block,
        teacher_items,
    )

    from promptsieve.proxy.relevance import RelevanceConfig, question_ids, windows

    items = teacher_items(6, proxy)
    assert len(items) == 6 and all(i.id.split("#")[1].startswith("dev:") for i in items)
    for item in items:
        context, _, _ = build_context(doc_sentences(item))
        q = question_ids(
            proxy, question_block(item.question), RelevanceConfig().max_question_tokens
        )
        assert len(windows(proxy.config, len(proxy.tokenize(context)[0]), len(q))) == 1
    assert [i.id for i in teacher_items(3, proxy)] == [i.id for i in items[:3]]


def test_teacher_spearmans_pair_items_and_mark_unrankable_ones() -> None:
    from benchmarks.train_relevance import Text, split_teacher, teacher_spearmans

    texts = [
        Text("teacher", "c", "q", [(0, 1)] * 4, np.array([3.0, 1.0, 0.5, 0.0])),
        Text("teacher", "c", "q", [(0, 1)] * 4, np.array([0.0, 0.0, 0.0, 0.0])),  # flat teacher
        Text("teacher", "c", "q", [(0, 1)] * 2, np.array([1.0, 0.0])),  # too short
    ]
    scores = [np.array([4.0, 3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0])]
    rho = teacher_spearmans(scores, texts)
    assert rho[0] == 1.0 and np.isnan(rho[1]) and np.isnan(rho[2])
    assert np.isnan(teacher_spearmans([np.zeros(4)], texts[:1])[0])  # a constant ranker
    train, held = split_teacher(list(range(59)))  # type: ignore[arg-type]
    assert len(train) == 39 and held == list(range(39, 59))


def test_heldout_reproduces_the_committed_teacher_figures(
    proxy: Any, tmp_path: Any, monkeypatch: Any, bigbench_sdist: None
) -> None:
    """``train_relevance heldout`` on the committed leave-one-out labels and heads (real
    proxy, real BIG-bench dev items) gives the figures in ``results/relevance_teacher.md``."""
    import json
    import shutil
    from pathlib import Path

    import pytest

    pytest.importorskip("torch")
    import benchmarks._loo as loo
    from benchmarks.train_relevance import main

    shutil.copy(Path("benchmarks/results/heads/loo-qwen2.5-coder-0.5b-instruct.jsonl"), tmp_path)
    monkeypatch.setattr(loo, "CACHE_DIR", tmp_path)
    out = tmp_path / "heldout.json"
    v1 = "sdk/promptsieve/proxy/heads/relevance-v1.safetensors"
    v2 = "benchmarks/results/heads/relevance-v2-teacher.safetensors"
    assert main(["heldout", "--head", v1, "--head", v2, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rankers"]
    assert rows["relevance-v1"]["n"] == 20
    assert rows["relevance-v1"]["mean"] == pytest.approx(0.233, abs=0.005)
    assert rows["relevance-v2-teacher"]["mean"] == pytest.approx(0.104, abs=0.005)
    lo, hi = rows["relevance-v1"]["ci95"]
    assert lo < rows["relevance-v1"]["mean"] < hi
    assert rows["relevance-v2-teacher"]["vs relevance-v1"]["first_higher"] == 15


def test_proxy_leave_one_out_on_the_real_lm_proxy(
    lm32: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    """``ProxyLeaveOneOut`` (the paper's proxy explanation on the ONNX LM proxy): the sentence
    that holds the answer gets the largest drop; every drop equals the one computed without
    the KV-cache reuse; the cost counters add up; a second call is served from the cache
    without running the graph."""
    import benchmarks._loo as loo

    monkeypatch.setattr(loo, "CACHE_DIR", tmp_path)
    docs = [
        ["The Nile flows north through Egypt.", "It is about 6,650 km long."],
        ["Mount Kilimanjaro is in Tanzania.", "Its summit is called Uhuru Peak."],
    ]
    qb = "Answer in a few words.\nQuestion: What is the summit of Mount Kilimanjaro called?"
    pl = loo.ProxyLeaveOneOut(lm32)
    runs = lm32.runs
    res = pl.attribute(docs, qb)
    assert "uhuru" in res.answer.lower()
    assert len(res.drops) == 4
    assert int(np.argmax(res.drops)) == 3
    assert res.drops[3] > 1.0  # nats
    answer, _ = pl._generate(lm32.extend(None, pl._ids(loo.render(docs, qb))))  # token ids
    n_answer = len(answer)
    # runs (the answer is short of the cap): 1 prompt + one per answer token + the full
    # answer's score + one per sentence
    assert res.calls == lm32.runs - runs - (1 + n_answer) == 2 + n_answer + 4
    assert res.tokens < res.tokens_no_cache
    ans = np.asarray(answer, dtype=np.int64)
    full = float(lm32.score(None, [(pl._ids(loo.render(docs, qb)), ans)])[0])
    assert full == pytest.approx(res.logp_full, abs=0.01)
    for i, drop in enumerate(res.drops):  # each variant scored from the empty state
        var = pl._ids(loo.render(docs, qb, drop=i))
        assert full - float(lm32.score(None, [(var, ans)])[0]) == pytest.approx(drop, abs=0.01)
    runs = lm32.runs
    again = loo.ProxyLeaveOneOut(lm32).attribute(docs, qb)
    assert again == res
    assert lm32.runs == runs

    # explaining a given answer (the target's): another cache entry; the sentence that
    # supports *that* answer gets the largest drop
    given = pl.attribute(docs, qb, answer="Egypt")
    assert given.answer == "Egypt"
    assert int(np.argmax(given.drops)) == 0
    ids = lm32.encode("Egypt")
    assert float(lm32.score(None, [(pl._ids(loo.render(docs, qb)), ids)])[0]) == pytest.approx(
        given.logp_full, abs=0.01
    )
    assert given.calls == 1 + 1 + 4  # the prompt, the answer's score, one per sentence
    runs = lm32.runs
    assert loo.ProxyLeaveOneOut(lm32).attribute(docs, qb) == res
    assert loo.ProxyLeaveOneOut(lm32).attribute(docs, qb, answer="Egypt") == given
    assert lm32.runs == runs
    # an empty answer scores the end of the turn
    empty = pl.attribute(docs, qb, answer="")
    im_end = lm32.encode("<|im_end|>")
    assert empty.logp_full == pytest.approx(
        float(lm32.score(None, [(pl._ids(loo.render(docs, qb)), im_end)])[0]), abs=0.01
    )


def test_fidelity_report_counts_the_lm_proxy_rows(tmp_path: Any) -> None:
    """``_write`` on two synthetic rows: agreement rates, the proxy's share of the oracle's
    agreement, and the LM proxy's cost and answer agreement with its denominator."""
    import argparse

    from benchmarks.relevance_fidelity import LM_ROW, _write

    def row(agree_lm: bool, lm_answer: str) -> dict[str, Any]:
        m = {"spearman": 0.5, "top3": 1.0, "top30pct": 1.0}
        return {
            "answer": "Uhuru Peak",
            "oracle": {"calls": 5, "tokens": 100, "tokens_no_cache": 300, "seconds": 10.0},
            "proxy_cpu_ms": 100.0,
            "lm_proxy": {"answer": lm_answer, "runs": 9, "tokens": 80, "seconds": 4.0},
            "methods": {
                "oracle": {"agree@0.5": True},
                LM_ROW: {**m, "agree@0.5": agree_lm},
            },
        }

    args = argparse.Namespace(model="m", out=str(tmp_path / "fid"))
    out = _write(args, [0.5], [row(True, "Uhuru peak."), row(False, "Kibo")])
    assert out["summary"][LM_ROW]["agree@0.5"]["k"] == 1
    assert out["proxy_vs_oracle"][LM_ROW]["0.5"]["proxy_over_oracle"] == 0.5
    lm = out["cost"]["lm_proxy"]
    assert lm["share_of_oracle_time"] == pytest.approx(0.4)
    assert lm["answer_agrees_with_target"] == {"k": 1, "n": 2}
    md = (tmp_path / "fid.md").read_text()
    assert "equals the target's on 1 of 2 items" in md
    assert f"| {LM_ROW} | 0.500 |" in md


def test_write_results_keeps_dots_in_the_name(tmp_path: Any) -> None:
    """``--out results/relevance_fidelity_1.5b`` writes ``relevance_fidelity_1.5b.json`` and
    ``.md`` (``Path.with_suffix`` would have cut ``.5b``); an explicit ``.json`` is one file."""
    import json

    from benchmarks._results import write_results

    js = write_results(tmp_path / "sub" / "fid_1.5b", {"a": 1}, "# t\n")
    assert js == tmp_path / "sub" / "fid_1.5b.json"
    assert json.loads(js.read_text()) == {"a": 1}
    assert (tmp_path / "sub" / "fid_1.5b.md").read_text() == "# t\n"
    assert write_results(tmp_path / "r.json", {}, "") == tmp_path / "r.json"
    assert (tmp_path / "r.md").is_file()


def test_memo_keys_stay_those_of_earlier_runs() -> None:
    """Without a given answer the cache key is the one earlier runs wrote (their caches stay
    valid); a given answer, even an empty one, gets another key."""
    import hashlib
    import json

    import benchmarks._loo as loo

    docs, qb = [["a.", "b."], ["c."]], "Question: q"
    old = hashlib.sha256(json.dumps(["m", [["a.", "b."], ["c."]], qb]).encode()).hexdigest()
    assert loo._key("m", docs, qb) == old[:24]
    assert (
        len({loo._key("m", docs, qb), loo._key("m", docs, qb, ""), loo._key("m", docs, qb, "x")})
        == 3
    )


def test_rows_option_keeps_the_oracle_and_names_the_known_rows() -> None:
    from benchmarks.relevance_fidelity import _rows_wanted

    known = ["sentence (cosine)", "coarse (cosine)"]
    assert _rows_wanted(None, known) is None
    assert _rows_wanted(["coarse (cosine)"], known) == {"coarse (cosine)", "oracle"}
    with pytest.raises(SystemExit, match="known rankings: 'sentence \\(cosine\\)'"):
        _rows_wanted(["cosine"], known)
