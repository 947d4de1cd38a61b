"""Integration: the real local target (Gemma 3 270M on llama.cpp) and screening against it.

Prompts are real: BIG-Bench Hard's direct-answer few-shot prompt for boolean expressions
(shipped by lm-eval), asked about fresh expressions generated here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _ci import require, require_module
from promptsieve.fidelity import (
    Action,
    Gate,
    GateConfig,
    Outcome,
    ScreenConfig,
    SQLiteStore,
    VerdictKey,
    VerdictState,
    screen,
)
from promptsieve.fidelity.stats import CURTAILED

pytestmark = pytest.mark.slow

require(
    importlib.util.find_spec("llama_cpp"), "needs promptsieve[local] (llama-cpp-python[server])"
)

from promptsieve.local import LocalTarget, LocalTargetConfig  # noqa: E402


@pytest.fixture(scope="module")
def local() -> Iterator[LocalTarget]:
    with LocalTarget.start(LocalTargetConfig(n_ctx=2048)) as target:
        yield target
    assert not target.running


def _bbh_prompt_head() -> str:
    lm_eval = require_module("lm_eval", reason="the BBH prompts ship with lm-eval (bench)")
    yaml = require_module("yaml")

    path = Path(lm_eval.__file__).parent / "tasks/bbh/fewshot/boolean_expressions.yaml"
    cfg = yaml.safe_load(path.read_text())
    shots = "".join(
        f"Q: {s['input']}\nA: {s['target']}\n\n" for s in cfg["fewshot_config"]["samples"]
    )
    return cfg["description"].strip() + "\n\n" + shots


def _expression(rng: random.Random, depth: int = 2) -> str:
    if depth == 0 or rng.random() < 0.3:
        return rng.choice(["True", "False"])
    kind = rng.choice(["not", "and", "or", "paren"])
    if kind == "not":
        return f"not {_expression(rng, depth - 1)}"
    if kind == "paren":
        return f"( {_expression(rng, depth - 1)} )"
    return f"{_expression(rng, depth - 1)} {kind} {_expression(rng, depth - 1)}"


def bbh_samples(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng, head = random.Random(seed), _bbh_prompt_head()
    return [
        {
            "prompt": f"{head}Q: {_expression(rng)} is\nA:",
            "max_tokens": 3,
            "stop": ["\n"],
            "temperature": 0,
            "seed": 0,
        }
        for _ in range(n)
    ]


def drop_words(body: dict[str, Any], ratio: float) -> dict[str, Any]:
    """A plain word-dropping compressor (keeps ~ratio of the words, evenly spaced)."""
    words = body["prompt"].split(" ")
    keep = [w for i, w in enumerate(words) if math.ceil((i + 1) * ratio) > math.ceil(i * ratio)]
    return {**json.loads(json.dumps(body)), "prompt": " ".join(keep)}


def test_local_target_answers(local: LocalTarget) -> None:
    assert local.base_url.startswith("http://127.0.0.1:") and local.base_url.endswith("/v1")
    text = local.complete(bbh_samples(1)[0]["prompt"], max_tokens=3, stop=["\n"])
    assert text.strip() in {"True", "False"}
    out = local.target().complete({"prompt": "The capital of France is", "max_tokens": 4})
    assert out.text.strip()


def test_screening_reaches_a_verdict(local: LocalTarget) -> None:
    samples = bbh_samples(30, seed=1)
    cfg = ScreenConfig(budget=30, ratios=(0.8,))
    t0 = time.monotonic()
    result = screen("bbh-boolean", samples, local.target(), cfg, compress=drop_words)
    rung = result.ratios[0]
    assert result.verdict in (VerdictState.PASSED, VerdictState.FAILED)
    assert rung.decision in (Outcome.PASS, Outcome.FAIL) and rung.n >= 1
    assert result.calls <= 2 * 30 and result.errors == 0
    print(f"\n{result.summary()} in {time.monotonic() - t0:.0f} s; {rung.agree}/{rung.n} agreed")


def test_destructive_ratio_fails_and_is_never_applied(local: LocalTarget, tmp_path: Path) -> None:
    samples = bbh_samples(30, seed=2)
    store = SQLiteStore(tmp_path / "verdicts.sqlite3")
    key = VerdictKey("bbh-boolean", local.model, "drop-words", "ratio=0.05")
    target = local.target()
    # offline screening fails ...
    result = screen(
        "bbh-boolean", samples, target, ScreenConfig(budget=30, ratios=(0.05,)),
        compress=drop_words, store=store, key=key,
    )  # fmt: skip
    assert result.verdict is VerdictState.FAILED and result.ratio is None
    # a budget of 30 needs 30 agreements in a row: the first disagreement ends the rung
    assert result.ratios[0].reason == CURTAILED
    assert result.ratios[0].agree == result.ratios[0].n - 1
    gate = Gate(store, GateConfig(ratios=(0.05,), monitor_rate=1.0))
    assert all(gate.decide(key).action is Action.BYPASS for _ in range(50))
    # ... and so does online shadow screening: live traffic never gets the compressed prompt
    online = VerdictKey("bbh-boolean-online", local.model, "drop-words", "ratio=0.05")
    actions = []
    for body in samples:
        d = gate.decide(online)
        actions.append(d.action)
        if d.action is Action.SHADOW:
            assert d.ratio is not None
            original = target.complete(body)  # what the user gets
            shadow = target.complete(drop_words(body, d.ratio))
            gate.record(online, d.ratio, original.text.strip() == shadow.text.strip())
        v = gate.verdict(online)
        if v is not None and v.state is VerdictState.FAILED:
            break
    assert Action.APPLY not in actions
    v = gate.verdict(online)
    assert v is not None and v.state is VerdictState.FAILED
    assert gate.decide(online).action is Action.BYPASS


def test_embedded_qwen_target_answers_in_chat(tmp_path: Path) -> None:
    """The 0.5B instruct target, when its GGUF is assembled already (CI does not need it)."""
    from promptsieve import ConfigError
    from promptsieve.local import EMBEDDED_MODELS, gguf_path

    name = "qwen2.5-coder-0.5b-instruct"
    try:
        path = gguf_path(name, download=False)
    except ConfigError as exc:
        pytest.skip(f"the Qwen packages are not fetched here: {exc}")
    from llama_cpp import Llama

    meta = Llama(model_path=str(path), vocab_only=True, verbose=False).metadata
    assert meta["general.name"] == EMBEDDED_MODELS[name].general_name
    assert "<|im_start|>" in meta["tokenizer.chat_template"]  # served with its own template
    with LocalTarget.start(LocalTargetConfig(model=name, n_ctx=1024)) as target:
        assert target.model == name
        reply = target.chat(
            [{"role": "user", "content": "What is the capital of France? One word."}],
            max_tokens=8,
        )
    assert "paris" in reply.lower()


@pytest.mark.skipif(not hasattr(os, "getppid") or os.name != "posix", reason="POSIX re-parenting")
def test_server_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    """A script killed by SIGKILL runs no clean-up; its llama.cpp server must not outlive it
    (it would keep the cores and the model's memory). The server is a real one (Gemma)."""
    script = (
        "import sys, time\n"
        "from promptsieve.local import LocalTarget, LocalTargetConfig\n"
        "t = LocalTarget.start(LocalTargetConfig(n_ctx=512, n_threads=1))\n"
        "print(t.process.pid, t.port, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid, port = (int(x) for x in parent.stdout.readline().split())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as r:
            assert r.status == 200  # the server is up and serving
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        assert not _alive(pid), "the llama.cpp server outlived the process that started it"
    finally:
        parent.kill()
        if "pid" in locals() and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Is ``pid`` a live process (not a zombie awaiting its reaper)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"
