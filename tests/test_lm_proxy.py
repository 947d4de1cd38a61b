"""The ONNX LM proxy (Qwen2.5-Coder-0.5B-Instruct) on onnxruntime.

These tests need the exported model: they run where ``LMProxy.load()`` finds it in the
cache (``<promptsieve cache>/proxy/lm-<fingerprint>``, about 2.5 GB, built once by
``LMProxy.load()`` with ``promptsieve[export]`` in about a minute plus the 0.5 GB GGUF
download), and are skipped elsewhere, CI included: the export is too large for CI's cache.
The Shapley code itself is tested on a real model CI has in ``test_demos.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from promptsieve._errors import ConfigError


@pytest.fixture(scope="module")
def lm(lm32: Any) -> Any:
    """The cached float32 LM proxy (``conftest.py``; skips where it is not exported)."""
    return lm32


def test_missing_export_is_a_config_error(tmp_path: Path) -> None:
    from promptsieve.proxy.lm import LMProxy, LMProxyConfig

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ConfigError, match="not exported"):
        LMProxy.load(LMProxyConfig(gguf=gguf, cache_dir=tmp_path, allow_export=False))
    with pytest.raises(ConfigError, match=r"LMProxyConfig\(gguf=\.\.\.\): no file at .*absent"):
        LMProxyConfig(gguf=tmp_path / "absent.gguf", cache_dir=tmp_path)  # at construction


def test_kv_cache_and_batching_match_one_full_pass(lm: Any) -> None:
    from promptsieve.proxy.lm import chatml

    opening, closing = chatml()
    prefix = lm.encode(opening + "Q: What is the capital of France?\nA: Paris\n\n")
    ctx = [
        lm.encode("Q: What is the capital of Italy?\nA:" + closing),
        lm.encode("Q: 2+2?" + closing),
    ]
    tgt = [lm.encode("Rome"), lm.encode("4")]
    state = lm.extend(None, prefix)
    batched = lm.score(state, list(zip(ctx, tgt, strict=True)))
    for k in range(2):
        full = np.concatenate([prefix, ctx[k], tgt[k]])
        lp = lm.token_logprobs(full)
        expect = lp[len(full) - len(tgt[k]) :].sum()
        assert batched[k] == pytest.approx(expect, abs=2e-3)
        single = lm.score(lm.extend(state, ctx[k]), [(np.zeros(0, np.int64), tgt[k])])
        assert single[0] == pytest.approx(expect, abs=2e-3)
    nonsense = lm.score(state, [(ctx[0], lm.encode("zebra umbrella"))])
    assert batched[0] > nonsense[0]  # a real language model, not noise


@pytest.mark.parametrize("pairs", [False, True], ids=["one-turn", "message-pairs"])
def test_lm_attribution_equals_brute_force_shapley(lm: Any, tmp_path: Path, pairs: bool) -> None:
    from promptsieve import _shapley
    from promptsieve.demos import (
        DemoAttributionConfig,
        DemoFormat,
        Demonstration,
        LMDemoScorer,
        ValidationExample,
        attribute_demos,
    )
    from promptsieve.proxy.lm import chatml

    demos = [
        Demonstration("Is the sky blue?", "yes"),
        Demonstration("Is fire cold?", "no"),
        Demonstration("Is water wet?", "no"),  # a flipped label
    ]
    val = [ValidationExample("Is snow white?", "yes"), ValidationExample("Is ice hot?", "no")]
    fmt = DemoFormat(header="Answer yes or no.\n\n", pairs=pairs)
    scorer = LMDemoScorer(lm)
    a = attribute_demos(demos, val, fmt=fmt, scorer=scorer,
                        config=DemoAttributionConfig(cache_dir=tmp_path))  # fmt: skip
    # brute force: every coalition as one plain pass over the whole text, laid out here
    opening, closing = chatml()
    table = {}
    for c in _shapley.coalitions(3):
        vals = []
        for v in val:
            if pairs:
                turns = "".join(
                    f"<|im_start|>user\n{demos[i].input}<|im_end|>\n"
                    f"<|im_start|>assistant\n{demos[i].output}<|im_end|>\n"
                    for i in c
                )
                # the header alone is the system message (no default prompt then)
                head = "<|im_start|>system\nAnswer yes or no.<|im_end|>\n"
                text = f"{head}{turns}<|im_start|>user\n{v.input}{closing}"
            else:
                text = opening + fmt.render([demos[i] for i in c], v.input) + closing
            pre = lm.encode(text)
            ans = lm.encode(v.answer)
            lp = lm.token_logprobs(np.concatenate([pre, ans]))
            vals.append(lp[len(pre) :].sum())
        table[c] = float(np.mean(vals))
    np.testing.assert_allclose(a.values, _shapley.exact_shapley(3, table), atol=5e-3)
    assert a.tokens > 0 and a.proxy == scorer.fingerprint


def test_the_request_side_never_imports_torch(lm: Any) -> None:
    code = textwrap.dedent(
        f"""
        import json, sys
        from promptsieve.proxy.lm import LMProxy, LMProxyConfig
        from promptsieve.demos import LMDemoScorer, Demonstration, ValidationExample
        from promptsieve.demos import attribute_demos, DemoAttributionConfig
        lm = LMProxy.load(LMProxyConfig(cache_dir={str(lm.config.cache_dir)!r},
                                        allow_export=False, download=False))
        d = [Demonstration("Is the sky blue?", "yes"), Demonstration("Is fire cold?", "no")]
        attribute_demos(d, [ValidationExample("Is snow white?", "yes")],
                        scorer=LMDemoScorer(lm), config=DemoAttributionConfig(cache=False))
        heavy = [m for m in ("torch", "transformers", "optimum") if m in sys.modules]
        print(json.dumps(heavy))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_pairs_layout_is_the_gguf_chat_template() -> None:
    """``DemoFormat(pairs=True).lm_text`` equals what Qwen's own chat template (stored in the
    GGUF, rendered by llama-cpp-python's Jinja formatter, as its server does) makes of the
    same messages. Needs the Qwen GGUF in the cache (skipped elsewhere, CI included)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from promptsieve.demos import DemoFormat, Demonstration
    from promptsieve.local import gguf_path

    try:
        path = gguf_path("qwen2.5-coder-0.5b-instruct", download=False)
    except ConfigError:
        pytest.skip("the Qwen2.5-Coder-0.5B GGUF is not in the cache")
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    template = llm.metadata["tokenizer.chat_template"]
    demos = [Demonstration("Is the sky blue?", "yes"), Demonstration("Is fire cold?", "no")]

    def rendered(messages: list[dict[str, str]]) -> str:
        out = Jinja2ChatFormatter(template, eos_token="<|im_end|>", bos_token="")(messages=messages)
        return str(out.prompt)

    # system and header; header alone (no Qwen default then); neither (the template's default)
    for fmt in (
        DemoFormat(header="Answer yes or no.", system="Reply briefly.", pairs=True),
        DemoFormat(header="Answer yes or no.", pairs=True),
        DemoFormat(pairs=True),
    ):
        messages = fmt.messages(demos, "Is snow white?")
        assert fmt.lm_text(demos, "Is snow white?") == rendered(messages)
    assert messages[0] == {"role": "user", "content": "Is the sky blue?"}
