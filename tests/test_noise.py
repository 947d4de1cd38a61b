"""Noise floor: meaning-preserving variants and the floor's interval."""

from __future__ import annotations

import random

import pytest
from scipy.stats import binomtest

from promptsieve import ConfigError
from promptsieve.fidelity import (
    TargetOutput,
    measure_noise_floor,
    noise_floor,
    reflow,
    reorder_passages,
    variant,
)
from promptsieve.prompt import Message, OpaquePart, TextPart

DOCS = (
    "Use the documents to answer.\n\n"
    "Document 1: The Posterior Rhine rises near the Rheinwaldhorn\nand flows east.\n\n"
    "Document 2: Chur is the capital of Graubünden.\n\n"
    "Document 3: Lake Constance lies on the Rhine.\n\n"
    "Question: near which town does the Posterior Rhine turn north?"
)
CODE = "Fix this:\n\n```python\ndef f(x):\n    return  x\n```\n\n    indented   stays\n\n| a | b |"


def test_reorder_moves_only_passage_runs() -> None:
    out = reorder_passages(DOCS, random.Random(0))
    blocks, orig = out.split("\n\n"), DOCS.split("\n\n")
    assert out != DOCS and sorted(blocks) == sorted(orig)
    assert blocks[0] == orig[0] and blocks[-1] == orig[-1]  # instruction and question stay
    assert reorder_passages("no passages here\n\njust text", random.Random(0)) == (
        "no passages here\n\njust text"
    )


def test_reflow_changes_whitespace_only_and_spares_code() -> None:
    prose = "word " * 40 + "https://example.com/a-very-long-url-that-must-not-break"
    out = reflow(prose.strip(), width=30)
    assert out.split() == prose.split() and "\n" in out
    assert all(len(line) <= 30 or "https://" in line for line in out.splitlines())
    assert reflow(CODE, width=20) == CODE  # fenced code, indented block, table untouched
    with pytest.raises(ConfigError, match="width"):
        reflow(prose, width=5)


def test_variant_keeps_the_prompt_shape_and_protected_parts() -> None:
    image = OpaquePart({"type": "image_url", "image_url": {"url": "data:..."}})
    msgs = (
        Message.text("system", "You answer.\n\nDocument 1: x\n\nDocument 2: y"),
        Message("user", (TextPart(DOCS), image, TextPart("keep  me", protected=True))),
    )
    out = variant(msgs, "auto", seed=1)
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0] == msgs[0]  # system text is never touched
    assert out[1].parts[1] == image and out[1].parts[2] == msgs[1].parts[2]
    assert out[1].parts[0] != msgs[1].parts[0]
    assert sorted(out[1].content.split()) == sorted(msgs[1].content.split())
    assert variant(DOCS, seed=1) == variant(DOCS, seed=1)  # deterministic per seed
    assert variant("one short line", "auto") == "one short line"
    with pytest.raises(ConfigError, match="variant kind"):
        variant(DOCS, "shuffle")  # type: ignore[arg-type]


def test_floor_interval_is_wilson_and_warns_above_tau() -> None:
    floor = noise_floor(14, 20, tau=0.9)
    ci = binomtest(14, 20).proportion_ci(method="wilson")
    assert (floor.lower, floor.upper) == pytest.approx((ci.low, ci.high))
    assert floor.rate == 0.7 and floor.tau_above_floor
    assert "tau 0.9 is above the target's noise floor" in floor.warning()
    assert "14/20" in floor.summary()
    ok = noise_floor(20, 20, tau=0.9)
    assert not ok.tau_above_floor and ok.warning() == ""
    assert not noise_floor(0, 0, tau=0.9).tau_above_floor
    with pytest.raises(ValueError):
        noise_floor(3, 2)
    with pytest.raises(ConfigError):
        noise_floor(1, 2, confidence=1.0)


def _first_document_model(prompt: object) -> TargetOutput:
    """A position-sensitive 'model': answers with the first document it reads."""
    text = prompt if isinstance(prompt, str) else "\n\n".join(m.content for m in prompt)  # type: ignore[attr-defined]
    first = next(b for b in text.split("\n\n") if b.startswith("Document"))
    return TargetOutput(first.split(":")[1].split()[0])


def test_measure_noise_floor_sees_a_position_sensitive_target() -> None:
    prompts = [DOCS.replace("Chur", f"Chur{i}") for i in range(12)]
    floor = measure_noise_floor(prompts, _first_document_model, kind="reorder", tau=0.9)
    assert floor.n == 12 and floor.agree < 12 and floor.tau_above_floor
    stable = measure_noise_floor(prompts, _first_document_model, kind="reflow", tau=0.9)
    assert stable.n == 12 and stable.agree == 12 and not stable.tau_above_floor

    def broken(prompt: object) -> TargetOutput:
        raise TimeoutError

    assert measure_noise_floor(prompts, broken).n == 0  # failures are not counted
