"""The LM proxy's int8 option (``LMProxyConfig(int8=True)``): build, fingerprint, fidelity.

CI runs the torch-free parts (fingerprints, the cache look-up, the quantisation step on the
real MiniLM graph that CI exports anyway). The Qwen parts need the float32 and int8 exports
in the user's cache (``<promptsieve cache>/proxy/lm-<fingerprint>``, built once by
``LMProxy.load(LMProxyConfig(int8=...))``) and are skipped where they are absent, CI
included, like ``test_lm_proxy.py`` (fixtures ``lm8`` / ``lm32`` in ``conftest.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from promptsieve._errors import ConfigError

# ------------------------------------------------------------------ torch-free, runs in CI


def test_int8_has_its_own_fingerprint_and_cache_folder(tmp_path: Path) -> None:
    from promptsieve.proxy._lm_export import LMExportSettings, lm_fingerprint, resolve_gguf
    from promptsieve.proxy.lm import LMProxy, LMProxyConfig

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    _, digest = resolve_gguf(gguf)
    fp32 = lm_fingerprint(digest, LMExportSettings(int8=False))
    fp8 = lm_fingerprint(digest, LMExportSettings(int8=True))
    assert fp32 != fp8
    assert LMProxyConfig(int8=True).export_settings() == LMExportSettings(int8=True)
    for int8, fp in ((False, fp32), (True, fp8)):
        cfg = LMProxyConfig(gguf=gguf, cache_dir=tmp_path, allow_export=False, int8=int8)
        with pytest.raises(ConfigError, match=f"LM proxy {fp} is not exported"):
            LMProxy.load(cfg)


def test_int8_with_gpu_providers_only_is_a_config_error() -> None:
    """The int8 fingerprint names the CPU kernel's int8 compute (MatMulNBits at accuracy level
    4); onnxruntime's CUDA MatMulNBits (8 bits since 1.22) dequantises and multiplies in
    float, other scores under the same fingerprint. Asking for int8 on CUDA alone is a
    contradiction, said at construction; with CPU among the providers, or float32, it is fine.
    """
    from promptsieve.proxy.lm import LMProxyConfig

    with pytest.raises(ConfigError, match=r"int8=False.*CPUExecutionProvider"):
        LMProxyConfig(int8=True, providers=("CUDAExecutionProvider",))
    LMProxyConfig(int8=True, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    LMProxyConfig(int8=True, providers=("CPUExecutionProvider",))
    LMProxyConfig(int8=False, providers=("CUDAExecutionProvider",))


def test_an_int8_folder_is_never_taken_for_the_float32_one(tmp_path: Path) -> None:
    """A cached export is found by its own fingerprint only: int8 with only float32 cached
    (and export disallowed) is a ConfigError, not the float32 graph."""
    from promptsieve.proxy._lm_export import (
        LMExportSettings,
        ensure_lm_export,
        lm_fingerprint,
        resolve_gguf,
    )

    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF" + b"\1" * 64)
    _, digest = resolve_gguf(gguf)
    fp32 = lm_fingerprint(digest, LMExportSettings())
    done = tmp_path / f"lm-{fp32}"
    done.mkdir()
    (done / "export.json").write_text("{}")
    folder, fp, exported = ensure_lm_export(gguf, tmp_path, LMExportSettings(), allow_export=False)
    assert (folder, fp, exported) == (done, fp32, False)
    with pytest.raises(ConfigError, match="not exported"):
        ensure_lm_export(gguf, tmp_path, LMExportSettings(int8=True), allow_export=False)


def test_quantize_int8_on_a_real_graph(proxy: Any, tmp_path: Path) -> None:
    """The int8 step on the real MiniLM encoder graph: a working, smaller graph whose
    embeddings stay close to float32 (the same call quantises the LM's decoder)."""
    pytest.importorskip("onnx_ir", reason="the int8 quantizer needs promptsieve[export]")
    import onnxruntime as ort

    from promptsieve.proxy._lm_export import quantize_int8

    src = Path(proxy.export_dir) / "model.onnx"
    dst = tmp_path / "int8" / "model.onnx"
    quantize_int8(src, dst)
    data = [p for p in dst.parent.iterdir() if p.name != "model.onnx"]
    assert data, "the weights go to an external data file next to the graph"
    total = sum(p.stat().st_size for p in dst.parent.iterdir())
    assert total < 0.8 * src.stat().st_size  # the float32 word embedding is half of MiniLM
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(proxy.export_dir) / "tokenizer.json"))
    tok.enable_padding()
    enc = tok.encode_batch(["The cat sat on the mat.", "Stock prices fell today."])
    feeds = {
        "input_ids": np.array([e.ids for e in enc], np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], np.int64),
    }
    runs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
            ["sentence_embedding"], feeds
        )[0]
        for p in (src, dst)
    ]
    cos = (runs[0] * runs[1]).sum(-1)  # both L2-normalised
    assert np.all(cos > 0.98), cos
    assert np.all(cos < 1.0 - 1e-7), "the graph really changed"


# ----------------------------------------------------------- the real Qwen exports (cached)


def test_int8_fingerprint_differs_from_float32(lm8: Any, lm32: Any) -> None:
    from promptsieve.demos import LMDemoScorer

    assert lm8.fingerprint != lm32.fingerprint
    assert LMDemoScorer(lm8).fingerprint != LMDemoScorer(lm32).fingerprint
    sizes = [
        sum(p.stat().st_size for p in Path(m.export_dir).iterdir() if "model.onnx" in p.name)
        for m in (lm8, lm32)
    ]
    assert sizes[0] < 0.5 * sizes[1], sizes  # 1.1 GB vs 2.5 GB: the embedding stays float32


def test_int8_answer_logprobs_track_float32(lm8: Any, lm32: Any) -> None:
    from promptsieve.proxy.lm import chatml

    opening, closing = chatml()
    prefix = opening + "Q: What is the capital of France?\nA: Paris\n\nQ: "
    questions = ["What is the capital of Italy?", "2+2?", "Is snow white? Answer yes or no."]
    answers = ["Rome", "4", "yes", "zebra umbrella", "Paris"]
    got = []
    for lm in (lm32, lm8):
        state = lm.extend(None, lm.encode(prefix))
        conts = [(lm.encode(q + closing), lm.encode(a)) for q in questions for a in answers]
        got.append(lm.score(state, conts).reshape(len(questions), len(answers)))
    fp32, int8 = got
    # the best answer to every question is the same, and the log-probs stay close: within
    # 1 nat for every answer the model finds at all plausible (measured: at most 0.7), the
    # nonsense answer (about -40 nats) moves more in absolute terms (about 2 nats)
    assert (fp32.argmax(1) == int8.argmax(1)).all(), (fp32, int8)
    plausible = fp32 > -20.0
    assert np.abs(fp32 - int8)[plausible].max() < 1.0, np.abs(fp32 - int8)
    assert np.corrcoef(fp32.ravel(), int8.ravel())[0, 1] > 0.99


def test_attribution_cache_is_not_shared_between_int8_and_float32(
    lm8: Any, lm32: Any, tmp_path: Path
) -> None:
    from promptsieve.demos import (
        DemoAttributionConfig,
        DemoFormat,
        Demonstration,
        LMDemoScorer,
        ValidationExample,
        attribute_demos,
    )

    demos = [Demonstration("Is the sky blue?", "yes"), Demonstration("Is fire cold?", "no")]
    val = [ValidationExample("Is snow white?", "yes")]
    fmt = DemoFormat(header="Answer yes or no.\n\n")
    cfg = DemoAttributionConfig(cache_dir=tmp_path)
    a32 = attribute_demos(demos, val, fmt=fmt, scorer=LMDemoScorer(lm32), config=cfg)
    a8 = attribute_demos(demos, val, fmt=fmt, scorer=LMDemoScorer(lm8), config=cfg)
    again = attribute_demos(demos, val, fmt=fmt, scorer=LMDemoScorer(lm8), config=cfg)
    assert not a32.cached and not a8.cached and again.cached
    assert a8.key != a32.key and a8.proxy != a32.proxy
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_int8_scores_do_not_depend_on_kv_chunks_or_batching(lm8: Any) -> None:
    """Per-row activation quantisation: the KV-cache path, batching and one full pass agree
    (onnxruntime's dynamic int8, one activation scale per tensor, was up to 8 nats off)."""
    from promptsieve.proxy.lm import chatml

    opening, closing = chatml()
    prefix = lm8.encode(opening + "Q: What is the capital of France?\nA: Paris\n\n")
    ctx = [
        lm8.encode("Q: What is the capital of Italy?\nA:" + closing),
        lm8.encode("Q: 2+2?" + closing),
    ]
    tgt = [lm8.encode("Rome"), lm8.encode("4")]
    state = lm8.extend(None, prefix)
    batched = lm8.score(state, list(zip(ctx, tgt, strict=True)))
    for k in range(2):
        full = np.concatenate([prefix, ctx[k], tgt[k]])
        expect = lm8.token_logprobs(full)[len(full) - len(tgt[k]) :].sum()
        single = lm8.score(lm8.extend(state, ctx[k]), [(np.zeros(0, np.int64), tgt[k])])
        assert batched[k] == pytest.approx(expect, abs=2e-2)
        assert single[0] == pytest.approx(expect, abs=2e-2)
