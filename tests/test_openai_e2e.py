"""End to end: wrap_openai → real local target (Gemma 3 270M on llama.cpp), real proxy,
real Gate on SQLite. A recording pass-through server sits in front of the target so the
tests assert on exactly what the target received.

Prompts follow what this small base model is stable on (README, Gemma 3 270M results):
needle retrieval over Python's pydoc topics, short direct answers, temperature 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from _scripted_server import ScriptedServer, forward_to
from promptsieve._context import task
from promptsieve.fidelity import Action, Gate, GateConfig, SQLiteStore, VerdictKey
from promptsieve.sieve import Sieve, SieveConfig
from promptsieve_openai import wrap_openai

pytestmark = pytest.mark.slow

NEEDLES = [
    ("blue", "4417"),
    ("green", "2930"),
    ("red", "8156"),
    ("yellow", "6072"),
    ("white", "3391"),
    ("black", "7524"),
    ("orange", "1648"),
    ("purple", "5283"),
    ("silver", "9705"),
    ("golden", "2861"),
    ("copper", "4139"),
    ("violet", "6357"),
]


def _haystack(i: int, chars: int = 1100) -> str:
    from pydoc_data.topics import topics

    keys = sorted(topics)
    text = " ".join(" ".join(topics[keys[(7 * i + j) % len(keys)]].split()) for j in range(3))
    return text[:chars].rsplit(" ", 1)[0]


def needle_prompt(i: int) -> str:
    color, code = NEEDLES[i % len(NEEDLES)]
    hay = _haystack(i)
    cut = len(hay) // 2
    cut = hay.rfind(". ", 0, cut) + 2 if hay.rfind(". ", 0, cut) > 0 else cut
    fact = f"The secret code of the {color} door is {code}. "
    return (
        f"{hay[:cut]}{fact}{hay[cut:]}\n\n"
        f"Question: What is the secret code of the {color} door?\n"
        f"Answer: The secret code of the {color} door is"
    )


def continuation_prompt(i: int) -> str:
    """Continue a haystack verbatim: depends on every word, so pruning changes the answer."""
    return _haystack(i + 3, 900)


@pytest.fixture(scope="module")
def local_target() -> Iterator[Any]:
    from promptsieve.local import LocalTarget

    with LocalTarget.start() as target:
        yield target


@pytest.fixture(scope="module")
def recorder(local_target: Any) -> Iterator[ScriptedServer]:
    """A pass-through server in front of the target that records every request body."""
    with ScriptedServer(forward_to(local_target.base_url)) as srv:
        yield srv


@pytest.fixture(scope="module")
def compressor(proxy_cache_dir: Path) -> Any:
    """Sentence-level pruning: the 270M target stays stable on it (the head scorer's
    word-level pruning changes too many of its answers to pass screening)."""
    from promptsieve.compressor import Compressor, CompressorConfig
    from promptsieve.proxy import ProxyConfig

    return Compressor(
        CompressorConfig(scorer="sentence", proxy=ProxyConfig(cache_dir=proxy_cache_dir))
    )


def _sieve(tmp_path: Path, compressor: Any, ratios: tuple[float, ...]) -> tuple[Sieve, Gate]:
    gate_cfg = GateConfig(
        tau=0.6, delta=0.1, budget=12, ratios=ratios, monitor_rate=0.0, seed=0,
        guard_threshold=0.5,
    )  # fmt: skip
    gate = Gate(SQLiteStore(tmp_path / "verdicts.db"), gate_cfg)
    cfg = SieveConfig(gate=gate_cfg, scoring_budget_ms=30_000)
    return Sieve(cfg, compressor=compressor, gate=gate), gate


def _client(recorder: ScriptedServer) -> OpenAI:
    return OpenAI(base_url=recorder.url, api_key="x", max_retries=0, timeout=120)


def test_needle_task_passes_screening_then_goes_out_compressed(
    tmp_path: Path, recorder: ScriptedServer, local_target: Any, compressor: Any
) -> None:
    sieve, gate = _sieve(tmp_path, compressor, (0.5,))
    client = wrap_openai(_client(recorder), sieve)
    recorder.clear()
    compressed_live = 0
    answers: list[tuple[str, str]] = []
    usage: list[tuple[bool, int]] = []  # (compressed?, server-reported prompt tokens)
    with task("needle"):
        for i in range(14):
            prompt = needle_prompt(i)
            n0 = len(recorder.requests)
            out = client.completions.create(
                model=local_target.model, prompt=prompt, max_tokens=6, temperature=0, seed=0
            )
            live = recorder.requests[n0].json["prompt"]
            answers.append((NEEDLES[i % len(NEEDLES)][1], out.choices[0].text))
            assert out.usage is not None
            usage.append((live != prompt, out.usage.prompt_tokens))
            assert sieve.flush(120)
            if live != prompt:
                compressed_live += 1
                assert len(live) < len(prompt)
                assert "Question: What is the secret code" in live  # the question is kept
                if compressed_live >= 2:
                    break
    snap = sieve.stats.snapshot()
    assert compressed_live >= 2, snap
    assert snap["decisions"]["shadow"] >= 1 and snap["screening_calls"] >= 1
    assert snap["tokens_saved"] > 0 and snap["usage_reports"] == snap["requests"]
    # the compressed live calls still found the needle
    for code, text in answers[-compressed_live:]:
        assert code in text, answers
    # the server's own usage: compressed calls read fewer prompt tokens
    full = [n for c, n in usage if not c]
    short = [n for c, n in usage if c]
    assert max(short) < min(full), usage
    key = VerdictKey("needle", local_target.model, compressor.fingerprint,
                     sieve.config.settings_key())  # fmt: skip
    verdict = gate.verdict(key)
    assert verdict is not None and verdict.state.value == "passed" and verdict.ratio == 0.5


def test_failing_task_never_sends_a_compressed_prompt(
    tmp_path: Path, recorder: ScriptedServer, local_target: Any, compressor: Any
) -> None:
    sieve, gate = _sieve(tmp_path, compressor, (0.05,))
    client = wrap_openai(_client(recorder), sieve)
    recorder.clear()
    live_prompts: list[tuple[str, str]] = []
    key = VerdictKey("continuation", local_target.model, compressor.fingerprint,
                     sieve.config.settings_key())  # fmt: skip
    with task("continuation"):
        for i in range(8):
            prompt = continuation_prompt(i)
            n0 = len(recorder.requests)
            client.completions.create(
                model=local_target.model, prompt=prompt, max_tokens=8, temperature=0, seed=0
            )
            live_prompts.append((prompt, recorder.requests[n0].json["prompt"]))
            assert sieve.flush(120)
            verdict = gate.verdict(key)
            if verdict is not None and verdict.state.value == "failed":
                break
    assert verdict is not None and verdict.state.value == "failed", sieve.stats.snapshot()
    assert all(sent == original for original, sent in live_prompts)
    assert sieve.stats.compressed == 0 and sieve.stats.disagreements >= 1
    assert sieve.stats.decisions[Action.APPLY.value] == 0
