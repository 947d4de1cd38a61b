"""Demonstration attribution, selection and cleaning (promptsieve.demos) on real components.

The value function here is a real model that CI has: the MiniLM proxy (ONNX). ``v(S)`` is
the mean cosine between the embedding of ``header + demos(S) + query`` and the embedding of
the validation answer, so the Shapley code is checked on a non-additive game from a real
network; the LM proxy path is in ``test_lm_proxy.py`` (runs where the Qwen export exists).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _demo_helpers import DEMOS, FMT, VAL, CosineScorer
from promptsieve import _shapley
from promptsieve._errors import ConfigError
from promptsieve.demos import (
    DEMOS_VERSION,
    DemoAttributionConfig,
    DemoCompressor,
    DemoFormat,
    Demonstration,
    ValidationExample,
    attribute_demos,
    clean_demos,
    demo_ladder,
    load_demonstrations,
    load_validation,
    remove_demos,
    select_demos,
)
from promptsieve.prompt import Message


@pytest.fixture
def scorer(proxy: Any) -> CosineScorer:
    return CosineScorer(proxy)


def _table(scorer: CosineScorer, n: int, subsets: list[tuple[int, ...]]) -> dict[Any, float]:
    vals = scorer.values(DEMOS[:n], VAL, FMT, subsets)
    return _shapley.as_table(subsets, vals)


# ------------------------------------------------------------------------------ Shapley math


def test_exact_shapley_axioms_on_a_real_value_function(scorer: CosineScorer) -> None:
    n = 5
    table = _table(scorer, n, _shapley.coalitions(n))
    phi = _shapley.exact_shapley(n, table)
    # efficiency
    assert phi.sum() == pytest.approx(table[tuple(range(n))] - table[()], abs=1e-9)
    # the definition, recomputed by permutations (n! orders) for one player
    import itertools

    i = 2
    marg = []
    for perm in itertools.permutations(range(n)):
        before = tuple(sorted(perm[: perm.index(i)]))
        marg.append(table[tuple(sorted((*before, i)))] - table[before])
    assert phi[i] == pytest.approx(np.mean(marg), abs=1e-9)
    # the game is not additive (else the test would be trivial)
    additive = table[()] + sum(table[(k,)] - table[()] for k in range(n))
    assert abs(additive - table[tuple(range(n))]) > 1e-4


def test_kernel_shap_matches_exact_shapley(scorer: CosineScorer) -> None:
    n = 7
    table = _table(scorer, n, _shapley.coalitions(n))
    exact = _shapley.exact_shapley(n, table)
    # every proper coalition: Kernel SHAP's weighted regression is exact
    full = _shapley.kernel_shap(n, table, samples=10_000)
    np.testing.assert_allclose(full, exact, atol=1e-9)
    # sampled coalitions: an estimate that keeps efficiency exactly and gets closer with
    # more samples
    errs = []
    for samples in (16, 100):
        need = _shapley.needed(n, "kernel", samples, seed=3)
        assert len(need) < 2**n
        est = _shapley.kernel_shap(n, {c: table[c] for c in need}, samples=samples, seed=3)
        assert est.sum() == pytest.approx(exact.sum(), abs=1e-9)
        errs.append(float(np.abs(est - exact).max()))
    print("kernel errors", errs, "scale", float(np.abs(exact).max()))
    assert errs[1] < errs[0]
    assert errs[1] < 0.5 * float(np.abs(exact).max())


def test_kernel_shap_recovers_an_additive_game_exactly() -> None:
    w = np.random.default_rng(0).normal(size=14)
    need = _shapley.needed(14, "kernel", 300, seed=1)
    est = _shapley.kernel_shap(14, {c: float(w[list(c)].sum()) for c in need}, 300, seed=1)
    np.testing.assert_allclose(est, w, atol=1e-9)


# ----------------------------------------------------------------------------- attribution


def test_attribution_is_cached_per_proxy_and_version(scorer: CosineScorer, tmp_path: Path) -> None:
    cfg = DemoAttributionConfig(cache_dir=tmp_path)
    a = attribute_demos(DEMOS, VAL, fmt=FMT, config=cfg, scorer=scorer)
    assert a.method == "exact" and a.evaluations == 128 and not a.cached
    assert sum(a.values) == pytest.approx(a.full_value - a.empty_value, abs=1e-9)
    b = attribute_demos(DEMOS, VAL, fmt=FMT, config=cfg, scorer=scorer)
    assert b.cached and b.values == a.values and scorer.calls == 1
    # another proxy: never reused
    other = CosineScorer(scorer.proxy, tag="other")
    c = attribute_demos(DEMOS, VAL, fmt=FMT, config=cfg, scorer=other)
    assert not c.cached and other.calls == 1
    # a cache file from another version under the same key is ignored, then rewritten
    path = tmp_path / f"{a.key}.json"
    data = json.loads(path.read_text())
    data["version"] = DEMOS_VERSION + 1
    path.write_text(json.dumps(data))
    d = attribute_demos(DEMOS, VAL, fmt=FMT, config=cfg, scorer=scorer)
    assert not d.cached and scorer.calls == 2
    assert "Paris" not in path.read_text()  # values and hashes only, never prompt text
    # a cache file that is valid JSON of another shape is recomputed, not a crash
    path.write_text("[1, 2]")
    e = attribute_demos(DEMOS, VAL, fmt=FMT, config=cfg, scorer=scorer)
    assert not e.cached and e.values == a.values and scorer.calls == 3


def test_kernel_method_and_ranking(scorer: CosineScorer, tmp_path: Path) -> None:
    cfg = DemoAttributionConfig(method="kernel", samples=16, cache=False)
    a = attribute_demos(DEMOS, VAL, fmt=FMT, config=cfg, scorer=scorer)
    assert a.method == "kernel" and a.evaluations <= 18
    order = a.ranking()
    assert sorted(order) == list(range(7))
    assert [a.values[i] for i in order] == sorted(a.values)
    kept = a.keep(2)
    assert len(kept) == 2 and kept == sorted(kept) and set(kept) == set(order[-2:])
    assert select_demos(DEMOS, a, 2) == [DEMOS[i] for i in kept]


def test_fewer_than_two_demonstrations_change_nothing(scorer: CosineScorer) -> None:
    a = attribute_demos(DEMOS[:1], VAL, fmt=FMT, scorer=scorer)
    assert a.method == "none" and a.values == (0.0,) and scorer.calls == 0
    comp = DemoCompressor(DEMOS[:1], [], fmt=FMT, scorer=scorer)
    prompt = FMT.render(DEMOS[:1], "Q?")
    out = comp.compress(prompt, ratio=0.25)
    assert not out.changed and out.prompt == prompt
    assert demo_ladder(1) == [] and demo_ladder(8) == [6, 4, 2]


@pytest.mark.parametrize(
    ("demos", "validation", "match"),
    [
        (DEMOS, [ValidationExample("x?", "  ")], r"validation answers \[0\] are empty"),
        (DEMOS, [{"input": "x?", "answer": "y"}], r"validation \[0\] must be ValidationExample"),
        ([{"input": "a", "output": "b"}] * 3, VAL, r"demos \[0, 1, 2\] must be Demonstration"),
        ([("a", "b"), DEMOS[0]], VAL, r"demos \[0\] must be Demonstration objects, got tuple"),
        (DEMOS, [], "at least one validation request"),
    ],
)
def test_bad_demonstrations_or_validation_are_refused_at_construction(
    demos: Any, validation: Any, match: str
) -> None:
    """Before any model loads (no scorer is given: the LM proxy would be the default), not
    in the background attribution thread where it could only be logged."""
    with pytest.raises(ConfigError, match="DemoCompressor.*" + match):
        DemoCompressor(demos, validation, fmt=FMT)
    with pytest.raises(ConfigError, match=r"Demonstration\(output=...\) must be a string"):
        Demonstration("2+2", 4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"ValidationExample\(input=...\) must be a string"):
        ValidationExample(None, "4")  # type: ignore[arg-type]


def test_bad_validation_is_a_clear_error(scorer: CosineScorer) -> None:
    with pytest.raises(ConfigError, match="at least one validation"):
        attribute_demos(DEMOS, [], fmt=FMT, scorer=scorer)
    with pytest.raises(ConfigError, match=r"validation answers \[1\] are empty"):
        attribute_demos(DEMOS, [VAL[0], ValidationExample("x?", "  ")], fmt=FMT, scorer=scorer)

    class NaNScorer(CosineScorer):
        def values(self, *a: Any, **k: Any) -> np.ndarray:
            return np.full(len(a[3]), math.nan)

    with pytest.raises(ConfigError, match="non-finite"):
        attribute_demos(DEMOS, VAL, fmt=FMT, scorer=NaNScorer(scorer.proxy),
                        config=DemoAttributionConfig(cache=False))  # fmt: skip


def test_clean_drops_negative_demonstrations(scorer: CosineScorer, tmp_path: Path) -> None:
    bad = Demonstration("Tell me about the stock market crash of 1929 in detail.", "No.")
    demos = [*DEMOS[:3], bad]
    rep = clean_demos(demos, VAL, fmt=FMT, scorer=scorer,
                      config=DemoAttributionConfig(cache_dir=tmp_path))  # fmt: skip
    vals = rep.attribution.values
    assert set(rep.removed) == {i for i, v in enumerate(vals) if v < 0}
    assert set(rep.kept) | set(rep.removed) == set(range(4))
    js = rep.to_json()
    assert js["removed"] == list(rep.removed) and len(js["demonstrations"]) == 4
    assert js["demonstrations"][0]["value"] == min(round(v, 6) for v in vals)
    page = rep.to_html()
    assert page.startswith("<!doctype html>") and page.count("<tr") == 5
    assert rep.cleaned == [demos[i] for i in rep.kept]


# --------------------------------------------------------------------------------- parsing


def test_load_jsonl_reports_the_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "d.jsonl"
    good.write_text('{"input": "a?", "output": "b"}\n\n{"question": "c?", "answer": 3}\n')
    assert load_demonstrations(good) == [Demonstration("a?", "b"), Demonstration("c?", "3")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a?", "output": "b"}\n{"input": "no output"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: a demonstration needs"):
        load_demonstrations(bad)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"input": "a?", "output": "b"}\n{oops\n')
    with pytest.raises(ConfigError, match=r"broken.jsonl:2: not a JSON object"):
        load_demonstrations(broken)
    val = tmp_path / "v.jsonl"
    val.write_text('{"input": "q?", "answer": "a"}\n["x"]\n')
    with pytest.raises(ConfigError, match=r"v.jsonl:2: a validation request needs"):
        load_validation(val)


def test_clean_cli_errors_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from promptsieve._clean_cli import clean_command

    app = typer.Typer()
    app.command()(clean_command)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a?", "output": "b"}\nnot json\n')
    val = tmp_path / "v.jsonl"
    val.write_text('{"input": "q?", "answer": "a"}\n')
    res = CliRunner().invoke(app, [str(bad), "--validation", str(val)])
    assert res.exit_code == 2
    assert "bad.jsonl:2" in res.output and "Traceback" not in res.output
    missing = CliRunner().invoke(app, [str(tmp_path / "nope.jsonl"), "--validation", str(val)])
    assert missing.exit_code == 2 and "cannot read" in missing.output


# ------------------------------------------------------------------------ removing demos


def test_remove_demos_from_text_and_messages() -> None:
    prompt = FMT.render(DEMOS[:3], "What is 2+2?")
    out = remove_demos(prompt, DEMOS[:3], [1], FMT)
    assert out == FMT.render([DEMOS[0], DEMOS[2]], "What is 2+2?")
    msgs = (
        Message.text("system", "Be brief."),
        Message.text("user", DEMOS[0].input),
        Message.text("assistant", DEMOS[0].output),
        Message.text("user", DEMOS[1].input),
        Message.text("assistant", DEMOS[1].output),
        Message.text("user", "What is 2+2?"),
    )
    pairs = remove_demos(msgs, DEMOS[:2], [0], FMT)
    assert isinstance(pairs, tuple)
    assert [m.content for m in pairs] == ["Be brief.", DEMOS[1].input, DEMOS[1].output,
                                          "What is 2+2?"]  # fmt: skip
    # a prompt without the demonstrations: None (the caller sends it unchanged)
    assert remove_demos("no demos here", DEMOS[:2], [0], FMT) is None
    # the message-pair layout matches pairs only, never rendered text
    as_pairs = DemoFormat(pairs=True)
    assert remove_demos(prompt, DEMOS[:3], [1], as_pairs) is None
    again = remove_demos(msgs, DEMOS[:2], [0], as_pairs)
    assert isinstance(again, tuple) and [m.content for m in again] == [m.content for m in pairs]


def test_pairs_layout_is_chatml_message_pairs() -> None:
    with pytest.raises(ConfigError, match=r"pairs=True.*chat=True"):
        DemoFormat(pairs=True, chat=False)
    fmt = DemoFormat(header="Answer yes or no.\n", system="Be brief.", pairs=True)
    text = fmt.lm_text(DEMOS[:2], "Is it?")
    assert text == (
        "<|im_start|>system\nBe brief.\nAnswer yes or no.<|im_end|>\n"
        f"<|im_start|>user\n{DEMOS[0].input}<|im_end|>\n"
        f"<|im_start|>assistant\n{DEMOS[0].output}<|im_end|>\n"
        f"<|im_start|>user\n{DEMOS[1].input}<|im_end|>\n"
        f"<|im_start|>assistant\n{DEMOS[1].output}<|im_end|>\n"
        "<|im_start|>user\nIs it?<|im_end|>\n<|im_start|>assistant\n"
    )
    # pieces add up to the whole, so the scorer's shared-prefix KV cache sees the same text
    assert fmt.lm_prefix() + fmt.lm_demo(DEMOS[0]) + fmt.lm_query("q") == fmt.lm_text(
        DEMOS[:1], "q"
    )
    one_turn = DemoFormat(header="H\n")
    assert one_turn.lm_text(DEMOS[:1], "q").endswith(
        "<|im_start|>user\nH\n" + one_turn.render_demo(DEMOS[0]) + "Q: q\nA:<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert DemoFormat(chat=False).lm_text(DEMOS[:1], "q") == DemoFormat(chat=False).render(
        DEMOS[:1], "q"
    )


def test_demo_compressor_ladder_and_fail_open(scorer: CosineScorer, tmp_path: Path) -> None:
    cfg = DemoAttributionConfig(cache_dir=tmp_path)
    comp = DemoCompressor(DEMOS, VAL, fmt=FMT, config=cfg, scorer=scorer)
    prompt = FMT.render(DEMOS, "What is the capital of Spain?")
    assert comp.wait(120) is not None
    attr = comp.attribution
    assert attr is not None
    for ratio, k in ((0.8, 6), (0.5, 4), (0.2, 1)):
        out = comp.compress(prompt, ratio=ratio)
        assert out.changed and len(out.kept) == k
        assert out.prompt == FMT.render([DEMOS[i] for i in attr.keep(k)],
                                        "What is the capital of Spain?")  # fmt: skip
    assert not comp.compress("unrelated prompt", ratio=0.5).changed

    class Broken(CosineScorer):
        def values(self, *a: Any, **k: Any) -> np.ndarray:
            raise RuntimeError("proxy crashed")

    broken = DemoCompressor(DEMOS, VAL, fmt=FMT, scorer=Broken(scorer.proxy),
                            config=DemoAttributionConfig(cache=False))  # fmt: skip
    assert broken.wait(60) is None
    out = broken.compress(prompt, ratio=0.5)
    assert not out.changed and out.prompt == prompt


def test_without_lm_proxy_the_head_ranks(
    proxy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from promptsieve import demos
    from promptsieve.proxy.lm import LMProxyConfig

    monkeypatch.setattr(demos.HeadDemoScorer, "proxy", property(lambda self: proxy))
    fake = tmp_path / "fake.gguf"  # a GGUF never exported into the empty cache
    fake.write_bytes(b"GGUF" + b"\0" * 64)
    lm = LMProxyConfig(gguf=fake, cache_dir=tmp_path, allow_export=False, download=False)
    a = attribute_demos(DEMOS, VAL, fmt=FMT, config=DemoAttributionConfig(lm=lm, cache=False))
    assert a.method == "head" and len(a.values) == len(DEMOS)
    assert abs(sum(a.values)) < 1e-6  # centred scores, not Shapley values
    with pytest.raises(ConfigError, match="not exported"):
        attribute_demos(DEMOS, VAL, fmt=FMT,
                        config=DemoAttributionConfig(lm=lm, fallback=False))  # fmt: skip
    with pytest.raises(ConfigError, match="not exported"):
        clean_demos(DEMOS, VAL, fmt=FMT, config=DemoAttributionConfig(lm=lm))


def test_label_with_target_sends_the_layout_of_the_format() -> None:
    from promptsieve.demos import label_with_target

    seen: list[Any] = []

    def ask(prompt: Any) -> str:
        seen.append(prompt)
        return " yes \n"

    one = label_with_target(DEMOS[:2], ["Is it?"], ask, FMT)
    assert one == [ValidationExample("Is it?", "yes")]
    assert seen[0] == FMT.render(DEMOS[:2], "Is it?")
    label_with_target(DEMOS[:2], ["Is it?"], ask, DemoFormat(system="Be brief.", pairs=True))
    assert seen[1] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": DEMOS[0].input},
        {"role": "assistant", "content": DEMOS[0].output},
        {"role": "user", "content": DEMOS[1].input},
        {"role": "assistant", "content": DEMOS[1].output},
        {"role": "user", "content": "Is it?"},
    ]
    # header without system: the header alone is the system message, in the proxy's text too
    header_only = DemoFormat(header="Answer yes or no.\n", pairs=True)
    label_with_target(DEMOS[:1], ["Is it?"], ask, header_only)
    assert seen[2][0] == {"role": "system", "content": "Answer yes or no."}
    assert header_only.lm_text(DEMOS[:1], "Is it?").startswith(
        "<|im_start|>system\nAnswer yes or no.<|im_end|>\n<|im_start|>user\n"
    )
