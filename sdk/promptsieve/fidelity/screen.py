"""Offline screening: run the ratio ladder's sequential tests on a file of real requests.

``screen(task, samples, target)`` sends each sample (an OpenAI request body) to the target
once as is and once compressed per ratio, compares the outputs with the task's metric, and
feeds the sequential test. The ladder runs conservative → aggressive on the SAME samples in
the same order; the most aggressive ratio that passes is the verdict. Original outputs are
cached, so each sample's original costs one call however many ratios are tried.

A target error or timeout counts as neither agreement nor disagreement: the call is retried
once, then the sample is skipped (it still uses up one of the ratio's ``budget`` attempts,
so a dead target cannot make screening loop).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from promptsieve._errors import ConfigError, StoreError, TargetError, missing_extra
from promptsieve.fidelity.agree import Embed, Metric, TargetOutput, auto_metric, get_metric
from promptsieve.fidelity.stats import Outcome, SequentialTest
from promptsieve.fidelity.store import Verdict, VerdictKey, VerdictState, VerdictStore
from promptsieve.prompt import Message, OpaquePart, Part, TextPart

__all__ = [
    "CompressFn",
    "HTTPTarget",
    "RatioResult",
    "ScreenConfig",
    "ScreenResult",
    "Target",
    "body_compressor",
    "load_samples",
    "screen",
]

log = logging.getLogger(__name__)

CompressFn = Callable[[Mapping[str, Any], float], dict[str, Any]]  # (body, ratio) -> body'


@runtime_checkable
class Target(Protocol):
    """The model under test: one request body in, its output out (TargetError on failure)."""

    model: str

    def complete(self, body: Mapping[str, Any]) -> TargetOutput: ...


@dataclass(frozen=True)
class ScreenConfig:
    """Offline screening settings (see GateConfig for the same knobs online).

    ``budget``: samples tried per ratio (errors included). ``retries``: extra attempts per
    failed target call. ``metric``: as in :func:`get_metric`; None picks one per sample from
    the original output's shape.
    """

    tau: float = 0.9
    delta: float = 0.05
    budget: int = 100
    ratios: tuple[float, ...] = (0.8, 0.65, 0.5, 0.35)
    metric: str | Metric | None = None
    retries: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.tau < 1 or not 0 < self.delta < 1:
            raise ConfigError(f"tau and delta must be in (0, 1), got {self.tau}, {self.delta}")
        if self.budget < 1:
            raise ConfigError(f"budget must be >= 1, got {self.budget}")
        if not self.ratios or any(not 0 < r <= 1 for r in self.ratios):
            raise ConfigError(f"ratios must be a non-empty sequence in (0, 1], got {self.ratios}")
        if self.retries < 0:
            raise ConfigError(f"retries must be >= 0, got {self.retries}")


@dataclass(frozen=True)
class RatioResult:
    """One rung of the ladder."""

    ratio: float
    decision: Outcome
    reason: str
    n: int  # paired comparisons counted
    agree: int
    skipped: int  # samples skipped after target errors
    lower: float
    upper: float


@dataclass(frozen=True)
class ScreenResult:
    """The verdict: ``passed`` with the ``ratio`` to apply, or ``failed`` (ratio None)."""

    task: str
    verdict: VerdictState
    ratio: float | None
    lower: float | None  # bounds of the chosen ratio's test (or of the failed first ratio)
    upper: float | None
    calls: int  # target calls spent, retries included
    errors: int  # target calls that failed
    ratios: tuple[RatioResult, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return self.verdict is VerdictState.PASSED

    def summary(self) -> str:
        bound = "n/a" if self.lower is None else f"[{self.lower:.3f}, {self.upper:.3f}]"
        ratio = "none" if self.ratio is None else f"{self.ratio:g}"
        return (
            f"task {self.task!r}: {self.verdict.value}; ratio {ratio}; agreement bounds {bound}; "
            f"{self.calls} target calls ({self.errors} failed)"
        )


# -- samples ------------------------------------------------------------------------------


def load_samples(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file of OpenAI request bodies (``messages`` or ``prompt``).

    Blank lines are skipped; a malformed line raises ConfigError naming the file and line.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read samples file {p}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} is not UTF-8 text (byte {exc.start})") from exc
    samples = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except json.JSONDecodeError as exc:
            msg = f"{p}:{lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
            raise ConfigError(msg) from None
        problem = _body_problem(body)
        if problem:
            raise ConfigError(f"{p}:{lineno}: {problem}")
        samples.append(body)
    if not samples:
        raise ConfigError(f"{p}: no samples (expected one JSON request body per line)")
    return samples


def _body_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return f"expected a JSON object (a request body), got {type(body).__name__}"
    if "messages" in body:
        msgs = body["messages"]
        if not isinstance(msgs, list) or not msgs:
            return "'messages' must be a non-empty list"
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                return f"messages[{i}] must be an object with a string 'role'"
        return None
    if "prompt" in body:
        if not isinstance(body["prompt"], str):
            return "'prompt' must be a string"
        return None
    return "a request body needs 'messages' (chat) or 'prompt' (completions)"


# -- compression of request bodies --------------------------------------------------------


def _to_message(m: Mapping[str, Any]) -> Message:
    content = m.get("content")
    extra = {k: v for k, v in m.items() if k not in ("role", "content")}
    parts: list[Part] = []
    if isinstance(content, str):
        parts.append(TextPart(content))
    elif isinstance(content, list):
        for p in content:
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                parts.append(TextPart(p["text"]))
            else:
                parts.append(OpaquePart(p))
    elif content is not None:
        parts.append(OpaquePart(content))
    return Message(role=str(m["role"]), parts=tuple(parts), extra=extra)


def _from_message(original: Mapping[str, Any], msg: Message) -> dict[str, Any]:
    out = dict(original)
    content = original.get("content")
    if isinstance(content, str):
        out["content"] = msg.content
    elif isinstance(content, list):
        new_parts: list[Any] = []
        for old, part in zip(content, msg.parts, strict=False):
            if isinstance(part, TextPart) and isinstance(old, dict):
                new_parts.append({**old, "text": part.text})
            else:
                new_parts.append(old)
        out["content"] = new_parts
    return out


def body_compressor(compressor: Any) -> CompressFn:
    """Adapt a ``promptsieve.Compressor`` to ``(body, ratio) -> compressed body``."""

    def compress(body: Mapping[str, Any], ratio: float) -> dict[str, Any]:
        new = copy.deepcopy(dict(body))
        if "prompt" in body:
            new["prompt"] = compressor.compress(body["prompt"], ratio=ratio).prompt
            return new
        originals = list(body["messages"])
        result = compressor.compress([_to_message(m) for m in originals], ratio=ratio).prompt
        new["messages"] = [_from_message(o, m) for o, m in zip(originals, result, strict=True)]
        return new

    return compress


# -- HTTP target --------------------------------------------------------------------------


class HTTPTarget:
    """An OpenAI-compatible HTTP endpoint (``/chat/completions`` or ``/completions``).

    ``overrides`` are set on every body (e.g. ``{"temperature": 0}`` so that two calls with
    the same prompt answer the same). The API key defaults to ``$OPENAI_API_KEY``.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            import httpx
        except ImportError:
            raise missing_extra("httpx", "openai") from None
        self._httpx = httpx
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.overrides = dict(overrides or {})
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def __repr__(self) -> str:
        return f"HTTPTarget({self.base_url!r}, model={self.model!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HTTPTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def complete(self, body: Mapping[str, Any]) -> TargetOutput:
        chat = "messages" in body
        payload = {**body, **self.overrides, "model": self.model, "stream": False}
        path = "/chat/completions" if chat else "/completions"
        try:
            resp = self._client.post(path, json=payload)
        except self._httpx.TimeoutException as exc:
            raise TargetError(f"target timed out on {path}: {exc}") from exc
        except self._httpx.HTTPError as exc:
            raise TargetError(f"target request to {path} failed: {exc}") from exc
        if resp.status_code >= 400:
            detail = resp.text[:200]
            raise TargetError(f"target answered HTTP {resp.status_code} on {path}: {detail}")
        try:
            data = resp.json()
            choice = data["choices"][0]
            if not chat:
                return TargetOutput(text=str(choice.get("text") or ""))
            message = choice["message"]
            calls = tuple(
                (str(c["function"]["name"]), str(c["function"].get("arguments") or ""))
                for c in (message.get("tool_calls") or [])
            )
            return TargetOutput(text=str(message.get("content") or ""), tool_calls=calls)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise TargetError(f"target sent a malformed response on {path}: {exc!r}") from exc


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


def screen(
    task: str,
    samples: Iterable[Mapping[str, Any]],
    target: Target,
    config: ScreenConfig | None = None,
    *,
    compress: CompressFn | None = None,
    embed: Embed | None = None,
    store: VerdictStore | None = None,
    key: VerdictKey | None = None,
    ttl: float = 7 * 24 * 3600.0,
) -> ScreenResult:
    """Screen ``task`` offline and return the verdict.

    ``compress`` rewrites a body at a ratio (default: a ``promptsieve.Compressor``).
    ``store`` + ``key``: also write the verdict where a Gate will find it.
    """
    cfg = config or ScreenConfig()
    bodies = [dict(s) for s in samples]
    for i, body in enumerate(bodies):
        problem = _body_problem(body)
        if problem:
            raise ConfigError(f"sample {i}: {problem}")
    if not bodies:
        raise ConfigError("screen() needs at least one sample")
    if compress is None:
        compress = _default_compress()
    metric = get_metric(cfg.metric, embed=embed)
    caller = _Caller(target, cfg.retries)
    originals: dict[int, TargetOutput] = {}
    rungs: list[RatioResult] = []
    best: RatioResult | None = None
    for ratio in cfg.ratios:
        rung = _screen_ratio(ratio, bodies, cfg, caller, originals, compress, metric)
        rungs.append(rung)
        log.info(
            "task %r: ratio %s %s (%d/%d agreed)",
            task,
            ratio,
            rung.decision.value,
            rung.agree,
            rung.n,
        )
        if rung.decision is not Outcome.PASS:
            break
        best = rung
    shown = best if best is not None else rungs[0]
    result = ScreenResult(
        task=task,
        verdict=VerdictState.PASSED if best is not None else VerdictState.FAILED,
        ratio=best.ratio if best is not None else None,
        lower=shown.lower,
        upper=shown.upper,
        calls=caller.calls,
        errors=caller.errors,
        ratios=tuple(rungs),
    )
    if store is not None:
        if key is None:
            raise ConfigError("screen(store=...) also needs the verdict key")
        _save(store, key, result, ttl)
    return result


def _screen_ratio(
    ratio: float,
    bodies: Sequence[dict[str, Any]],
    cfg: ScreenConfig,
    call: _Caller,
    originals: dict[int, TargetOutput],
    compress: CompressFn,
    metric: Metric | None,
) -> RatioResult:
    test = SequentialTest(cfg.tau, cfg.delta, cfg.budget)
    state = test.state
    skipped = 0
    for i, body in enumerate(bodies[: cfg.budget]):
        original = originals.get(i)
        if original is None:
            original = call(body)
            if original is None:
                skipped += 1
                continue
            originals[i] = original
        compressed = call(compress(body, ratio))
        if compressed is None:
            skipped += 1
            continue
        agreed = (metric or auto_metric(original))(original, compressed)
        state = test.update(agreed)
        if state.decision is not Outcome.CONTINUE:
            break
    decision, reason = state.decision, state.reason
    if decision is Outcome.CONTINUE:  # ran out of samples or attempts before deciding
        decision = Outcome.FAIL
        reason = "budget" if len(bodies) >= cfg.budget else "samples exhausted"
    return RatioResult(
        ratio, decision, reason, state.n, state.successes, skipped, state.lower, state.upper
    )


def _save(store: VerdictStore, key: VerdictKey, result: ScreenResult, ttl: float) -> None:
    import time

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
        reason="offline screen",
    )
    if not store.put(key, verdict, expected_version=None if old is None else old.version):
        log.warning("task %r: verdict changed concurrently; offline result not saved", key.task)


def _default_compress() -> CompressFn:
    try:
        from promptsieve.compressor import Compressor
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(f"the default compressor is unavailable ({exc}); pass compress=") from exc
    return body_compressor(Compressor())


def _compress_fn() -> CompressFn:
    """The compressor the CLI screens with (the SDK's default ``Compressor``)."""
    return _default_compress()


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
    echo: Callable[..., Any] = print,
) -> int:
    """``promptsieve screen``: 0 = passed, 1 = failed, 2 = bad input.

    ``store``: also save the verdict (a SQLite path, ``default`` for the SDK's default file,
    or a ``redis://`` URL) under the key a ``Sieve`` with the same metric, τ, δ and ladder
    looks up, so live traffic starts from the offline verdict.
    """
    try:
        ladder = tuple(float(r) for r in ratios.split(",") if r.strip())
    except ValueError:
        echo(f"error: --ratios must be comma-separated numbers, got {ratios!r}", err=True)
        return 2
    try:
        cfg = ScreenConfig(tau=tau, delta=delta, budget=budget, ratios=ladder, metric=metric)
        get_metric(metric)  # unknown names fail before any call
        bodies = load_samples(samples)
        compress = _compress_fn()
        saved = _store_and_key(store, task, model, cfg) if store else (None, None)
    except (ConfigError, StoreError) as exc:
        echo(f"error: {exc}", err=True)
        return 2
    overrides = {} if temperature is None else {"temperature": temperature}
    with HTTPTarget(base_url, model, timeout=timeout, overrides=overrides) as target:
        result = screen(task, bodies, target, cfg, compress=compress, store=saved[0], key=saved[1])
    if as_json:
        report = {
            "task": result.task,
            "verdict": result.verdict.value,
            "ratio": result.ratio,
            "lower": result.lower,
            "upper": result.upper,
            "calls": result.calls,
            "errors": result.errors,
            "ratios": [
                {
                    "ratio": r.ratio,
                    "decision": r.decision.value,
                    "reason": r.reason,
                    "n": r.n,
                    "agree": r.agree,
                    "skipped": r.skipped,
                    "lower": r.lower,
                    "upper": r.upper,
                }
                for r in result.ratios
            ],
        }
        echo(json.dumps(report, indent=2))
    else:
        for r in result.ratios:
            echo(
                f"ratio {r.ratio:g}: {r.decision.value} ({r.reason}) {r.agree}/{r.n} agreed, "
                f"bounds [{r.lower:.3f}, {r.upper:.3f}], {r.skipped} skipped"
            )
        echo(f"verdict: {result.verdict.value}")
        echo(f"ratio chosen: {'none' if result.ratio is None else f'{result.ratio:g}'}")
        bound = "n/a" if result.lower is None else f"{result.lower:.3f}"
        echo(f"lower bound on agreement: {bound} (tau {tau:g}, delta {delta:g})")
        echo(f"target calls spent: {result.calls} ({result.errors} failed)")
        if saved[1] is not None:
            echo(f"verdict saved for task {task!r}, model {model!r} in {store}")
    return 0 if result.passed else 1


def _store_and_key(
    spec: str, task: str, model: str, cfg: ScreenConfig
) -> tuple[VerdictStore, VerdictKey]:
    """The store named by ``spec`` and the key a matching default ``Sieve`` reads."""
    from promptsieve.fidelity.gate import GateConfig
    from promptsieve.fidelity.store import RedisStore, SQLiteStore
    from promptsieve.sieve import Sieve, SieveConfig

    gate = GateConfig(tau=cfg.tau, delta=cfg.delta, budget=cfg.budget, ratios=cfg.ratios)
    if cfg.metric is not None and not isinstance(cfg.metric, str):
        raise ConfigError("--store needs a named metric (a callable has no stable key)")
    key = Sieve(SieveConfig(metric=cfg.metric, gate=gate)).verdict_key(task, model)
    if spec.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(spec), key
    return SQLiteStore(None if spec == "default" else spec), key
