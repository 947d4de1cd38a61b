"""The DemoCompressor's fingerprint (part of the sieve's verdict key) names the attribution
behind its ranking: the scorer (LM proxy float32 or int8, the MiniLM head fallback), the
validation requests and the format, not only the demonstration set and the method. Before,
``DemoAttributionConfig(lm=LMProxyConfig(int8=True))`` or a fallback to the head kept the
key, and a verdict screened on one ranking was reused for another.

Real value functions on the MiniLM proxy (onnxruntime); the int8/float32 case needs the
cached Qwen exports (``tests/test_lm_int8.py``) and is skipped where they are absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from _demo_helpers import DEMOS, FMT, VAL, CosineScorer
from promptsieve.demos import (
    DemoAttributionConfig,
    DemoCompressor,
    DemoFormat,
    HeadDemoScorer,
    ValidationExample,
)
from promptsieve.sieve import Sieve, SieveConfig

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _ready(comp: DemoCompressor) -> str:
    assert comp.wait(180) is not None
    return comp.fingerprint


def test_the_key_names_the_scorer_validation_and_format(proxy: Any, tmp_path: Path) -> None:
    cfg = DemoAttributionConfig(cache_dir=tmp_path)

    def comp(**kw: Any) -> DemoCompressor:
        args: dict[str, Any] = {"fmt": FMT, "config": cfg, "scorer": CosineScorer(proxy)}
        args.update(kw)
        return DemoCompressor(DEMOS, args.pop("validation", VAL), **args)

    base = _ready(comp())
    assert _ready(comp()) == base  # same attribution: same key (verdicts are kept)
    others = {
        "scorer": _ready(comp(scorer=CosineScorer(proxy, tag="other"))),
        "head": _ready(comp(scorer=HeadDemoScorer(proxy))),
        "validation": _ready(comp(validation=[ValidationExample("What is 2+2?", "4")])),
        "format": _ready(comp(fmt=DemoFormat(header="Answer briefly.\n\n", chat=False))),
    }
    for what, key in others.items():
        assert key != base, what
    assert len(set(others.values())) == len(others)


def test_the_sieve_key_moves_with_the_scorer(proxy: Any, tmp_path: Path) -> None:
    cfg = DemoAttributionConfig(cache_dir=tmp_path)
    keys = []
    for scorer in (CosineScorer(proxy), HeadDemoScorer(proxy)):
        comp = DemoCompressor(DEMOS, VAL, fmt=FMT, config=cfg, scorer=scorer)
        _ready(comp)
        sieve = Sieve(SieveConfig(store_path=str(tmp_path / "v.db")), compressor=comp)
        keys.append(sieve.verdict_key("qa", "gpt-4o"))
        sieve.close()
    assert keys[0] != keys[1]


def test_before_the_attribution_nothing_is_compressed_under_any_key(proxy: Any) -> None:
    """While the attribution runs, prompts go out unchanged, so the provisional key never
    gathers evidence for a ranking it does not name."""
    comp = DemoCompressor(DEMOS, VAL, fmt=FMT, scorer=CosineScorer(proxy),
                          config=DemoAttributionConfig(cache=False))  # fmt: skip
    pending = comp.fingerprint
    prompt = FMT.render(DEMOS, "What is the capital of Spain?")
    out = comp.compress(prompt, ratio=0.5)
    if comp.attribution is None:
        assert not out.changed
    _ready(comp)
    assert comp.fingerprint != pending


def test_int8_and_float32_lm_proxies_give_different_keys(
    lm32: Any, lm8: Any, tmp_path: Path
) -> None:
    from promptsieve.demos import LMDemoScorer

    keys = []
    for lm in (lm32, lm8):
        comp = DemoCompressor(DEMOS[:2], VAL[:1], fmt=FMT, scorer=LMDemoScorer(lm),
                              config=DemoAttributionConfig(cache_dir=tmp_path))  # fmt: skip
        keys.append(_ready(comp))
    assert keys[0] != keys[1]
