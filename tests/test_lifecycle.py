"""Every lifecycle scenario through both drivers, with the same assertions.

One request goes through ``with sieve.call(...)`` (the sync driver: comparisons on the
sieve's threads) or ``async with sieve.call(...)`` (the async driver: comparisons as
asyncio tasks). What the target receives, what the gate is told and what the stats count
must be the same either way. The gate is a scripted one that records every report, so a
shadow slot that is never handed back (``record(key, ratio, None)``) shows.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from _sieve_helpers import ScriptedGate, WordDropCompressor, apply, long_text, shadow
from promptsieve import (
    Call,
    Message,
    Plan,
    Prompt,
    Request,
    Sieve,
    SieveConfig,
    TargetOutput,
    UnsupportedRequest,
    count_tokens,
)
from promptsieve.fidelity import Action, Decision

MODEL = "gpt-4o-mini"
DRIVERS = ("sync", "async")


def _req() -> Request:
    return Request((Message.text("system", "Be brief."), Message.text("user", long_text(3))), MODEL)


@dataclass
class Target:
    """A target that answers ``answer`` (or fails), recording what it was sent."""

    answer: str = "Paris"
    fail: bool = False
    block: threading.Event | None = None
    delay: float = 0.0
    seen: list[Prompt] = field(default_factory=list)

    def send(self, prompt: Prompt) -> TargetOutput:
        self.seen.append(prompt)
        time.sleep(self.delay)
        if self.block is not None:
            self.block.wait(10)
        if self.fail:
            raise ConnectionError("target down")
        return TargetOutput(self.answer)

    async def asend(self, prompt: Prompt) -> TargetOutput:
        self.seen.append(prompt)
        await asyncio.sleep(self.delay)
        if self.block is not None:
            await asyncio.to_thread(self.block.wait, 10)
        if self.fail:
            raise ConnectionError("target down")
        return TargetOutput(self.answer)


Live = Callable[[Prompt], TargetOutput | None]


def _identity(prompt: Prompt) -> Prompt:
    return prompt


def run(
    driver: str,
    sieve: Sieve,
    target: Target,
    *,
    live: Live | None = None,
    rebuild: Callable[[Prompt], Any] = _identity,
    comparable: bool = True,
    flush: bool = True,
) -> Call[Any]:
    """One request through ``sieve.call`` with the given driver; returns the call."""
    req = _req()
    live = live or (lambda payload: TargetOutput(target.answer))
    if driver == "sync":
        send: Any = target.send if comparable else None
        try:
            with sieve.call(
                req, "t", original=req.prompt, rebuild=rebuild, send_variant=send
            ) as call:
                call.observe(live(call.payload))
        finally:
            if flush:
                assert sieve.flush(5)
        return call

    async def go() -> Call[Any]:
        asend: Any = target.asend if comparable else None
        try:
            async with sieve.call(
                req, "t", original=req.prompt, rebuild=rebuild, send_variant=asend
            ) as call:
                call.observe(live(call.payload))
        finally:  # the loop stays up until the comparison task is done
            if flush:
                assert await sieve.aflush(5)
        return call

    return asyncio.run(go())


def _sieve(decision: Decision, **kw: Any) -> tuple[Sieve, ScriptedGate]:
    gate = ScriptedGate(decision)
    comp = kw.pop("compressor", None) or WordDropCompressor()
    cfg = SieveConfig(**{"guard": False, **kw})
    return Sieve(cfg, compressor=comp, gate=gate), gate


def _slots(gate: ScriptedGate) -> list[bool | None]:
    return [agreed for _key, _ratio, agreed in gate.records]


# -- scenarios -------------------------------------------------------------------------------
@pytest.mark.parametrize("driver", DRIVERS)
def test_bypass_sends_the_original_and_reports_nothing(driver: str) -> None:
    sieve, gate = _sieve(Decision(Action.BYPASS))
    target = Target()
    call = run(driver, sieve, target)
    assert call.plan.reason == "bypass" and call.payload == _req().prompt
    assert target.seen == [] and gate.records == []
    assert sieve.stats.requests == 1 and sieve.stats.decisions["bypass"] == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_shadow_compares_the_compressed_variant(driver: str) -> None:
    sieve, gate = _sieve(shadow(0.5))
    target = Target()
    call = run(driver, sieve, target)
    assert call.plan.reason == "shadow" and call.payload == _req().prompt
    assert len(target.seen) == 1 and target.seen[0] != _req().prompt  # the compressed one
    assert _slots(gate) == [True]
    s = sieve.stats
    assert (s.comparisons, s.agreements, s.screening_calls) == (1, 1, 1)


@pytest.mark.parametrize("driver", DRIVERS)
def test_shadow_slot_is_freed_when_the_background_compression_fails(driver: str) -> None:
    """#13.1: the sync twin kept the slot taken (600 s against the screening budget)."""
    sieve, gate = _sieve(shadow(0.5), compressor=WordDropCompressor(fail=True))
    target = Target()
    run(driver, sieve, target)
    assert target.seen == []
    assert _slots(gate) == [None]  # the slot was handed back, once
    assert sieve.stats.errors == 1 and sieve.stats.comparisons == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_shadow_target_failure_frees_the_slot_and_is_counted(driver: str) -> None:
    sieve, gate = _sieve(shadow(0.5))
    target = Target(fail=True)
    run(driver, sieve, target, live=lambda p: TargetOutput("Paris"))
    assert len(target.seen) == 1 and _slots(gate) == [None]
    assert sieve.stats.comparison_errors == 1 and sieve.stats.comparisons == 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_shadow_refused_by_the_guard_spends_no_target_call(driver: str) -> None:
    sieve, gate = _sieve(
        shadow(0.5), guard=True, guard_threshold=0.9,
        compressor=WordDropCompressor(similarity_value=0.1),
    )  # fmt: skip
    target = Target()
    run(driver, sieve, target)
    assert target.seen == [] and _slots(gate) == [None]
    assert sieve.stats.guard_skips == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_apply_with_monitor_sends_the_original_in_the_background(driver: str) -> None:
    sieve, gate = _sieve(apply(0.5, monitor=True))
    target = Target()
    call = run(driver, sieve, target)
    assert call.plan.reason == "applied" and call.payload != _req().prompt
    assert call.payload == call.plan.compressed
    assert target.seen == [_req().prompt] and _slots(gate) == [True]
    assert sieve.stats.compressed == 1 and sieve.stats.tokens_saved > 0


@pytest.mark.parametrize("driver", DRIVERS)
def test_rebuild_failure_reverts_and_never_compares_original_with_itself(driver: str) -> None:
    """#13.2: a plan left "applied" made a later monitor record "agreed" for identical
    prompts, silently corrupting the verdict."""

    def rebuild(prompt: Prompt) -> Any:
        raise UnsupportedRequest("does not fit")

    sieve, gate = _sieve(apply(0.5, monitor=True))
    target = Target()
    call = run(driver, sieve, target, rebuild=rebuild)
    assert call.payload == _req().prompt and call.plan.reason == "error"
    assert not call.plan.is_compressed and call.plan.comparison is None
    assert target.seen == [] and gate.records == []
    s = sieve.stats
    assert (s.compressed, s.errors, s.tokens_saved) == (0, 1, 0)


@pytest.mark.parametrize("driver", DRIVERS)
def test_scoring_timeout_sends_the_original(driver: str) -> None:
    slow = WordDropCompressor(delay=2.0)
    sieve, _gate = _sieve(apply(0.5), scoring_budget_ms=30, compressor=slow)
    count_tokens("warm", MODEL)  # the tokenizer's first load is not what this times
    t0 = time.perf_counter()
    call = run(driver, sieve, Target())
    assert time.perf_counter() - t0 < 1.0  # about the budget, not the 2 s of scoring
    assert call.plan.reason == "timeout" and call.payload == _req().prompt
    assert sieve.stats.timeouts == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_live_failure_frees_the_slot_and_reaches_the_caller(driver: str) -> None:
    sieve, gate = _sieve(shadow(0.5))
    target = Target()

    def live(payload: Prompt) -> TargetOutput:
        raise TimeoutError("the live call failed")

    with pytest.raises(TimeoutError, match="live call failed"):
        run(driver, sieve, target, live=live)
    assert target.seen == [] and _slots(gate) == [None]


@pytest.mark.parametrize("driver", DRIVERS)
def test_stream_closed_early_compares_both_variants(driver: str) -> None:
    sieve, gate = _sieve(shadow(0.5))
    target = Target()

    def live(payload: Prompt) -> TargetOutput:
        raise GeneratorExit  # the caller stopped reading the stream

    with pytest.raises(GeneratorExit):
        run(driver, sieve, target, live=live)
    assert len(target.seen) == 2 and target.seen[0] == _req().prompt
    assert _slots(gate) == [True]


@pytest.mark.parametrize("driver", DRIVERS)
def test_unreadable_live_output_compares_both_variants(driver: str) -> None:
    sieve, gate = _sieve(shadow(0.5))
    target = Target()
    run(driver, sieve, target, live=lambda p: None)
    assert len(target.seen) == 2 and _slots(gate) == [True]


@pytest.mark.parametrize("driver", DRIVERS)
def test_no_sender_frees_the_slot(driver: str) -> None:
    sieve, gate = _sieve(shadow(0.5))
    target = Target()
    run(driver, sieve, target, comparable=False)
    assert target.seen == [] and _slots(gate) == [None]


@pytest.mark.parametrize("driver", DRIVERS)
def test_full_queue_skips_and_frees_the_slot(driver: str) -> None:
    sieve, gate = _sieve(shadow(0.5), max_pending=1, backpressure="skip")
    target = Target(block=threading.Event())
    if driver == "sync":
        run(driver, sieve, target, flush=False)
        run(driver, sieve, target, flush=False)
        target.block.set()  # type: ignore[union-attr]
        assert sieve.flush(5)
    else:

        async def two() -> None:
            req = _req()
            for _ in range(2):
                async with sieve.call(
                    req, "t", original=req.prompt, rebuild=_identity, send_variant=target.asend
                ) as call:
                    call.observe(TargetOutput("Paris"))
            target.block.set()  # type: ignore[union-attr]
            assert await sieve.aflush(5)

        asyncio.run(two())
    assert sieve.stats.comparisons_skipped == 1
    assert sorted(_slots(gate), key=str) == [None, True]


@pytest.mark.parametrize("driver", DRIVERS)
def test_backpressure_wait_paces_the_caller_and_skips_nothing(driver: str) -> None:
    """#14.3: with every slot taken, the live call waits for one instead of skipping."""
    sieve, gate = _sieve(shadow(0.5), max_pending=1, backpressure_wait_ms=5000)
    target = Target(delay=0.2)
    t0 = time.perf_counter()
    if driver == "sync":
        for _ in range(3):
            run(driver, sieve, target, flush=False)
        waited = time.perf_counter() - t0
        assert sieve.flush(5)
    else:

        async def three() -> float:
            req = _req()
            for _ in range(3):
                async with sieve.call(
                    req, "t", original=req.prompt, rebuild=_identity, send_variant=target.asend
                ) as call:
                    call.observe(TargetOutput("Paris"))
            waited = time.perf_counter() - t0
            assert await sieve.aflush(5)
            return waited

        waited = asyncio.run(three())
    assert sieve.stats.comparisons_skipped == 0 and _slots(gate) == [True, True, True]
    assert waited >= 0.35  # the 2nd and 3rd calls each waited for the one before


@pytest.mark.parametrize("driver", DRIVERS)
def test_backpressure_wait_is_bounded_then_skips(driver: str) -> None:
    sieve, gate = _sieve(shadow(0.5), max_pending=1, backpressure_wait_ms=50)
    target = Target(block=threading.Event())
    if driver == "sync":
        run(driver, sieve, target, flush=False)
        t0 = time.perf_counter()
        run(driver, sieve, target, flush=False)
        waited = time.perf_counter() - t0
        target.block.set()  # type: ignore[union-attr]
        assert sieve.flush(5)
    else:

        async def two() -> float:
            req = _req()
            t0 = 0.0
            for _ in range(2):
                t0 = time.perf_counter()
                async with sieve.call(
                    req, "t", original=req.prompt, rebuild=_identity, send_variant=target.asend
                ) as call:
                    call.observe(TargetOutput("Paris"))
            waited = time.perf_counter() - t0
            target.block.set()  # type: ignore[union-attr]
            assert await sieve.aflush(5)
            return waited

        waited = asyncio.run(two())
    assert 0.04 <= waited < 1.0
    assert sieve.stats.comparisons_skipped == 1
    assert sorted(_slots(gate), key=str) == [None, True]


@pytest.mark.parametrize("driver", DRIVERS)
def test_closed_sieve_sends_originals_and_starts_nothing(driver: str) -> None:
    sieve, gate = _sieve(apply(0.5, monitor=True))
    assert sieve.close() is True
    target = Target()
    call = run(driver, sieve, target)
    assert call.plan.reason == "closed" and call.payload == _req().prompt
    assert target.seen == [] and gate.keys == []


@pytest.mark.parametrize("driver", DRIVERS)
def test_close_abandons_what_does_not_drain_and_counts_it(driver: str) -> None:
    sieve, gate = _sieve(shadow(0.5))
    target = Target(block=threading.Event())
    if driver == "sync":
        run(driver, sieve, target, flush=False)
        t0 = time.perf_counter()
        assert sieve.close(timeout=0.2) is False
    else:

        async def go() -> tuple[bool, float]:
            req = _req()
            async with sieve.call(
                req, "t", original=req.prompt, rebuild=_identity, send_variant=target.asend
            ) as call:
                call.observe(TargetOutput("Paris"))
            t0 = time.perf_counter()
            closed = await sieve.aclose(timeout=0.2)
            target.block.set()  # type: ignore[union-attr]  # lets asyncio.run's executor end
            return closed, time.perf_counter() - t0

        closed, took = asyncio.run(go())
        assert closed is False and took < 2.0
    if driver == "sync":
        assert time.perf_counter() - t0 < 2.0  # bounded by the drain timeout
    assert sieve.stats.comparisons_abandoned == 1 and _slots(gate) == [None]
    target.block.set()  # type: ignore[union-attr]
    time.sleep(0.1)
    assert _slots(gate) == [None] and sieve.stats.comparisons == 0  # settled once only


@pytest.mark.parametrize("driver", DRIVERS)
def test_context_manager_closes(driver: str) -> None:
    sieve, _gate = _sieve(Decision(Action.BYPASS))
    if driver == "sync":
        with sieve as s:
            assert s is sieve and not sieve.closed
    else:

        async def go() -> None:
            async with sieve as s:
                assert s is sieve

        asyncio.run(go())
    assert sieve.closed


@pytest.mark.parametrize("driver", DRIVERS)
def test_deferred_live_output_finishes_once(driver: str) -> None:
    """A stream read after the block: the comparison starts when it has been read."""
    sieve, gate = _sieve(shadow(0.5))
    target = Target()
    req = _req()
    if driver == "sync":
        with sieve.call(
            req, "t", original=req.prompt, rebuild=_identity, send_variant=target.send
        ) as call:
            call.defer()
        assert target.seen == [] and gate.records == []  # nothing until it is read
        call.finish(TargetOutput("Paris"), 12)
        call.finish(None)  # once only
        call.drop()
        assert sieve.flush(5)
    else:

        async def go() -> None:
            async with sieve.call(
                req, "t", original=req.prompt, rebuild=_identity, send_variant=target.asend
            ) as call:
                call.defer()
            assert target.seen == [] and gate.records == []
            await call.afinish(TargetOutput("Paris"), 12)
            await call.afinish(None)
            call.drop()
            assert await sieve.aflush(5)

        asyncio.run(go())
    assert len(target.seen) == 1 and _slots(gate) == [True]
    assert sieve.stats.usage_reports == 1 and sieve.stats.prompt_tokens_reported == 12


def test_deferred_output_never_read_frees_the_slot() -> None:
    sieve, gate = _sieve(shadow(0.5))
    req = _req()
    with sieve.call(req, "t", original=req.prompt, rebuild=_identity, send_variant=None) as call:
        call.defer()
    call.drop()
    call.drop()
    assert _slots(gate) == [None]


@pytest.mark.parametrize("driver", DRIVERS)
def test_queued_shadow_whose_verdict_moved_on_spends_nothing(driver: str, tmp_path: Path) -> None:
    """A shadow comparison still queued when the ratio stopped being under test (the verdict
    passed or failed meanwhile) costs neither a compression nor a target call."""
    from promptsieve import Gate, GateConfig, SQLiteStore, VerdictState

    gate = Gate(SQLiteStore(tmp_path / "v.db"), GateConfig(ratios=(0.5,), seed=0))
    comp = WordDropCompressor()
    sieve = Sieve(SieveConfig(guard=False), compressor=comp, gate=gate)
    target = Target()

    def move_on(payload: Prompt) -> TargetOutput:
        key = sieve.verdict_key("t", MODEL)
        v = gate.verdict(key)
        assert v is not None and v.state is VerdictState.SCREENING
        moved = v.replace(state=VerdictState.PASSED, ratio=0.5)
        assert gate.store.put(key, moved, expected_version=v.version)
        return TargetOutput("Paris")

    call = run(driver, sieve, target, live=move_on)
    assert call.plan.reason == "shadow"
    assert target.seen == [] and comp.calls == 0 and sieve.stats.comparisons == 0


def test_plan_reason_is_a_literal_and_prepare_returns_the_plan() -> None:
    import typing

    from promptsieve import Reason

    sieve, _gate = _sieve(apply(0.5))
    plan = sieve.prepare(_req())
    assert isinstance(plan, Plan) and plan.reason in typing.get_args(Reason)


class _NoiseGate(ScriptedGate):
    """A scripted gate that also takes noise-floor reports (as ``Gate.record_noise`` does)."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision)
        self.noise: list[bool | None] = []

    def record_noise(self, key: Any, agreed: bool | None) -> None:
        self.noise.append(agreed)


@pytest.mark.parametrize("driver", DRIVERS)
def test_noise_decision_compares_a_rewrite_and_never_feeds_the_test(driver: str) -> None:
    """A shadow decision sampled for the noise floor sends a meaning-preserving rewrite of
    the original (not a compression) and reports it with ``record_noise`` only."""
    from promptsieve.fidelity.noise import variant

    gate = _NoiseGate(Decision(Action.SHADOW, 0.5, noise=True))
    comp = WordDropCompressor()
    sieve = Sieve(SieveConfig(guard=False), compressor=comp, gate=gate)
    target = Target()
    run(driver, sieve, target)
    assert target.seen == [variant(_req().prompt)] and target.seen[0] != _req().prompt
    assert comp.calls == 0 and gate.records == [] and gate.noise == [True]
    s = sieve.stats
    assert (s.comparisons, s.noise_comparisons, s.noise_agreements) == (0, 1, 1)


@pytest.mark.parametrize("driver", DRIVERS)
def test_labelled_mode_reports_the_judge_labels_to_the_gate(driver: str, tmp_path: Path) -> None:
    """Live labelled mode: each shadow comparison's two answers are labelled by the user's
    judge and go to ``Gate.record_pair`` (a judge that raises is not counted)."""
    from promptsieve import ConfigError, Gate, GateConfig, SQLiteStore

    cfg = GateConfig(mode="labelled", ratios=(0.5,), seed=0)
    gate = Gate(SQLiteStore(tmp_path / "v.db"), cfg)
    with pytest.raises(ConfigError, match="judge"):
        Sieve(SieveConfig(guard=False), compressor=WordDropCompressor(), gate=gate)
    with pytest.raises(ConfigError, match="judge"):
        SieveConfig(gate=cfg)
    # and the converse: a judge with a gate in agreement mode, which would never read it
    agreement = Gate(SQLiteStore(tmp_path / "a.db"), GateConfig(ratios=(0.5,)))
    for make in (
        lambda: SieveConfig(judge=bool, gate=GateConfig()),
        lambda: Sieve(SieveConfig(judge=bool), compressor=WordDropCompressor()),
        lambda: Sieve(SieveConfig(judge=bool), compressor=WordDropCompressor(), gate=agreement),
    ):
        with pytest.raises(ConfigError, match=r"pass GateConfig\(mode='labelled'\)"):
            make()
    raised = []

    def judge(request: Request, output: TargetOutput) -> bool:
        assert request.model == MODEL
        if len(raised) == 0 and output.text == "Lyon":
            raised.append(1)
            raise TimeoutError("judge model down")
        return output.text == "Paris"

    sieve = Sieve(SieveConfig(guard=False, judge=judge), compressor=WordDropCompressor(), gate=gate)

    # the live (original) answer is right; the compressed one is wrong on the first two calls
    def right(payload: Prompt) -> TargetOutput:
        return TargetOutput("Paris")

    run(driver, sieve, Target(answer="Lyon"), live=right)  # judge raises: not counted
    run(driver, sieve, Target(answer="Lyon"), live=right)  # a loss
    run(driver, sieve, Target(answer="Paris"), live=right)  # both right
    v = gate.verdict(sieve.verdict_key("t", MODEL))
    assert v is not None
    pairs = v.pairs_at(0.5)
    assert (pairs.both, pairs.original_only, pairs.compressed_only) == (1, 1, 0)
    assert v.counts_at(0.5).n == 0  # agreement results are not what labelled mode tests
    assert sieve.stats.judge_errors == 1 and sieve.stats.comparisons == 3
