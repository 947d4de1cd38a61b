"""Head scorer on the real scorer graph (truncated MiniLM + committed query head, ONNX)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _ci import require_module
from promptsieve.proxy import HeadScorer, Proxy, ProxyConfig, Scorer, default_head_path
from promptsieve.proxy._export import (
    default_model_dir,
    read_head_metadata,
    scorer_fingerprint,
    scorer_layers,
)
from promptsieve.proxy._runtime import assign_owners, plan_windows

TEXT = (
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. "
    "It is 330 metres tall. The weather in Paris is mild, and the city has many cafes. "
    "Python lists are mutable sequences; tuples are immutable."
)


def _long_text(n_tokens: int, proxy: Proxy) -> str:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    _, offsets = proxy.tokenize(text[: n_tokens * 8])
    return text[: int(offsets[n_tokens - 1][1])]


@pytest.fixture(scope="module")
def scorer(proxy: Proxy) -> HeadScorer:
    return HeadScorer(proxy)


def test_committed_head_is_small_versioned_and_fingerprinted(
    proxy: Proxy, scorer: HeadScorer, proxy_cache_dir: Path
) -> None:
    path = default_head_path()
    assert path.is_file() and path.stat().st_size < 1_000_000
    meta = read_head_metadata(path)
    assert meta["format"] == "promptsieve-qhead/1" and meta["version"] == "head-v2"
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["layers"] == scorer_layers(path) == int(meta["layers"])
    assert 1 <= info["layers"] <= 6
    held = info["heldout"]
    assert (
        held["by_layers"][str(info["layers"])]["spearman"]
        > held["baselines"]["position"]["spearman"]
    )
    assert isinstance(scorer, Scorer) and scorer.name == "head"
    again = HeadScorer(Proxy.load(ProxyConfig(cache_dir=proxy_cache_dir)))
    assert again.fingerprint == scorer.fingerprint
    fp = scorer_fingerprint(default_model_dir(), path, proxy.config.export_settings())
    assert proxy.scorer_fingerprint == fp


def test_scorer_graph_is_cached(proxy: Proxy, scorer: HeadScorer, proxy_cache_dir: Path) -> None:
    folder = proxy.scorer_dir
    assert folder is not None and folder.parent == proxy_cache_dir
    assert folder.name == f"scorer-{proxy.scorer_fingerprint}"
    model = folder / "model.onnx"
    mtime = model.stat().st_mtime_ns
    other = Proxy.load(ProxyConfig(cache_dir=proxy_cache_dir))
    other.scorer_session  # noqa: B018
    assert not other.scorer_exported and other.scorer_dir == folder
    assert model.stat().st_mtime_ns == mtime
    # truncated: smaller than the full 6-layer graph when the head uses fewer layers
    if scorer_layers(default_head_path()) < 6:
        assert model.stat().st_size < (proxy.export_dir / "model.onnx").stat().st_size


def test_scorer_graph_matches_torch(proxy: Proxy, scorer: HeadScorer) -> None:
    torch = require_module("torch")
    from promptsieve.proxy._export import truncated_encoder
    from promptsieve.proxy._head import load_query_head

    head = load_query_head(default_head_path())
    bert = truncated_encoder(default_model_dir(), head.layers)
    q = proxy._question_ids("When was it completed?")
    rows = [proxy.tokenize(TEXT)[0], proxy.tokenize("Short one.")[0]]
    for question in (q, None):
        feeds = proxy._feeds(rows, question)
        logits, probs = proxy._run(feeds, ["keep_logits", "keep_probs"], proxy.scorer_session)
        with torch.no_grad():
            t = {k: torch.from_numpy(v) for k, v in feeds.items()}
            h = bert(**t).last_hidden_state
            want = head(h, t["attention_mask"], t["token_type_ids"]).numpy()
        m = feeds["attention_mask"].astype(bool)
        assert np.abs(logits - want)[m].max() < 1e-4
        assert np.allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-6)


def test_scores_align_with_text_and_are_probabilities(scorer: HeadScorer) -> None:
    ts = scorer.score(TEXT)
    assert ts.scorer == "head" and ts.text == TEXT
    assert ts.offsets.shape == (len(ts.scores), 2) and len(ts.scores) > 30
    assert np.all((ts.scores > 0) & (ts.scores < 1))
    assert TEXT[ts.offsets[0][0] : ts.offsets[0][1]] == "The"
    assert scorer.score("").scores.shape == (0,)


def test_question_changes_scores(scorer: HeadScorer) -> None:
    plain = scorer.score(TEXT).scores
    tower = scorer.score(TEXT, question="How tall is the Eiffel Tower?").scores
    python = scorer.score(TEXT, question="Which Python sequences are immutable?").scores
    assert plain.shape == tower.shape == python.shape
    assert np.abs(tower - python).max() > 1e-3
    assert np.abs(tower - plain).max() > 1e-3


def test_deterministic(proxy_cache_dir: Path, scorer: HeadScorer) -> None:
    a = scorer.score(TEXT, question="How tall?").scores
    b = scorer.score(TEXT, question="How tall?").scores
    fresh = HeadScorer(Proxy.load(ProxyConfig(cache_dir=proxy_cache_dir)))
    c = fresh.score(TEXT, question="How tall?").scores
    assert np.array_equal(a, b) and np.allclose(a, c, atol=1e-6)


def test_window_padding_fixed_for_1k_tokens(proxy: Proxy, scorer: HeadScorer) -> None:
    text = _long_text(1000, proxy)
    out = proxy.keep_probs(text)
    assert len(out.offsets) == 1000
    assert out.n_windows == 3
    # balanced windows: ~376 tokens each, not two full ones plus a tail padded to 512
    assert out.width <= (1000 + 2 * proxy.config.overlap) // 3 + 1 + 2
    for n in (1, 509, 510, 511, 1000, 1021, 4096, 32768):
        ranges = plan_windows(n, 510, 64)
        count = 1 if n <= 510 else -(-(n - 64) // (510 - 64))
        assert len(ranges) == count
        lens = [e - s for s, e in ranges]
        assert max(lens) <= 510 and max(lens) - min(lens) < max(count, 2)
        owned = np.concatenate(
            [np.arange(w.own_start, w.own_end) for w in assign_owners(ranges, n)]
        )
        assert np.array_equal(owned, np.arange(n))


def test_io_binding_path_on_cpu(proxy_cache_dir: Path, scorer: HeadScorer) -> None:
    bound = Proxy.load(ProxyConfig(cache_dir=proxy_cache_dir, io_binding=True))
    got = bound.keep_probs(TEXT, question="How tall?").keep_probs
    want = scorer.score(TEXT, question="How tall?").scores
    assert np.allclose(got, want, atol=1e-6)
    assert np.allclose(bound.embed([TEXT]), scorer.proxy.embed([TEXT]), atol=1e-6)


def test_unit_scores_and_explain(proxy: Proxy, scorer: HeadScorer) -> None:
    from promptsieve.compressor import Compressor, CompressorConfig

    comp = Compressor(CompressorConfig(proxy=proxy.config), proxy=proxy)
    ts = comp.explain(TEXT, question="How tall?", scorer="head")
    assert ts.scorer == "head"
    assert np.allclose(ts.scores, scorer.score(TEXT, question="How tall?").scores)
    assert ts.unit_scores([(0, 3), (4, 10)]).shape == (2,)
