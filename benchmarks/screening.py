"""Screening economics: what screen-and-apply costs per task, and when it pays for itself.

Runs ``promptsieve.fidelity.screen`` on a task's items against the (cached) target with a
method's compression, then prices the result: target calls and prompt tokens spent on
screening, tokens saved per applied request at the passing ratio (less the gate's
background monitoring), net savings after a number of requests, and the break-even
request count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .baselines import Method, count
from .data import BenchItem, Kind
from .stats import agree, correct, parse_answer
from .target import CompletionTarget

__all__ = ["ScreenPlan", "economics", "screen_task"]

NET_AFTER_REQUESTS = 10_000  # "net savings after screening" is quoted for this many requests


@dataclass(frozen=True)
class ScreenPlan:
    """Which methods are screened, and the sequential test's settings (SDK defaults)."""

    methods: tuple[str, ...] = ("head", "attribution")
    max_methods: int | None = None  # screen only the first N of ``methods`` that are available
    tau: float = 0.9
    delta: float = 0.05
    ladder: tuple[float, ...] = (0.8, 0.65, 0.5, 0.35)
    budget: int = 100
    monitor_rate: float = 0.02  # GateConfig default: share of applied requests re-checked
    #: "agreement" (the SDK default) and/or "labelled" (non-inferior accuracy against gold,
    #: ``promptsieve.fidelity.labelled``; margin: the SDK default epsilon unless ``rho``).
    modes: tuple[str, ...] = ("agreement",)
    rho: float | None = None
    #: how the ladder's rungs share δ (``ScreenConfig.ladder_test``): "fixed_sequence" (the
    #: SDK default) or "bonferroni" (every rung at δ/K, the most aggressive pass applied).
    ladder_test: str = "fixed_sequence"


class _ScreenTarget:
    """``promptsieve.fidelity.screen.Target`` over the cached completion target."""

    def __init__(self, target: CompletionTarget) -> None:
        self.target = target
        self.model = target.model
        self.prompt_tokens = 0  # tiktoken, of every screening call (cached or not)

    def complete(self, body: Mapping[str, Any]) -> Any:
        from promptsieve.fidelity import TargetOutput

        prompt = str(body["prompt"])
        self.prompt_tokens += count(prompt)
        try:
            out = self.target.complete(
                prompt, max_tokens=int(body["max_tokens"]), stop=list(body.get("stop") or ())
            )
        except RuntimeError as exc:
            from promptsieve import TargetError

            raise TargetError(str(exc)) from exc
        return TargetOutput(text=out.text)


def screen_task(
    items: Sequence[BenchItem],
    method: Method,
    target: CompletionTarget,
    plan: ScreenPlan,
    *,
    max_tokens: int,
    stop: Sequence[str],
    kind: Kind | None = None,
    mode: str = "agreement",
) -> dict[str, Any]:
    """Screen one task with ``method``; returns a JSON-ready record (see :func:`economics`).

    Agreement is :func:`benchmarks.stats.agree` on :func:`benchmarks.stats.parse_answer`
    (the task's own metric: labels for choice tasks, SQuAD answer match for QA). In
    ``mode="labelled"`` each answer is judged against the item's gold with
    :func:`benchmarks.stats.correct` and the SDK's non-inferiority test decides.
    """
    from promptsieve.fidelity import ScreenConfig, screen
    from promptsieve.fidelity.labelled import DEFAULT_EPSILON

    kind = kind or items[0].kind
    by_prompt = {it.prompt: it for it in items}

    def compress(body: Mapping[str, Any], ratio: float) -> dict[str, Any]:
        return {**body, "prompt": method.compress(by_prompt[str(body["prompt"])], ratio)}

    def metric(original: Any, compressed: Any) -> bool:
        return agree(kind, parse_answer(kind, original.text), parse_answer(kind, compressed.text))

    def judge(sample: Mapping[str, Any], output: Any) -> bool:
        return correct(kind, parse_answer(kind, output.text), str(sample["gold"]))

    labelled = mode == "labelled"
    bodies = [
        {"prompt": it.prompt, "max_tokens": max_tokens, "stop": list(stop), "temperature": 0.0}
        | ({"gold": it.gold} if labelled else {})
        for it in items
    ]
    st = _ScreenTarget(target)
    cfg = ScreenConfig(
        tau=plan.tau,
        delta=plan.delta,
        budget=plan.budget,
        ratios=plan.ladder,
        metric=metric,
        mode="labelled" if labelled else "agreement",
        rho=plan.rho if labelled else None,
        ladder_test=plan.ladder_test,
    )
    res = screen(
        items[0].task, bodies, st, cfg, compress=compress, judge=judge if labelled else None
    )
    saved: float | None = None
    if res.ratio is not None:
        total = sum(count(it.prompt) - count(method.compress(it, res.ratio)) for it in items)
        saved = total / len(items)
    avg_prompt = sum(count(it.prompt) for it in items) / len(items)
    record: dict[str, Any] = {
        "task": items[0].task,
        "method": method.name,
        "mode": res.mode,
        "margin": (
            (f"rho={plan.rho:g}" if plan.rho is not None else f"epsilon={DEFAULT_EPSILON:g}")
            if labelled
            else f"tau={plan.tau:g}"
        )
        + (", every rung at delta/K" if plan.ladder_test == "bonferroni" else ""),
        "ladder_test": plan.ladder_test,
        "samples": len(items),
        "passed": res.passed,
        "ratio": res.ratio,
        "reason": "; ".join(f"{r.ratio:g}: {r.decision.value} ({r.reason})" for r in res.ratios),
        "rungs": [
            {
                "ratio": r.ratio,
                "decision": r.decision.value,
                "n": r.n,
                "agree": r.agree,
                "original_correct": r.original_correct,
                "lower": r.lower,
                "upper": r.upper,
            }
            for r in res.ratios
        ],
        "calls": res.calls,
        "errors": res.errors,
        "screen_prompt_tokens": st.prompt_tokens,
        "avg_prompt_tokens": avg_prompt,
        "saved_per_request": saved,
    }
    record.update(economics(st.prompt_tokens, saved, avg_prompt, plan.monitor_rate))
    return record


def economics(
    screen_tokens: int,
    saved_per_request: float | None,
    avg_prompt_tokens: float,
    monitor_rate: float,
    requests: int = NET_AFTER_REQUESTS,
) -> dict[str, Any]:
    """Net tokens per applied request, net after ``requests`` requests, break-even count.

    Monitoring re-sends ``monitor_rate`` of applied requests uncompressed, so each applied
    request also costs that share of an original prompt.
    """
    if saved_per_request is None:
        return {
            "net_per_request": None,
            "net_after_requests": -screen_tokens,
            "requests": requests,
            "break_even_requests": None,
        }
    net = saved_per_request - monitor_rate * avg_prompt_tokens
    return {
        "net_per_request": net,
        "net_after_requests": requests * net - screen_tokens,
        "requests": requests,
        "break_even_requests": math.ceil(screen_tokens / net) if net > 0 else None,
    }
