"""The sieve core on neutral requests, with the real Gate on a real SQLite file."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from _sieve_helpers import ScriptedGate, WordDropCompressor, apply, long_text, shadow
from promptsieve import Plan, Prompt, Request, Sieve, SieveConfig, count_tokens
from promptsieve._context import current_task, task
from promptsieve._errors import ConfigError
from promptsieve.fidelity import Action, Gate, GateConfig, SQLiteStore, TargetOutput
from promptsieve.prompt import Message, OpaquePart, TextPart

MODEL = "gpt-4o-mini"


def _gate(tmp_path: Path, **kw: object) -> Gate:
    cfg = GateConfig(**{"tau": 0.6, "delta": 0.1, "ratios": (0.5,), "budget": 20, **kw})  # type: ignore[arg-type]
    return Gate(SQLiteStore(tmp_path / "verdicts.db"), cfg)


def _req(text: str | None = None, system: str = "Be brief.") -> Request:
    msgs = (Message.text("system", system), Message.text("user", text or long_text(3)))
    return Request(msgs, MODEL)


def _fixed() -> Sieve:
    return Sieve(SieveConfig(verify=False, ratio=0.5, guard=False), compressor=WordDropCompressor())


def _constant(prompt: Prompt) -> TargetOutput:
    return TargetOutput("Paris")


def _by_length(prompt: Prompt) -> TargetOutput:
    """A target whose answer changes when the prompt is shortened."""
    n = len(prompt) if isinstance(prompt, str) else sum(len(m.content) for m in prompt)
    return TargetOutput(f"answer {n}")


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        {"verify": False},
        {"ratio": 0.0},
        {"ratio": 1.5},
        {"scoring_budget_ms": 0},
        {"max_background": 0},
        {"guard_threshold": 2.0},
        {"task": " "},
    ],
)
def test_bad_config_fails_loudly(kw: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SieveConfig(**kw)  # type: ignore[arg-type]


def test_settings_key_changes_with_metric() -> None:
    assert SieveConfig().settings_key() != SieveConfig(metric="exact").settings_key()
    assert SieveConfig().settings_key() == SieveConfig().settings_key()
    # what the test means counts; how often it samples does not
    assert (
        SieveConfig(gate=GateConfig(monitor_rate=0.5)).settings_key()
        == SieveConfig().settings_key()
    )
    assert SieveConfig(gate=GateConfig(tau=0.8)).settings_key() != SieveConfig().settings_key()


def _f1_at(original: object, compressed: object, threshold: float = 0.8) -> bool:
    return True


class _Judge:
    def __call__(self, original: object, compressed: object) -> bool:
        return True


def test_partial_and_object_metrics_have_their_own_keys() -> None:
    """Two partials of one function are two metrics; a callable object is named by its class
    (before, both were keyed "module." and shared verdicts)."""
    import functools

    keys = {
        SieveConfig(metric=m).settings_key()
        for m in (
            _f1_at,
            functools.partial(_f1_at, threshold=0.5),
            functools.partial(_f1_at, threshold=0.9),
            _Judge(),
        )
    }
    assert len(keys) == 4
    same = functools.partial(_f1_at, threshold=0.5)
    assert (
        SieveConfig(metric=same).settings_key()
        == SieveConfig(metric=functools.partial(_f1_at, threshold=0.5)).settings_key()
    )


def test_a_bad_cosine_metric_is_refused_at_construction() -> None:
    """``cosine`` was let through unchecked: a bad threshold, or a compressor with no proxy
    to embed with, failed every comparison at run time (each spent a target call and was
    dropped, and screening never moved). Both are ConfigErrors now; nothing is loaded."""
    from promptsieve.compressor import Compressor

    for bad in ("cosine:abc", "cosine:1.5", "cosine:nan"):
        with pytest.raises(ConfigError, match="cosine"):
            SieveConfig(metric=bad)
    cfg = SieveConfig(metric="cosine:0.9")
    with pytest.raises(ConfigError, match="WordDropCompressor has no proxy"):
        Sieve(cfg, compressor=WordDropCompressor())
    compressor = Compressor()
    Sieve(cfg, compressor=compressor).close()  # a promptsieve Compressor embeds with its proxy
    Sieve(cfg).close()  # the default compressor too
    assert compressor._proxy is None  # checked without loading the proxy


def test_the_judge_on_live_traffic_is_the_callable_and_keys_as_the_offline_judge() -> None:
    """``metric="judge"`` names the offline judge: a live sieve has no completion function,
    so it is refused at construction (before, every comparison failed and screening never
    moved). ``target_judge(complete)`` is the live form, keyed "judge" as the offline one."""
    from promptsieve import TargetOutput, target_judge
    from promptsieve.fidelity.keys import settings_key

    with pytest.raises(ConfigError, match=r"target_judge\(complete\)"):
        SieveConfig(metric="judge")
    replies: list[str] = []

    def complete(prompt: object) -> TargetOutput:
        replies.append("no")
        return TargetOutput("no")

    judge = target_judge(complete)
    cfg = SieveConfig(metric=judge)
    assert cfg.settings_key() == settings_key(None, metric="judge")
    assert cfg.settings_key() != SieveConfig(metric=_Judge()).settings_key()
    named = _Judge()
    named.metric_name = "judge"  # type: ignore[attr-defined]  # only the target judge is "judge"
    assert SieveConfig(metric=named).settings_key() != cfg.settings_key()
    assert judge(TargetOutput("Paris"), TargetOutput("Lyon")) is False and replies == ["no"]


# -- task context ----------------------------------------------------------------------------
def test_task_nesting_and_restore() -> None:
    assert current_task() is None
    with task("outer"):
        with task("inner"):
            assert current_task() == "inner"
        assert current_task() == "outer"
    assert current_task() is None
    with pytest.raises(ConfigError):
        task("")


def test_task_restored_after_exception() -> None:
    with pytest.raises(RuntimeError), task("x"):
        raise RuntimeError
    assert current_task() is None


def test_task_decorator_sync_and_async() -> None:
    @task("sync")
    def f() -> str | None:
        return current_task()

    @task("async")
    async def g() -> str | None:
        await asyncio.sleep(0)
        return current_task()

    assert f() == "sync" and current_task() is None
    assert asyncio.run(g()) == "async"


def test_one_task_instance_shared_by_threads() -> None:
    shared = task("shared")
    seen: list[str | None] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        with shared:
            barrier.wait()
            seen.append(current_task())
        seen.append(current_task())

    with ThreadPoolExecutor(8) as ex:
        for f in [ex.submit(worker) for _ in range(8)]:
            f.result()
    assert seen.count("shared") == 8 and seen.count(None) == 8


def test_threads_do_not_inherit_but_copied_contexts_do() -> None:
    out: dict[str, str | None] = {}
    with task("parent"):
        t = threading.Thread(target=lambda: out.update(plain=current_task()))
        t.start()
        t.join()
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(lambda: out.update(copied=current_task()),))
        t.start()
        t.join()
    assert out == {"plain": None, "copied": "parent"}


async def test_task_isolated_between_asyncio_tasks() -> None:
    async def named(name: str) -> str | None:
        async with task(name):
            await asyncio.sleep(0.01)
            return current_task()

    assert await asyncio.gather(named("a"), named("b")) == ["a", "b"]


# -- prepare ---------------------------------------------------------------------------------
def test_verify_false_applies_fixed_ratio() -> None:
    sieve = Sieve(
        SieveConfig(verify=False, ratio=0.5, guard=False), compressor=WordDropCompressor()
    )
    plan = sieve.prepare(_req())
    sent = plan.sent
    assert plan.reason == "applied" and plan.is_compressed and plan.key is None
    assert sent.prompt[0] is _req().prompt[0] or sent.prompt[0] == _req().prompt[0]
    assert plan.tokens_after < plan.tokens_before
    snap = sieve.stats.snapshot()
    assert snap["compressed"] == 1 and snap["decisions"]["apply"] == 1
    assert snap["tokens_saved"] == plan.tokens_before - plan.tokens_after > 0


def test_token_estimates_use_the_models_tokenizer() -> None:
    from promptsieve.tokens import count_tokens

    sieve = Sieve(
        SieveConfig(verify=False, ratio=0.5, guard=False), compressor=WordDropCompressor()
    )
    plan = sieve.prepare(Request(long_text(2), MODEL, "completions"))
    assert plan.tokens_before == count_tokens(long_text(2), MODEL)


def test_nothing_compressible_skips_the_gate() -> None:
    gate = ScriptedGate(apply())
    sieve = Sieve(compressor=WordDropCompressor(), gate=gate)
    msgs = (Message.text("system", long_text(2)), Message("user", (OpaquePart({"image": 1}),)))
    plan = sieve.prepare(Request(msgs, MODEL))
    sent = plan.sent
    assert plan.reason == "nothing" and sent.prompt is msgs and gate.keys == []


def test_protected_text_is_left_alone() -> None:
    sieve = Sieve(
        SieveConfig(verify=False, ratio=0.5, guard=False), compressor=WordDropCompressor()
    )
    msgs = (Message("user", (TextPart(long_text(2), protected=True),)),)
    plan = sieve.prepare(Request(msgs, MODEL))
    assert plan.reason == "nothing"


def test_fail_open_on_compressor_error() -> None:
    sieve = Sieve(SieveConfig(verify=False, ratio=0.5), compressor=WordDropCompressor(fail=True))
    req = _req()
    plan = sieve.prepare(req)
    sent = plan.sent
    assert sent is req and plan.reason == "error"
    assert sieve.stats.errors == 1


def test_fail_open_on_gate_error() -> None:
    class BrokenGate(ScriptedGate):
        def decide(self, key):  # type: ignore[no-untyped-def]
            raise RuntimeError("down")

    sieve = Sieve(compressor=WordDropCompressor(), gate=BrokenGate())
    req = _req()
    plan = sieve.prepare(req)
    sent = plan.sent
    assert sent is req and plan.reason == "error" and sieve.stats.errors == 1


def test_scoring_budget() -> None:
    comp = WordDropCompressor(delay=2.0)
    sieve = Sieve(SieveConfig(verify=False, ratio=0.5, scoring_budget_ms=50), compressor=comp)
    count_tokens("warm", MODEL)  # the tokenizer's first load is not what this times
    t0 = time.perf_counter()
    plan = sieve.prepare(_req())
    sent = plan.sent
    assert time.perf_counter() - t0 < 1.0  # the caller waited about the budget, not 2 s
    assert plan.reason == "timeout" and sent.prompt == _req().prompt
    assert sieve.stats.timeouts == 1


def test_slow_compressor_load_sends_originals_while_warming(tmp_path: Path) -> None:
    loaded = threading.Event()

    class SlowLoad(Sieve):
        def _build_compressor(self) -> WordDropCompressor:
            loaded.wait(5)
            return WordDropCompressor()

    # A budget wide enough that the first call after the load is not a "timeout" on a busy
    # machine; the load itself is parked on the event, so the first call is "warming".
    sieve = SlowLoad(SieveConfig(scoring_budget_ms=1000, guard=False), gate=ScriptedGate(apply()))
    plan = sieve.prepare(_req())
    assert plan.reason == "warming" and sieve.stats.warming == 1 and sieve.stats.errors == 0
    loaded.set()
    for _ in range(100):
        plan = sieve.prepare(_req())
        if plan.reason != "warming":
            break
        time.sleep(0.02)
    assert plan.reason == "applied"


def test_guard_uses_gate_config_threshold(tmp_path: Path) -> None:
    gate = _gate(tmp_path, guard_threshold=0.95)
    comp = WordDropCompressor(similarity_value=0.9)
    sieve = Sieve(SieveConfig(verify=False, ratio=0.5), compressor=comp, gate=gate)
    plan = sieve.prepare(_req())
    assert plan.reason == "guard" and plan.similarity == 0.9
    assert sieve.stats.guard_skips == 1


# -- screen and apply with the real gate -----------------------------------------------------
def test_shadow_screening_passes_then_applies(tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    actions = []
    with task("capital"):
        for _ in range(30):
            plan = sieve.prepare(_req())
            sent = plan.sent
            actions.append(plan.decision.action if plan.decision else None)
            if plan.decision and plan.decision.action == Action.APPLY:
                break
            assert sent.prompt == _req().prompt  # unverified: the original goes out
            sieve.observe(plan, TargetOutput("Paris"), send_variant=_constant)
            assert sieve.flush(5)
    assert actions[0] == Action.SHADOW and actions[-1] == Action.APPLY
    assert plan.is_compressed and plan.key is not None and plan.key.task == "capital"
    snap = sieve.stats.snapshot()
    assert snap["screening_calls"] == len(actions) - 1 == snap["agreements"]
    verdict = gate.verdict(plan.key)
    assert verdict is not None and verdict.state.value == "passed" and verdict.ratio == 0.5


def _run_until_monitored(sieve: Sieve, answer: Callable[[Prompt], TargetOutput], n: int) -> None:
    """``n`` requests of task "quiz" (questions q0, q1, ...), every comparison recorded."""
    with task("quiz"):
        for i in range(n):
            request = _req(f"q{i} " + long_text(3))
            plan = sieve.prepare(request)
            sieve.observe(plan, answer(request.prompt), send_variant=answer)
            assert sieve.flush(5)


def _first_word(prompt: Prompt) -> TargetOutput:
    """A target whose answer is the question's first word (kept by the compressor)."""
    assert not isinstance(prompt, str)
    return TargetOutput(prompt[-1].content.split()[0])


def test_a_pass_on_one_answer_to_everything_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Live counterpart of ScreenResult.modal_share: the task passes on agreement, and the
    target gave one answer to every request, so the pass says nothing: warned once."""
    metric_calls = []

    def same_text(a: TargetOutput, b: TargetOutput) -> bool:  # counts the metric's calls
        metric_calls.append(1)
        return a.text == b.text

    gate = _gate(tmp_path, monitor_rate=1.0)
    cfg = SieveConfig(guard=False, metric=same_text)
    sieve = Sieve(cfg, compressor=WordDropCompressor(), gate=gate)
    with caplog.at_level(logging.WARNING, logger="promptsieve"):
        _run_until_monitored(sieve, _constant, 14)
    assert sieve.stats.compressed >= 1 and sieve.stats.comparisons >= 10
    assert len(metric_calls) == sieve.stats.comparisons  # the tracking calls no metric (judge)
    warned = [r.getMessage() for r in caplog.records if "passed screening, but" in r.getMessage()]
    assert len(warned) == 1, warned
    assert warned[0].startswith("promptsieve: task 'quiz' passed screening, but the target gave")
    assert "one answer (the same text, whitespace and case aside) to 1" in warned[0]
    assert "labelled mode (GateConfig(mode='labelled') with SieveConfig(judge=...))" in warned[0]
    assert "Paris" not in caplog.text and "q1" not in caplog.text  # no answer or prompt text
    # answers that differ by request: the same pass, no warning
    caplog.clear()
    other = Sieve(
        SieveConfig(guard=False),
        compressor=WordDropCompressor(),
        gate=_gate(tmp_path / "b", monitor_rate=1.0),
    )
    with caplog.at_level(logging.WARNING, logger="promptsieve"):
        _run_until_monitored(other, _first_word, 14)
    assert other.stats.compressed >= 1 and other.stats.comparisons >= 10
    assert "passed screening, but" not in caplog.text


def test_failing_task_never_compresses(tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    cfg = SieveConfig(guard=False, metric="exact")
    sieve = Sieve(cfg, compressor=WordDropCompressor(), gate=gate)
    with task("fragile"):
        for _ in range(15):
            plan = sieve.prepare(_req())
            sent = plan.sent
            assert not plan.is_compressed and sent.prompt == _req().prompt
            sieve.observe(plan, _by_length(_req().prompt), send_variant=_by_length)
            assert sieve.flush(5)
    assert plan.decision is not None and plan.decision.action == Action.BYPASS
    assert sieve.stats.compressed == 0 and sieve.stats.disagreements >= 1


async def test_async_prepare_and_observe(tmp_path: Path) -> None:
    gate = _gate(tmp_path)
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)

    async def send(prompt: Prompt) -> TargetOutput:
        await asyncio.sleep(0)
        return TargetOutput("Paris")

    plan: Plan | None = None
    for _ in range(30):
        plan = await sieve.aprepare(_req())
        if plan.is_compressed:
            break
        await sieve.aobserve(plan, TargetOutput("Paris"), send_variant=send)
        assert await sieve.aflush(5)
    assert plan is not None and plan.is_compressed


def test_monitor_and_usage_reconciliation() -> None:
    gate = ScriptedGate(apply(0.5, monitor=True))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    plan = sieve.prepare(_req())
    assert plan.comparison == "monitor"
    sent_prompts: list[Prompt] = []

    def send(prompt: Prompt) -> TargetOutput:
        sent_prompts.append(prompt)
        return TargetOutput("Paris")

    sieve.observe(plan, TargetOutput("Paris"), usage_prompt_tokens=plan.tokens_after + 7,
                  send_variant=send)  # fmt: skip
    assert sieve.flush(5)
    assert sent_prompts == [plan.request.prompt]  # the original, in the background
    snap = sieve.stats.snapshot()
    assert snap["prompt_tokens_reported"] == plan.tokens_after + 7
    assert snap["tokens_after"] == plan.tokens_after + 7
    assert snap["tokens_saved"] == plan.tokens_before - plan.tokens_after
    assert gate.records[0][2] is True


def test_stream_shadow_sends_both_variants() -> None:
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    plan = sieve.prepare(_req())
    seen: list[Prompt] = []

    def send(prompt: Prompt) -> TargetOutput:
        seen.append(prompt)
        return TargetOutput("x")

    sieve.observe(plan, None, send_variant=send)
    assert sieve.flush(5)
    assert len(seen) == 2 and seen[0] == plan.request.prompt and seen[1] != seen[0]


def test_abandoned_shadow_hands_the_slot_back() -> None:
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    plan = sieve.prepare(_req())
    sieve.observe(plan, TargetOutput("x"), send_variant=None)
    assert gate.records == [(plan.key, 0.5, None)]


def test_background_comparisons_see_the_task(tmp_path: Path) -> None:
    gate = ScriptedGate(shadow(0.5))
    sieve = Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    seen: list[str | None] = []

    def send(prompt: Prompt) -> TargetOutput:
        seen.append(current_task())
        return TargetOutput("x")

    with task("ctx"):
        plan = sieve.prepare(_req())
        sieve.observe(plan, TargetOutput("x"), send_variant=send)
    assert sieve.flush(5) and seen == ["ctx"]
