"""``promptsieve screen``: offline screening from the command line (registered by ``cli``)."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from promptsieve._errors import ConfigError, StoreError, TargetError
from promptsieve.fidelity._sqlite_store import (
    check_sqlite_file,
    check_store_location,
    is_redis_url,
)
from promptsieve.fidelity.agree import TargetOutput, get_metric
from promptsieve.fidelity.gate import GateConfig
from promptsieve.fidelity.judge import TargetJudge, target_judge
from promptsieve.fidelity.keys import verdict_key
from promptsieve.fidelity.ladder import LADDER_TESTS
from promptsieve.fidelity.samples import load_samples
from promptsieve.fidelity.screen import (
    CompressFn,
    Judge,
    ScreenConfig,
    ScreenResult,
    body_compressor,
    screen,
)
from promptsieve.fidelity.store import RedisStore, SQLiteStore, VerdictKey, VerdictStore
from promptsieve.fidelity.target import HTTPTarget, prompt_body

__all__ = ["run_cli", "screen_command"]

_JUDGE_MAX_TOKENS = 3


def _screening_compressor() -> tuple[CompressFn, str]:
    """The compressor the CLI screens with (the SDK's default) and its fingerprint."""
    from promptsieve.compressor import Compressor

    comp = Compressor()
    return body_compressor(comp), comp.fingerprint


def _load_judge(spec: str) -> Judge:
    """``module:function`` -> the user's judge callable (ConfigError when it is not one)."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ConfigError(f"--judge must be 'module:function', got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except Exception as exc:  # the user's module: a syntax error, a relative name, ...
        raise ConfigError(f"cannot load judge {spec!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(fn):
        raise ConfigError(f"judge {spec!r} is not callable")
    return fn


def run_cli(
    task: str,
    samples: str | Path,
    base_url: str,
    model: str,
    *,
    tau: float = 0.9,
    delta: float = 0.05,
    budget: int = 100,
    ratios: str = "0.8,0.65,0.5,0.35",
    metric: str | None = None,
    temperature: float | None = 0.0,
    timeout: float = 60.0,
    as_json: bool = False,
    store: str | None = None,
    mode: str = "agreement",
    epsilon: float | None = None,
    rho: float | None = None,
    gold_field: str = "gold",
    judge: str | None = None,
    noise: int = 0,
    ladder_test: str = "fixed_sequence",
    echo: Callable[..., Any] = print,
) -> int:
    """``promptsieve screen``: 0 = passed, 1 = failed, 2 = bad input.

    ``store``: also save the verdict (a SQLite path, ``default`` for the SDK's default file,
    or a ``redis://`` URL) under the key a ``Sieve`` with the same metric, τ, δ, ladder and
    mode looks up, so live traffic starts from the offline verdict. ``mode="labelled"``
    reads each line's ``gold_field`` (or labels with ``judge``, ``module:function``).
    ``metric="judge"`` asks the target whether two answers agree (calls counted).
    ``ladder_test``: ``fixed_sequence`` or ``bonferroni`` (see ``ScreenConfig``).
    """
    for flag, value, allowed in (
        ("--mode", mode, ("agreement", "labelled")),
        ("--ladder-test", ladder_test, LADDER_TESTS),
    ):
        if value.replace("-", "_") not in allowed:
            shown = " or ".join(a.replace("_", "-") for a in allowed)
            echo(f"Error: {flag} must be {shown}, got {value!r}", err=True)
            return 2
    try:
        ladder = tuple(float(r) for r in ratios.split(",") if r.strip())
    except ValueError:
        echo(f"Error: --ratios must be comma-separated numbers, got {ratios!r}", err=True)
        return 2
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        echo(f"Error: --temperature must be a finite number >= 0, got {temperature}", err=True)
        return 2
    overrides = {} if temperature is None else {"temperature": temperature}
    with contextlib.ExitStack() as closing:  # the target and the verdict store, on every way out
        try:
            cfg = ScreenConfig(
                tau=tau,
                delta=delta,
                budget=budget,
                ratios=ladder,
                metric=metric,
                mode=mode,  # type: ignore[arg-type]
                epsilon=epsilon,
                rho=rho,
                gold_field=gold_field,
                noise_samples=noise,
                ladder_test=ladder_test.replace("-", "_"),  # type: ignore[arg-type]
            )
            gate = GateConfig(
                tau=tau, delta=delta, budget=budget, ratios=ladder, mode=cfg.mode,
                epsilon=epsilon, rho=rho, ladder_test=cfg.ladder_test,
            )  # fmt: skip
            try:
                target = closing.enter_context(
                    HTTPTarget(base_url, model, timeout=timeout, overrides=overrides)
                )
            except ConfigError as exc:
                raise ConfigError(f"check --base-url, --model and --timeout: {exc}") from None
            user_judge = _load_judge(judge) if judge else None
            get_metric(metric, judge=_validating)  # unknown names fail before any call
            labelled = cfg.mode == "labelled"
            bodies = load_samples(
                samples, gold_field=gold_field if labelled and not judge else None
            )
            opened: VerdictStore | None = None
            if store is not None:
                _check_store(store)  # before the proxy loads; nothing created yet
                if is_redis_url(store):  # a Redis store that is down: found before the proxy loads
                    opened = closing.enter_context(contextlib.closing(RedisStore(store)))
                    opened.get(verdict_key(task, model, "probe", gate, metric=metric))
            compress, fingerprint = _screening_compressor()
            saved: tuple[VerdictStore | None, VerdictKey | None] = (None, None)
            if store is not None:
                key = verdict_key(task, model, fingerprint, gate, metric=metric)
                if opened is None:  # a SQLite file is created only once the proxy has loaded
                    opened = closing.enter_context(contextlib.closing(_open_store(store)))
                saved = (opened, key)
        except (ConfigError, StoreError) as exc:
            echo(f"Error: {exc}", err=True)
            return 2
        watched = _Watched(target)
        judge_metric: TargetJudge | None = None
        if metric == "judge":

            def ask(prompt: Any) -> Any:
                return watched.complete(prompt_body(prompt, _JUDGE_MAX_TOKENS))

            judge_metric = target_judge(ask)
        try:
            with _no_fallback_log():  # the warnings are printed below, once
                result = screen(
                    task,
                    bodies,
                    watched,
                    cfg,
                    compress=compress,
                    judge=user_judge,
                    judge_metric=judge_metric,
                    store=saved[0],
                    key=saved[1],
                )
        except (ConfigError, StoreError) as exc:
            echo(f"Error: {exc}", err=True)
            return 2
        if as_json:
            echo(json.dumps(report(result), indent=2))
        else:
            _print(result, cfg, echo)
            if saved[1] is not None and result.measured:
                echo(f"verdict saved for task {task!r}, model {model!r} in {store}")
            elif saved[1] is not None:
                echo(f"no verdict saved: no comparison was counted; is {base_url} reachable?")
        for warning in _warnings(result):
            echo(f"warning: {warning}", err=True)
        hint = watched.hint(base_url)
        if hint:  # last, where it is seen: the report above only says "N failed"
            echo(f"Error: {hint}", err=True)
        return 0 if result.passed else 1


class _Watched:
    """The target, counting the calls that failed to connect at all (an unreachable
    ``--base-url``), so that the CLI can say so instead of only "N failed"."""

    def __init__(self, target: HTTPTarget) -> None:
        self.target, self.model = target, target.model
        self.calls = self.unconnected = 0
        self.reason: str | None = None

    def complete(self, body: Mapping[str, Any]) -> TargetOutput:
        self.calls += 1
        try:
            return self.target.complete(body)
        except TargetError as exc:
            reason = _connect_failure(exc.__cause__)
            if reason is not None:
                self.unconnected += 1
                self.reason = reason
            raise

    def hint(self, base_url: str) -> str | None:
        """A line for when most calls (at least half) could not connect; None otherwise."""
        if not self.unconnected or 2 * self.unconnected < self.calls:
            return None
        return (
            f"could not connect to {base_url}: {self.reason} ({self.unconnected} of "
            f"{self.calls} calls); check --base-url and that the server is running"
        )


def _connect_failure(exc: BaseException | None) -> str | None:
    """Why a call never reached the server (refused, unknown host, connect timeout), from
    the httpx exception behind a TargetError; None for any other failure."""
    import httpx

    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if not isinstance(exc, httpx.ConnectError):
        return None
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:  # the socket's OSError, if kept
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
        cause = cause.__cause__ or cause.__context__
    text = str(exc)
    return text.split("] ", 1)[-1] if text.startswith("[Errno") else (text or "connect error")


def _validating(original: Any, compressed: Any) -> bool:  # stands in for the judge
    raise AssertionError("only used to validate the metric name")


def _check_store(spec: str) -> None:
    """ConfigError for a --store no store can live at, naming the fix ("Redis://" → lowercase,
    a folder, a file of another kind, an empty value); creates nothing."""
    if not spec.strip():
        raise ConfigError("--store is empty: give a SQLite file path, 'default' or a redis:// URL")
    check_store_location("--store", spec, redis=True)
    if not is_redis_url(spec) and spec != "default":
        check_sqlite_file("--store", spec)


def _open_store(spec: str) -> VerdictStore:
    if is_redis_url(spec):
        return RedisStore(spec)
    return SQLiteStore(None if spec == "default" else spec)


@contextlib.contextmanager
def _no_fallback_log() -> Iterator[None]:
    """While screening runs, promptsieve's warnings do not reach Python's last-resort stderr
    handler when the process configured no logging: the CLI prints them itself (once)."""
    logger = logging.getLogger("promptsieve")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _warnings(result: ScreenResult) -> list[str]:
    """What the CLI prints as ``warning:`` lines after the report (stderr, --json too)."""
    out = []
    if result.noise is not None and result.noise.tau_above_floor:
        out.append(result.noise.warning())
    if (modal := result.modal_warning()) is not None:
        out.append(modal)
    return out


def report(result: ScreenResult) -> dict[str, Any]:
    """The JSON report of a screening result."""
    noise = result.noise
    return {
        "task": result.task,
        "mode": result.mode,
        "ladder_test": result.ladder_test,
        "verdict": result.verdict.value,
        "ratio": result.ratio,
        "lower": result.lower,
        "upper": result.upper,
        "e_value": result.e_value,
        "calls": result.calls,
        "judge_calls": result.judge_calls,
        "errors": result.errors,
        "modal_share": result.modal_share,
        "original_answers": result.original_answers,
        "noise_floor": None
        if noise is None
        else {
            "agree": noise.agree,
            "n": noise.n,
            "lower": noise.lower,
            "upper": noise.upper,
            "tau_above_floor": noise.tau_above_floor,
        },
        "ratios": [
            {
                "ratio": r.ratio,
                "decision": r.decision.value,
                "reason": r.reason,
                "n": r.n,
                "agree": r.agree,
                "original_correct": r.original_correct,
                "skipped": r.skipped,
                "lower": r.lower,
                "upper": r.upper,
                "e_value": r.e_value,
            }
            for r in result.ratios
        ],
    }


def _print(result: ScreenResult, cfg: ScreenConfig, echo: Callable[..., Any]) -> None:
    labelled = result.mode == "labelled"
    for r in result.ratios:
        if labelled:
            what = f"accuracy {r.agree}/{r.n} compressed vs {r.original_correct}/{r.n} original"
        else:
            what = f"{r.agree}/{r.n} agreed"
        echo(
            f"ratio {r.ratio:g}: {r.decision.value} ({r.reason}) {what}, "
            f"bounds [{r.lower:.3f}, {r.upper:.3f}], e-value {r.e_value:.3g}, "
            f"{r.skipped} skipped"
        )
    tested = "every rung at delta/K" if result.ladder_test == "bonferroni" else "fixed sequence"
    echo(f"verdict: {result.verdict.value} ({tested})")
    echo(f"ratio chosen: {'none' if result.ratio is None else f'{result.ratio:g}'}")
    bound = "n/a" if result.lower is None else f"{result.lower:.3f}"
    delta = f"{cfg.delta:g}" + (f"/{len(cfg.ratios)}" if result.ladder_test == "bonferroni" else "")
    if labelled:
        test = NonInferiorityText(cfg)
        echo(f"lower bound on {test.quantity}: {bound} (H0: {test.null}, delta {delta})")
    else:
        echo(f"lower bound on agreement: {bound} (tau {cfg.tau:g}, delta {delta})")
    if result.e_value is not None:
        echo(f"e-value: {result.e_value:.3g}")
    if result.noise is not None:
        echo(result.noise.summary())
    judge = f", {result.judge_calls} of them judge calls" if result.judge_calls else ""
    echo(f"target calls spent: {result.calls} ({result.errors} failed{judge})")


class NonInferiorityText:
    """How a labelled test's quantity and null read in the CLI."""

    def __init__(self, cfg: ScreenConfig) -> None:
        if cfg.rho is not None:
            self.quantity = f"acc(compressed) - {cfg.rho:g} x acc(original)"
            self.null = f"acc(compressed) <= {cfg.rho:g} x acc(original)"
        else:
            eps = 0.05 if cfg.epsilon is None else cfg.epsilon
            self.quantity = "acc(compressed) - acc(original)"
            self.null = f"acc(compressed) <= acc(original) - {eps:g}"


def screen_command(
    task: Annotated[str, typer.Option(help="task name the verdict is for")],
    samples: Annotated[Path, typer.Option(help="JSONL file, one OpenAI request body per line")],
    base_url: Annotated[str, typer.Option(help="OpenAI-compatible base URL of the target")],
    model: Annotated[str, typer.Option(help="target model name")],
    tau: Annotated[float, typer.Option(help="required agreement rate")] = 0.9,
    delta: Annotated[float, typer.Option(help="allowed false-pass probability")] = 0.05,
    budget: Annotated[int, typer.Option(help="samples tried per ratio")] = 100,
    ratios: Annotated[str, typer.Option(help="ladder, conservative first")] = "0.8,0.65,0.5,0.35",
    metric: Annotated[
        str | None, typer.Option(help="exact|numeric|json|f1:0.8|squad:0.5|judge|...")
    ] = None,
    temperature: Annotated[float, typer.Option(help="sampling temperature forced on calls")] = 0.0,
    timeout: Annotated[float, typer.Option(help="seconds per target call")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON report")] = False,
    store: Annotated[
        str | None,
        typer.Option(
            help="save the verdict for live traffic: a SQLite path, 'default', or redis://URL"
        ),
    ] = None,
    mode: Annotated[
        str, typer.Option(help="agreement (label-free) | labelled (non-inferiority vs gold)")
    ] = "agreement",
    epsilon: Annotated[
        float | None, typer.Option(help="labelled: accuracy points compression may lose")
    ] = None,
    rho: Annotated[
        float | None, typer.Option(help="labelled: share of the original's accuracy to keep")
    ] = None,
    gold_field: Annotated[str, typer.Option(help="labelled: field holding the answer")] = "gold",
    judge: Annotated[
        str | None, typer.Option(help="labelled: judge callable 'module:function(sample, out)'")
    ] = None,
    noise: Annotated[
        int, typer.Option(help="measure the noise floor on this many samples first")
    ] = 0,
    ladder_test: Annotated[
        str,
        typer.Option(
            help="fixed-sequence (stop at the first rung that fails) | bonferroni (every "
            "rung at delta/K, apply the most aggressive pass)"
        ),
    ] = "fixed-sequence",
) -> None:
    """Screen a task offline against a target (API key from $OPENAI_API_KEY)."""
    code = run_cli(
        task,
        samples,
        base_url,
        model,
        tau=tau,
        delta=delta,
        budget=budget,
        ratios=ratios,
        metric=metric,
        temperature=temperature,
        timeout=timeout,
        as_json=as_json,
        store=store,
        mode=mode,
        epsilon=epsilon,
        rho=rho,
        gold_field=gold_field,
        judge=judge,
        noise=noise,
        ladder_test=ladder_test,
        echo=typer.echo,
    )
    raise typer.Exit(code)
