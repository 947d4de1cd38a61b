"""Offline screening: run the ratio ladder's sequential tests on a file of real requests.

``screen(task, samples, target)`` sends each sample (an OpenAI request body) to the target
once as is and once compressed per ratio, and feeds each pair to the rung's test. The ladder
runs in the given order (conservative → aggressive) on the SAME samples in the same order.
In fixed sequence the last rung that passes before the first that does not is the verdict;
with ``ladder_test="bonferroni"`` every rung runs at δ/K and the smallest ratio that passed
is. Original outputs (and, in labelled mode, their labels) are cached, so each sample's
original costs one call however many ratios are tried.

Two modes (``ScreenConfig.mode``):

* ``"agreement"``: the compressed answer must match the original one under the metric;
  H0: agreement ≤ τ (:class:`~promptsieve.fidelity.stats.SequentialTest`).
* ``"labelled"``: both answers are labelled correct or not, by the sample's gold answer or a
  user judge; H0: the compressed accuracy is worse than the original's by more than the
  margin (:class:`~promptsieve.fidelity.labelled.NonInferiorityTest`).

A target error or timeout counts as neither agreement nor disagreement: the call is retried
once, then the sample is skipped (it still uses up one of the ratio's ``budget`` attempts, so
a dead target cannot make screening loop). A judge that raises or times out makes that pair
"not counted" (skipped), never "agreed" or "correct".

``noise_samples`` > 0 also measures the noise floor on that many samples first: each is sent
again as a meaning-preserving variant (:mod:`promptsieve.fidelity.noise`) and compared
with its original answer; a warning is logged when τ is above what the floor allows.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from promptsieve._config_types import check_field_types, check_wait
from promptsieve._errors import ConfigError, TargetError
from promptsieve.convert import from_openai
from promptsieve.fidelity._modal import (
    MODAL_MIN_ANSWERS,
    MODAL_WARN_SHARE,
    ModalAnswers,
    modal_warning,
)
from promptsieve.fidelity.agree import Embed, Metric, TargetOutput, auto_metric, get_metric
from promptsieve.fidelity.judge import TargetJudge
from promptsieve.fidelity.labelled import NonInferiorityTest, check_mode
from promptsieve.fidelity.ladder import LadderTest, check_budget, check_ladder
from promptsieve.fidelity.noise import (
    NoiseFloor,
    VariantKind,
    check_variant_kind,
    noise_floor,
    variant,
)
from promptsieve.fidelity.samples import body_problem, gold_problem, split_gold
from promptsieve.fidelity.stats import CURTAILED, Outcome, SequentialTest, TestState
from promptsieve.fidelity.store import Verdict, VerdictKey, VerdictState, VerdictStore
from promptsieve.fidelity.target import Target

__all__ = [
    "MODAL_MIN_ANSWERS",
    "MODAL_WARN_SHARE",
    "CompressFn",
    "Judge",
    "RatioResult",
    "ScreenConfig",
    "ScreenResult",
    "body_compressor",
    "gold_judge",
    "screen",
]

log = logging.getLogger(__name__)

CompressFn = Callable[[Mapping[str, Any], float], dict[str, Any]]  # (body, ratio) -> body'
#: Labelled mode: ``judge(sample, output) -> correct?``; ``sample`` is the whole JSONL
#: object (gold field included). It may call a model; raising means "not counted".
Judge = Callable[[Mapping[str, Any], TargetOutput], bool]


@dataclass(frozen=True)
class ScreenConfig:
    """Offline screening settings (see GateConfig for the same knobs online).

    ``budget``: samples tried per ratio (errors included). ``retries``: extra attempts per
    failed target call. ``metric``: as in :func:`get_metric`; None picks one per sample from
    the original output's shape (agreement) or the gold answer's shape (labelled).
    ``mode``/``epsilon``/``rho``: see :mod:`promptsieve.fidelity.labelled`.
    ``gold_field``: where labelled samples keep their answer. ``judge_timeout_s``: a judge
    slower than this is "not counted". ``noise_samples``/``noise_kind``: measure the noise
    floor on the first samples first. Wrong values raise ConfigError.

    ``ladder_test``: how the rungs share the error budget δ. ``"fixed_sequence"`` (the
    default) tests the rungs in the given order, each at δ, and stops at the first that does
    not pass. ``"bonferroni"`` tests every rung on the same samples at δ/K (K rungs) and
    applies the most aggressive one that passed: it costs up to K times the compressed
    calls, and reaches rungs that a neutral conservative rung would block (the live Gate
    has the same setting, ``GateConfig.ladder_test``). On the headline multi-document QA
    task labelled screening of the coarse-to-fine compressor passed 79 % of bootstrap runs
    this way against 31 % in fixed sequence (``benchmarks/screening_power.py``). Both bound
    the chance of applying a rung whose null holds by δ (the union bound; for the fixed
    sequence, Maurer et al. 1995 and Westfall & Krishen 2001). The verdict key carries the
    choice (a screening in progress must not switch procedure), so ``promptsieve screen
    --store`` seeds a Sieve whose GateConfig has the same ``ladder_test``.
    """

    tau: float = 0.9
    delta: float = 0.05
    budget: int = 100
    ratios: tuple[float, ...] = (0.8, 0.65, 0.5, 0.35)
    metric: str | Metric | None = None
    retries: int = 1
    mode: Literal["agreement", "labelled"] = "agreement"
    epsilon: float | None = None
    rho: float | None = None
    gold_field: str = "gold"
    judge_timeout_s: float = 60.0
    noise_samples: int = 0
    noise_kind: VariantKind = "auto"
    ladder_test: LadderTest = "fixed_sequence"

    def __post_init__(self) -> None:
        check_field_types(self)
        if not 0 < self.tau < 1 or not 0 < self.delta < 1:
            raise ConfigError(f"tau and delta must be in (0, 1), got {self.tau}, {self.delta}")
        if self.budget < 1:
            raise ConfigError(f"budget must be >= 1, got {self.budget}")
        check_ladder(self.ratios)
        if self.retries < 0:
            raise ConfigError(f"retries must be >= 0, got {self.retries}")
        check_mode(self.mode, self.epsilon, self.rho)
        check_budget(self)
        check_wait("judge_timeout_s", self.judge_timeout_s, zero_ok=False)
        if self.noise_samples < 0:
            raise ConfigError(f"noise_samples must be >= 0, got {self.noise_samples}")
        check_variant_kind(self.noise_kind, "noise_kind")
        if isinstance(self.metric, str):  # an unknown name raises ConfigError now, not mid-run
            get_metric(self.metric, embed=_name_check, judge=_name_check)


def _name_check(*_: Any) -> Any:  # stands in for embed/judge when only a name is checked
    raise AssertionError("never called")


@dataclass(frozen=True)
class RatioResult:
    """One rung of the ladder.

    ``agree``: agreements (agreement mode) or compressed-correct pairs (labelled);
    ``original_correct``: labelled mode only. ``lower``/``upper``: the test's anytime-valid
    bounds (agreement rate, or acc(c) - acc(o) / acc(c) - rho acc(o) in labelled mode).
    """

    ratio: float
    decision: Outcome
    reason: str
    n: int  # paired comparisons counted
    agree: int
    skipped: int  # samples skipped after target errors or judge failures
    lower: float
    upper: float
    e_value: float = 1.0
    original_correct: int | None = None


@dataclass(frozen=True)
class ScreenResult:
    """The verdict: ``passed`` with the ``ratio`` to apply, or ``failed`` (ratio None).

    ``e_value``: the value e-BH across tasks uses. In fixed sequence, the smallest e-value
    over the rungs that passed (the failed first rung's when none did); with
    ``ladder_test="bonferroni"``, the applied rung's e-value over K (the largest over K when
    none passed), which is again an e-value for the applied rung's null. ``calls`` counts
    every target call, judge calls included (``judge_calls`` of them). ``noise``: the
    measured floor, if asked. ``ladder_test``: see :class:`ScreenConfig`. ``modal_share``
    (agreement mode, at least :data:`MODAL_MIN_ANSWERS` original answers, a metric that is not
    a judge): the share of the original prompts whose answer matches the most common one under
    the task's metric; near 1 the target answers alike whatever the request, so agreement is
    high for free (:meth:`modal_warning`). None when not measured.
    """

    task: str
    verdict: VerdictState
    ratio: float | None
    lower: float | None  # bounds of the chosen ratio's test (or of the failed first ratio)
    upper: float | None
    calls: int  # target calls spent, retries included
    errors: int  # target calls that failed
    ratios: tuple[RatioResult, ...] = field(default_factory=tuple)
    mode: str = "agreement"
    e_value: float | None = None
    noise: NoiseFloor | None = None
    judge_calls: int = 0
    ladder_test: LadderTest = "fixed_sequence"
    modal_share: float | None = None
    original_answers: int = 0  # original answers that modal_share was measured on

    @property
    def passed(self) -> bool:
        return self.verdict is VerdictState.PASSED

    @property
    def measured(self) -> bool:
        """False when no paired comparison was counted (every target call failed, say):
        the result is then no evidence, and :func:`screen` stores no verdict."""
        return any(r.n > 0 for r in self.ratios)

    def modal_warning(self) -> str | None:
        """A warning when ``modal_share`` is at least :data:`MODAL_WARN_SHARE`, else None."""
        return modal_warning(
            self.modal_share,
            self.original_answers,
            "screen in labelled mode against gold answers",
        )

    def summary(self) -> str:
        bound = "n/a" if self.lower is None else f"[{self.lower:.3f}, {self.upper:.3f}]"
        ratio = "none" if self.ratio is None else f"{self.ratio:g}"
        what = "agreement" if self.mode == "agreement" else "accuracy difference"
        return (
            f"task {self.task!r}: {self.verdict.value}; ratio {ratio}; {what} bounds {bound}; "
            f"{self.calls} target calls ({self.errors} failed)"
        )


# -- compression of request bodies --------------------------------------------------------


def _endpoint(body: Mapping[str, Any]) -> str:
    return "chat" if "messages" in body else "completions"


def body_compressor(compressor: Any) -> CompressFn:
    """Adapt a ``promptsieve.Compressor`` to ``(body, ratio) -> compressed body``.

    Bodies go through the core converter (:mod:`promptsieve.convert`), the same one live
    traffic uses, so offline screening compresses exactly the parts live requests would.
    A body the converter passes through untouched comes back unchanged.
    """

    def compress(body: Mapping[str, Any], ratio: float) -> dict[str, Any]:
        conv = from_openai(_endpoint(body), {"model": "screen", **body})
        if conv is None:
            return copy.deepcopy(dict(body))
        prompt = compressor.compress(conv.request.prompt, ratio=ratio).prompt
        new = dict(conv.rebuild(prompt))
        if "model" not in body:
            new.pop("model", None)
        return new

    return compress


def _variant_body(body: Mapping[str, Any], kind: VariantKind, seed: int) -> dict[str, Any] | None:
    """A meaning-preserving variant of a request body, or None when it would not differ."""
    conv = from_openai(_endpoint(body), {"model": "screen", **body})
    if conv is None:
        return None
    changed = variant(conv.request.prompt, kind, seed=seed)
    if changed == conv.request.prompt:
        return None
    new = dict(conv.rebuild(changed))
    if "model" not in body:
        new.pop("model", None)
    return new


# -- labels -------------------------------------------------------------------------------


def gold_judge(metric: str | Metric | None = None, gold_field: str = "gold") -> Judge:
    """Judge a labelled sample by its gold answer(s).

    Correct when the output matches any acceptable answer under ``metric`` (default: the
    metric :func:`auto_metric` picks for the gold answer's shape: a letter → choice, a
    number → numeric, short text → SQuAD-style answer match). Raises ConfigError for an
    unknown metric; the judge raises KeyError for a sample without gold.
    """
    fixed = get_metric(metric) if not callable(metric) else metric

    def judge(sample: Mapping[str, Any], output: TargetOutput) -> bool:
        _, golds = split_gold(sample, gold_field)
        if not golds:
            raise KeyError(gold_field)
        for g in golds:
            gold = TargetOutput(g)
            if (fixed or auto_metric(gold))(gold, output):
                return True
        return False

    return judge


_NOT_COUNTED = object()


def _modal_share(run: _Run, judged: bool) -> tuple[float | None, int]:
    """(share of the original answers alike the most common one under the run's metric,
    answers counted): :class:`~promptsieve.fidelity._modal.ModalAnswers`; (None, n) in
    labelled mode or with a judge metric (``judged``: it would cost target calls)."""
    outs = [run.originals[i] for i in sorted(run.originals)]
    if run.cfg.mode != "agreement" or judged or len(outs) < MODAL_MIN_ANSWERS:
        return None, len(outs)
    answers = ModalAnswers()
    for out in outs:
        answers.add(out, lambda a, b: (run.metric or auto_metric(a))(a, b))
    return answers.share, answers.n


def _judged(judge: Judge, sample: Mapping[str, Any], out: TargetOutput, timeout_s: float) -> Any:
    """``judge(sample, out)`` in a daemon thread; ``_NOT_COUNTED`` on error or time-out."""
    box: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

    def run() -> None:
        try:
            box.put((True, bool(judge(sample, out))))
        except BaseException as exc:
            box.put((False, exc))

    threading.Thread(target=run, name="promptsieve-judge", daemon=True).start()
    try:
        ok, value = box.get(timeout=timeout_s)
    except queue.Empty:
        log.info("judge timed out after %.1f s: not counted", timeout_s)
        return _NOT_COUNTED
    if not ok:
        log.info("judge failed (%s): not counted", type(value).__name__)
        return _NOT_COUNTED
    return value


# -- screening ----------------------------------------------------------------------------


class _Caller:
    """Target calls with retries, counting what they cost."""

    def __init__(self, target: Target, retries: int) -> None:
        self.target, self.retries = target, retries
        self.calls = self.errors = 0

    def __call__(self, body: Mapping[str, Any]) -> TargetOutput | None:
        for attempt in range(self.retries + 1):
            self.calls += 1
            try:
                return self.target.complete(body)
            except TargetError as exc:
                self.errors += 1
                log.info("target call failed (attempt %d): %s", attempt + 1, exc)
        return None


@dataclass
class _Run:
    """What one screening run shares across rungs."""

    cfg: ScreenConfig
    samples: list[dict[str, Any]]
    bodies: list[dict[str, Any]]
    call: _Caller
    compress: CompressFn
    metric: Metric | None
    judge: Judge | None
    originals: dict[int, TargetOutput] = field(default_factory=dict)
    original_labels: dict[int, Any] = field(default_factory=dict)

    def original(self, i: int) -> TargetOutput | None:
        out = self.originals.get(i)
        if out is None:
            out = self.call(self.bodies[i])
            if out is not None:
                self.originals[i] = out
        return out

    def compressed(self, i: int, ratio: float) -> TargetOutput | None:
        """The target's answer to sample ``i`` compressed at ``ratio``; None when the
        compressor or the target failed (the sample is then skipped, not counted)."""
        try:
            body = self.compress(self.bodies[i], ratio)
        except Exception as exc:
            log.warning("sample %d: compression failed (%s); skipped", i, type(exc).__name__)
            return None
        return self.call(body)

    def label(self, i: int, out: TargetOutput) -> Any:
        assert self.judge is not None
        return _judged(self.judge, self.samples[i], out, self.cfg.judge_timeout_s)


def screen(
    task: str,
    samples: Iterable[Mapping[str, Any]],
    target: Target,
    config: ScreenConfig | None = None,
    *,
    compress: CompressFn | None = None,
    embed: Embed | None = None,
    judge: Judge | None = None,
    judge_metric: Metric | None = None,
    store: VerdictStore | None = None,
    key: VerdictKey | None = None,
    ttl: float = 7 * 24 * 3600.0,
) -> ScreenResult:
    """Screen ``task`` offline and return the verdict.

    ``compress`` rewrites a body at a ratio (default: a ``promptsieve.Compressor``).
    ``judge``: labelled mode's labeller (default: :func:`gold_judge` on the samples' gold
    field, which then must be on every sample). ``judge_metric``: the metric behind
    ``metric="judge"`` (a :class:`~promptsieve.fidelity.judge.TargetJudge`; its calls are
    added to ``calls``). ``store`` + ``key``: also write the verdict (with its e-value and the
    noise-floor counts) where a Gate will find it, unless no comparison was counted
    (:attr:`ScreenResult.measured`). Raises ConfigError on bad samples or settings, or
    when the samples are too few for any rung to pass (``check_budget``), StoreError when
    the store is down (it is read once before the first target call, so a down store
    costs no calls).
    """
    cfg = config or ScreenConfig()
    raw = [dict(s) for s in samples]
    if not raw:
        raise ConfigError("screen() needs at least one sample")
    labelled = cfg.mode == "labelled"
    for i, sample in enumerate(raw):
        problem = body_problem(sample)
        if problem is None and labelled and judge is None:
            problem = gold_problem(sample, cfg.gold_field)
        if problem:
            raise ConfigError(f"sample {i}: {problem}")
    check_budget(cfg, samples=len(raw))  # fewer samples than the budget: can a rung pass?
    metric = get_metric(cfg.metric, embed=embed, judge=judge_metric)
    if labelled and judge is None:
        judge = gold_judge(metric, cfg.gold_field)  # the resolved metric ("judge" included)
    if store is not None:
        if key is None:
            raise ConfigError("screen(store=...) also needs the verdict key")
        store.get(key)  # a store that is down raises StoreError here, before any target call
    if compress is None:
        compress = _default_compress()
    bodies = [split_gold(s, cfg.gold_field if labelled else None)[0] for s in raw]
    run = _Run(cfg, raw, bodies, _Caller(target, cfg.retries), compress, metric, judge)
    judge_before = int(getattr(judge_metric, "calls", 0))
    noise = _measure_noise(run) if cfg.noise_samples else None
    if noise is not None and noise.tau_above_floor and not labelled:
        log.warning("task %r: %s", task, noise.warning())
    best, rungs, e_value = _ladder(task, run)
    shown = best if best is not None else rungs[0]
    judge_calls = int(getattr(judge_metric, "calls", 0)) - judge_before
    judged = isinstance(metric, TargetJudge) or (
        judge_metric is not None and metric is judge_metric
    )
    modal_share, answers = _modal_share(run, judged)
    result = ScreenResult(
        task=task,
        verdict=VerdictState.PASSED if best is not None else VerdictState.FAILED,
        ratio=best.ratio if best is not None else None,
        lower=shown.lower,
        upper=shown.upper,
        calls=run.call.calls + judge_calls,
        errors=run.call.errors,
        ratios=tuple(rungs),
        mode=cfg.mode,
        e_value=e_value,
        noise=noise,
        judge_calls=judge_calls,
        ladder_test=cfg.ladder_test,
        modal_share=modal_share,
        original_answers=answers,
    )
    if (warning := result.modal_warning()) is not None:
        log.warning("task %r: %s", task, warning)
    if store is not None and key is not None:
        if result.measured:
            _save(store, key, result, ttl)
        else:
            log.warning(
                "screening %s counted no comparison (%d of %d target calls failed): no verdict "
                "stored",
                task,
                result.errors,
                result.calls,
            )
    return result


def _ladder(task: str, run: _Run) -> tuple[RatioResult | None, list[RatioResult], float]:
    """Run the rungs under ``cfg.ladder_test``: (the rung to apply or None, every rung
    tried, the verdict's e-value; see :class:`ScreenResult`)."""
    cfg = run.cfg
    bonferroni = cfg.ladder_test == "bonferroni"
    k = len(cfg.ratios)
    delta = cfg.delta / k if bonferroni else cfg.delta
    rungs: list[RatioResult] = []
    for ratio in cfg.ratios:
        if cfg.mode == "labelled":
            rung = _labelled_ratio(ratio, run, delta)
        else:
            rung = _agreement_ratio(ratio, run, delta)
        rungs.append(rung)
        log.info("task %r: ratio %s %s after %d pairs", task, ratio, rung.decision.value, rung.n)
        if rung.decision is not Outcome.PASS and not bonferroni:
            break
    passed = [r for r in rungs if r.decision is Outcome.PASS]
    if bonferroni:
        best = min(passed, key=lambda r: r.ratio, default=None)
        e_value = (best.e_value if best is not None else max(r.e_value for r in rungs)) / k
        return best, rungs, e_value
    if not passed:
        return None, rungs, rungs[0].e_value
    return passed[-1], rungs, min(r.e_value for r in passed)


def _measure_noise(run: _Run) -> NoiseFloor:
    agree = n = 0
    for i, body in enumerate(run.bodies[: run.cfg.noise_samples]):
        other_body = _variant_body(body, run.cfg.noise_kind, seed=i)
        if other_body is None:
            continue
        original = run.original(i)
        other = run.call(other_body) if original is not None else None
        if original is None or other is None:
            continue
        try:
            agreed = (run.metric or auto_metric(original))(original, other)
        except Exception as exc:
            log.info("noise-floor comparison not counted (%s)", type(exc).__name__)
            continue
        n += 1
        agree += bool(agreed)
    tau = run.cfg.tau if run.cfg.mode == "agreement" else None
    return noise_floor(agree, n, tau=tau)


def _agreement_ratio(ratio: float, run: _Run, delta: float) -> RatioResult:
    cfg = run.cfg
    attempts = min(cfg.budget, len(run.bodies))  # the test stops when no pass is left in them
    test = SequentialTest(cfg.tau, delta, attempts)
    state = test.state
    skipped = 0
    for i in range(attempts):
        if state.decision is not Outcome.CONTINUE:  # passed, failed, or no pass left
            break
        if not test.can_pass(test.successes, test.n - test.successes, left=attempts - i):
            state = _curtailed(state)  # skipped samples used up attempts too
            break
        original = run.original(i)
        compressed = run.compressed(i, ratio) if original is not None else None
        if original is None or compressed is None:
            skipped += 1
            continue
        try:
            agreed = (run.metric or auto_metric(original))(original, compressed)
        except Exception as exc:  # a judge metric that failed: not counted
            log.info("comparison not counted (%s)", type(exc).__name__)
            skipped += 1
            continue
        state = test.update(agreed)
    return _rung(ratio, state, skipped, len(run.bodies) >= cfg.budget)


def _labelled_ratio(ratio: float, run: _Run, delta: float) -> RatioResult:
    cfg = run.cfg
    attempts = min(cfg.budget, len(run.bodies))
    test = NonInferiorityTest(delta, attempts, epsilon=cfg.epsilon, rho=cfg.rho)
    state = test.state
    skipped = 0
    for i in range(attempts):
        if state.decision is not Outcome.CONTINUE:  # passed, failed, or no pass left
            break
        if not test.can_pass(test.pairs.cells, attempts - i):
            state = _curtailed(state)  # skipped samples used up attempts too
            break
        original = run.original(i)
        if original is None:
            skipped += 1
            continue
        if i not in run.original_labels:
            run.original_labels[i] = run.label(i, original)
        o_label = run.original_labels[i]
        compressed = run.compressed(i, ratio) if o_label is not _NOT_COUNTED else None
        c_label = run.label(i, compressed) if compressed is not None else _NOT_COUNTED
        if o_label is _NOT_COUNTED or c_label is _NOT_COUNTED:
            skipped += 1
            continue
        state = test.update(bool(o_label), bool(c_label))
    return _rung(ratio, state, skipped, len(run.bodies) >= cfg.budget, test.pairs.original_correct)


def _curtailed(state: TestState) -> TestState:
    return dataclasses.replace(state, decision=Outcome.FAIL, reason=CURTAILED)


def _rung(
    ratio: float, state: TestState, skipped: int, full: bool, original: int | None = None
) -> RatioResult:
    decision, reason = state.decision, state.reason
    if decision is Outcome.CONTINUE:  # ran out of samples or attempts before deciding
        decision = Outcome.FAIL
        reason = "budget" if full else "samples exhausted"
    elif not full and reason in ("budget", CURTAILED):  # the test's budget was the samples
        reason = "samples exhausted" if reason == "budget" else "cannot pass with the samples left"
    return RatioResult(
        ratio,
        decision,
        reason,
        state.n,
        state.successes,
        skipped,
        state.lower,
        state.upper,
        state.e_value,
        original,
    )


def _save(store: VerdictStore, key: VerdictKey, result: ScreenResult, ttl: float) -> None:
    now = time.time()
    old = store.get(key)
    verdict = Verdict(
        state=result.verdict,
        ratio=result.ratio,
        testing=result.ratio,
        lower=result.lower,
        upper=result.upper,
        created_at=now,
        updated_at=now,
        expires_at=now + ttl,
        generation=(old.generation + 1) if old is not None else 1,
        e_value=result.e_value,
        reason="offline screen"
        + (" (every rung at delta/K)" if result.ladder_test == "bonferroni" else ""),
    )
    if not store.put(key, verdict, expected_version=None if old is None else old.version):
        log.warning("task %r: verdict changed concurrently; offline result not saved", key.task)
        return
    if result.noise is not None:  # the gate shows the floor measured offline
        for i in range(result.noise.n):
            store.record_noise(key, verdict.generation, i < result.noise.agree)


def _default_compress() -> CompressFn:
    try:
        from promptsieve.compressor import Compressor
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"the default compressor is unavailable ({exc}); pass compress=") from exc
    return body_compressor(Compressor())


def run_cli(*args: Any, **kwargs: Any) -> int:
    """``promptsieve screen`` (kept here for callers of the old path; see ``_screen_cli``)."""
    from promptsieve.fidelity._screen_cli import run_cli as run

    return run(*args, **kwargs)
