"""The BIG-bench suites and the profiles that run them on a capable target.

A *suite* is one task's items (multi-document QA at one size, one BBH task, vitaminc). A
*profile* names the target (an embedded model of :mod:`promptsieve.local`, or any
OpenAI-compatible ``--base-url``), the suites with their sizes, the keep ratios, the
methods, and the screening plan.

For every suite the runner asks the target the uncompressed prompt, then each method's
compression at each ratio, and a meaning-preserving variant of the uncompressed prompt for
the noise floor (multi-document QA: the documents in another order; the others: prose
reflowed, :func:`promptsieve.fidelity.noise.reflow`). Every call goes through the call cache,
so an interrupted run resumes where it stopped, and ``results.json`` + ``report.md`` are
rewritten after each suite, so that partial results can be committed as they come.
"""

from __future__ import annotations

import functools
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from promptsieve import ConfigError

from .baselines import Method, context_ratio, count
from .data import BenchItem, Kind
from .screening import ScreenPlan, screen_task
from .stats import agree, correct, parse_answer
from .target import CompletionTarget

__all__ = ["PROFILES", "Suite", "SuiteProfile", "run_suites"]

log = logging.getLogger(__name__)

RATIOS = (0.8, 0.5, 0.33, 0.25)


@dataclass(frozen=True)
class Suite:
    """One task's items: ``source`` is ``multidoc`` (``size`` tokens), ``bbh`` (``task``,
    ``cot``) or ``vitaminc``; ``n`` items, of which the first ``noise`` also get a
    meaning-preserving variant for the noise floor. ``skip`` leaves out the first items of
    that draw (and their noise-floor calls): a second machine continues a committed run
    without repeating it, and :mod:`benchmarks.merge_runs` stacks the two."""

    source: str
    n: int
    noise: int = 0
    skip: int = 0
    size: int = 1000
    task: str = ""
    cot: bool = False
    split: str = "test"
    seed: int = 0

    @property
    def name(self) -> str:
        if self.source == "multidoc":
            return f"multidoc_{self.size // 1000}k"
        if self.source == "bbh":
            return f"bbh_{'cot_' if self.cot else ''}{self.task}"
        return self.source

    @property
    def kind(self) -> Kind:
        if self.source == "multidoc":
            return "qa"
        return "cot" if self.cot else "direct"

    @property
    def max_tokens(self) -> int:
        return {"qa": 24, "direct": 8, "cot": 256}[self.kind]

    @property
    def stop(self) -> tuple[str, ...]:
        return ("\n\n", "Q:") if self.kind == "direct" else ("\n\nQ:",) if self.cot else ()

    def items(self) -> list[BenchItem]:
        """The draw's items ``skip`` to ``n`` (prefix-stable: the same seed draws the same
        first items whatever ``n``)."""
        from .bigbench import bbh_task_items, multidoc_items, vitaminc_items

        if self.source == "multidoc":
            items = multidoc_items(self.split, self.size, self.n, self.seed)  # type: ignore[arg-type]
        elif self.source == "bbh":
            items = bbh_task_items(self.task, cot=self.cot, n=self.n, seed=self.seed)
        elif self.source == "vitaminc":
            items = vitaminc_items(self.n, self.seed)
        else:
            raise ValueError(f"unknown suite source {self.source!r}")
        return items[self.skip :]

    @property
    def noisy(self) -> int:
        """How many of :meth:`items` get a noise-floor call (the draw's first ``noise``)."""
        return max(0, self.noise - self.skip)

    def variant(self, item: BenchItem) -> str:
        """The noise-floor prompt: same meaning, other layout (never the question)."""
        rng = random.Random(f"noise:{item.id}")
        if item.docs:
            raw = _multidoc_by_id(self.split, self.size, self.n, self.seed)
            docs = list(raw[item.id].docs)
            order = list(range(len(docs)))
            while len(docs) > 1 and order == sorted(order):
                rng.shuffle(order)
            return raw[item.id].render([docs[i] for i in order]).prompt
        from promptsieve.fidelity.noise import reflow

        return reflow(item.context, width=rng.choice((60, 72, 88))) + item.question

    def chance(self, items: Sequence[BenchItem]) -> float | None:
        """Accuracy of a uniform guess over the options (None for free-text QA)."""
        if self.kind == "qa" or not items:
            return None
        if self.source == "vitaminc":
            return 1 / 3
        options = [max(2, item.question.count("\n(")) for item in items]
        return sum(1 / k for k in options) / len(options)


@dataclass(frozen=True)
class SuiteProfile:
    """What one run covers (see the module docstring)."""

    name: str
    model: str  # embedded target (promptsieve.local.EMBEDDED_MODELS) unless --base-url
    suites: tuple[Suite, ...]
    ratios: tuple[float, ...] = RATIOS
    methods: tuple[str, ...] = ("none", "random", "truncate", "selfinfo", "sentence")
    screen: ScreenPlan = field(
        default_factory=lambda: ScreenPlan(methods=("sentence", "truncate"), ladder=RATIOS)
    )
    description: str = ""


_BBH_STANDARD = (
    "date_understanding", "disambiguation_qa", "logical_deduction_three_objects",
    "movie_recommendation", "navigate", "ruin_names", "snarks", "sports_understanding",
    "temporal_sequences", "tracking_shuffled_objects_three_objects", "causal_judgement",
    "hyperbaton", "geometric_shapes", "reasoning_about_colored_objects",
)  # fmt: skip

PROFILES: dict[str, SuiteProfile] = {
    # CI: Gemma 3 270M (a base model, chance-level), a handful of items per suite: it checks
    # that the whole pipeline runs, not what the methods are worth.
    "quick": SuiteProfile(
        name="quick",
        model="gemma-3-270m",
        suites=(
            Suite("multidoc", n=3, noise=2, size=1000),
            Suite("bbh", n=3, noise=2, task="sports_understanding"),
            Suite("vitaminc", n=3, noise=2),
        ),
        ratios=(0.5, 0.25),
        methods=("none", "random", "truncate", "sentence"),
        screen=ScreenPlan(
            methods=("truncate",),
            tau=0.6,
            delta=0.3,
            ladder=(0.5, 0.25),
            budget=3,
            modes=("agreement", "labelled"),
        ),
        description="CI smoke run on Gemma 3 270M",
    ),
    # The everyday target (Qwen2.5-Coder-0.5B-Instruct), at the sizes of issue #12:
    # multi-document QA at ~1k tokens on the test articles (100 items), four BBH tasks with
    # 60 non-exemplar questions each, vitaminc. On a shared 2-core machine this is many hours;
    # --max-items / --suites / --ratios run a prefix of it (the rest resumes from the cache).
    "standard": SuiteProfile(
        name="standard",
        model="qwen2.5-coder-0.5b-instruct",
        suites=(
            Suite("multidoc", n=100, noise=50, size=1000),
            *(Suite("bbh", n=60, noise=30, task=t) for t in _BBH_STANDARD[:4]),
            Suite("vitaminc", n=60, noise=30),
        ),
        methods=("none", "random", "truncate", "selfinfo", "sentence", "coarse", "relevance"),
        screen=ScreenPlan(
            methods=("relevance", "coarse", "sentence", "truncate"),
            ladder=RATIOS,
            modes=("agreement", "labelled"),
        ),
        description="Qwen2.5-Coder-0.5B-Instruct",
    ),
    # The headline target (Qwen2.5-Coder-1.5B-Instruct): multi-document QA on the test
    # articles at ~1k and ~2k tokens, 100 items per cell, every BBH task above with 60
    # non-exemplar questions, vitaminc. Many hours on 2 cores; resumable through the call
    # cache, and --suites/--methods/--ratios run a part of it.
    "headline": SuiteProfile(
        name="headline",
        model="qwen2.5-coder-1.5b-instruct",
        suites=(
            Suite("multidoc", n=100, noise=50, size=1000),
            Suite("multidoc", n=100, noise=50, size=2000),
            *(Suite("bbh", n=60, noise=20, task=t) for t in _BBH_STANDARD),
            Suite("vitaminc", n=60, noise=20),
        ),
        methods=(
            "none",
            "random",
            "truncate",
            "selfinfo",
            "sentence",
            "coarse",
            "relevance",
            "default",
        ),
        screen=ScreenPlan(
            methods=("default", "relevance", "coarse", "sentence", "truncate"),
            ladder=RATIOS,
            modes=("agreement", "labelled"),
        ),
        description="Qwen2.5-Coder-1.5B-Instruct",
    ),
}


# -- running ---------------------------------------------------------------------------------


def _call_row(
    suite: Suite,
    item: BenchItem,
    target: CompletionTarget,
    prompt: str,
    common: dict[str, Any],
) -> tuple[dict[str, Any], str | None]:
    out = target.complete(prompt, max_tokens=suite.max_tokens, stop=suite.stop)
    answer = parse_answer(suite.kind, out.text)
    row = {
        **common,
        "tokens_after": count(prompt),
        "server_tokens_after": out.prompt_tokens,
        "context_kept": context_ratio(item, prompt),
        "answer": answer,
        "correct": correct(suite.kind, answer, item.gold),
        "target_s": out.latency_s,
        "cached": out.cached,
        "error": None,
    }
    return row, answer


def estimate_seconds(
    suites: Sequence[tuple[Suite, list[BenchItem]]],
    methods: Sequence[Method],
    ratios: Sequence[float],
    tok_s: float,
    target: CompletionTarget,
) -> float:
    """Seconds of prompt processing left (uncached calls only), at ``tok_s`` tokens/s.

    Counts every call the run would make that the target's cache does not hold: the
    uncompressed call and the noise-floor call of each item, and one call per compressing
    method and ratio, of ratio × context + question tokens. A compressed call counts as
    cached only when the method knows its prompt without compressing
    (:meth:`Method.peek`, a cached compression) and the target holds that prompt; each
    uncached call adds its decoding (about 20× slower per token than prompt processing).
    """
    total = 0.0
    for suite, items in suites:
        asked = _for_suite(target, suite)
        kw: dict[str, Any] = {"max_tokens": suite.max_tokens, "stop": suite.stop}
        decode = 20 * suite.max_tokens
        for i, it in enumerate(items):
            ctx, q = count(it.context), count(it.question)
            if not asked.is_cached(it.prompt, **kw):
                total += ctx + q + decode
            if i < suite.noisy and not asked.is_cached(suite.variant(it), **kw):
                total += ctx + q + decode
            for m in methods:
                for r in ratios:
                    known = m.peek(it, r)
                    if known is None or not asked.is_cached(known, **kw):
                        total += r * ctx + q + decode
    return total / tok_s


@functools.lru_cache(maxsize=4)
def _multidoc_by_id(split: str, size: int, n: int, seed: int) -> dict[str, Any]:
    """The multi-document draw by item id (built once per suite, not once per noise call)."""
    from .bigbench import multidoc_raw

    return {m.id: m for m in multidoc_raw(split, size, n, seed)}  # type: ignore[arg-type]


def limit(
    profile: SuiteProfile,
    max_items: int | None,
    only: Sequence[str] | None,
    skip: int = 0,
    *,
    items: int | None = None,
) -> SuiteProfile:
    """``profile`` with each suite capped at ``max_items`` items (noise floor: half of them),
    only the suites named, and each suite's first ``skip`` items left out.

    ``items`` instead draws every suite at exactly that many items: beyond the profile's
    size, the same draw extended (its noise floor stays the profile's), e.g. more items
    for a tighter interval, continued with ``skip``. Items are drawn prefix-stably, so a
    capped run's calls are reused from the cache when the full profile runs later, and an
    extended run reuses the profile's. Raises ``ValueError`` for an unknown suite, a
    negative ``skip``, both ``max_items`` and ``items``, or a suite whose data holds fewer
    than ``items``.
    """
    from dataclasses import replace

    suites = profile.suites
    if only:
        unknown = set(only) - {s.name for s in suites}
        if unknown:
            raise ValueError(f"unknown suites {sorted(unknown)}; {[s.name for s in suites]}")
        suites = tuple(s for s in suites if s.name in only)
    if max_items is not None and items is not None:
        raise ValueError("--max-items and --items do not combine: give one")
    if max_items is not None:
        suites = tuple(
            replace(s, n=min(s.n, max_items), noise=min(s.noise, (max_items + 1) // 2))
            for s in suites
        )
    if items is not None:
        if items < 1:
            raise ValueError(f"--items must be 1 or more, got {items}")
        drawn = []
        for s in suites:
            t = replace(s, n=items, noise=min(s.noise, (items + 1) // 2))
            if items > s.n:  # beyond the profile's size: the task's data must hold them
                try:
                    held = len(t.items())
                except ConfigError:  # no data at all: said as it is, not as a bad --items
                    raise
                except ValueError as exc:  # the multi-document draw: too few questions
                    raise ValueError(f"--items {items}: {s.name}: {exc}") from None
                if held < items:
                    raise ValueError(f"--items {items}: {s.name} holds only {held} items")
            drawn.append(t)
        suites = tuple(drawn)
    if skip < 0:
        raise ValueError("--skip-items must be 0 or more")
    if skip:
        short = [s.name for s in suites if s.n <= skip]
        if short:
            raise ValueError(f"--skip-items {skip} leaves no item of {', '.join(short)}")
        suites = tuple(replace(s, skip=skip) for s in suites)
    return replace(profile, suites=suites)


def run_suites(
    profile: SuiteProfile,
    target: CompletionTarget,
    methods: Sequence[Method],
    *,
    out: Path,
    meta: dict[str, Any],
    tok_s: float,
    screen: bool = True,
    write: Callable[[dict[str, Any], Path], Any] | None = None,
) -> dict[str, Any]:
    """Run every suite of ``profile``; rewrites ``out/results.json`` after each suite.

    Prints the plan and an ETA first (at ``tok_s``, then re-estimated from the first
    uncached call's measured prompt rate).
    """
    import json

    from tqdm import tqdm

    from .suite_report import write_suite_report

    write = write or write_suite_report
    t0 = time.perf_counter()
    suites = [(s, s.items()) for s in profile.suites]
    compressing = [m for m in methods if m.name != "none"]
    eta = estimate_seconds(suites, compressing, profile.ratios, tok_s, target)
    n_calls = sum(
        len(items) * (1 + len(compressing) * len(profile.ratios)) + min(s.noisy, len(items))
        for s, items in suites
    )
    print(
        f"{profile.name}: {len(suites)} suites, {n_calls} target calls "
        f"({sum(len(i) for _, i in suites)} items × {len(compressing)} methods × "
        f"{len(profile.ratios)} ratios + noise floor) on {target.model}; "
        f"ETA ≈ {eta / 60:.0f} min of prompt processing at {tok_s:.0f} tok/s "
        "(cached calls cost nothing; the bars below show the live rate)",
        file=sys.stderr,
        flush=True,
    )
    results: dict[str, Any] = {
        "meta": {**meta, "profile": profile.name, "ratios": list(profile.ratios),
                 "eta_s": eta, "planned_calls": n_calls},
        "methods": {m.name: {"ok": m.available, "reason": m.reason} for m in methods},
        "suites": {},
        "rows": [],
        "noise": [],
        "screening": [],
        "screen_plan": asdict(profile.screen),
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    _calibrate(suites, target, compressing, profile.ratios, tok_s)
    for suite, items in suites:
        suite_target = _for_suite(target, suite)
        per = 1 + len(compressing) * len(profile.ratios)
        total = len(items) * per + min(suite.noisy, len(items))
        bar = tqdm(total=total, desc=suite.name, unit="call", file=sys.stderr)
        rows, noise = _suite_grid(suite, items, compressing, profile.ratios, suite_target, bar)
        bar.close()
        results["rows"] += rows
        results["noise"] += noise
        results["suites"][suite.name] = {
            "kind": suite.kind,
            "items": len(items),
            "chance": suite.chance(items),
            "split": suite.split if suite.source == "multidoc" else None,
            "avg_prompt_tokens": sum(count(i.prompt) for i in items) / max(1, len(items)),
        }
        if screen:
            done = {r["item"] for r in rows if r["method"] == "none"}
            answered = [it for it in items if it.id in done]  # a stopped run: what it reached
            results["screening"] += _screen_suite(suite, answered, methods, profile, suite_target)
        results["meta"]["runtime_s"] = time.perf_counter() - t0
        results["meta"]["target_calls"] = target.calls
        (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        write(results, out)
    return results


#: Instruct (chat) targets answer a base-model few-shot prompt with a preamble ("To solve
#: these problems, we need to ...") that the 8-token answer budget cuts off; measured on
#: Qwen2.5-Coder-1.5B: 0/60 parsed on date_understanding without this system message.
CHAT_ANSWER_FORMAT = (
    "Reply with only the final answer, in exactly the format of the answers in the "
    "examples, with no explanation."
)


def _for_suite(target: CompletionTarget, suite: Suite) -> CompletionTarget:
    """The target as ``suite`` calls it: label suites on a chat target get
    :data:`CHAT_ANSWER_FORMAT` as a system message (free-text QA prompts carry their own
    instruction, and their cached calls stay valid)."""
    if not target.chat or suite.kind != "direct":
        return target
    return target.with_system(CHAT_ANSWER_FORMAT)


def _calibrate(
    suites: Sequence[tuple[Suite, list[BenchItem]]],
    target: CompletionTarget,
    methods: Sequence[Method],
    ratios: Sequence[float],
    tok_s: float,
) -> None:
    """Time the first uncached uncompressed call and print the ETA at the measured rate."""
    for suite, items in suites:
        asked = _for_suite(target, suite)
        for it in items:
            if asked.offline or asked.is_cached(
                it.prompt, max_tokens=suite.max_tokens, stop=suite.stop
            ):
                continue
            try:
                out = asked.complete(it.prompt, max_tokens=suite.max_tokens, stop=suite.stop)
            except RuntimeError:
                return
            rate = count(it.prompt) / max(out.latency_s, 1e-3)
            eta = estimate_seconds(suites, methods, ratios, rate, target)
            print(
                f"measured {rate:.0f} prompt tok/s on one uncached call "
                f"({count(it.prompt)} tokens in {out.latency_s:.1f} s, registry figure "
                f"{tok_s:.0f}): ETA ≈ {eta / 60:.0f} min",
                file=sys.stderr,
                flush=True,
            )
            return


def _suite_grid(
    suite: Suite,
    items: Sequence[BenchItem],
    methods: Sequence[Method],
    ratios: Sequence[float],
    target: CompletionTarget,
    bar: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """All calls of one suite, as rows and noise-floor records.

    Few-shot suites go method by method (all uncompressed calls first): their requests share
    the demonstration prefix, so the server's KV cache is reused. Multi-document items share
    nothing, so they go item by item: a run stopped early still has complete paired cells
    for its first items.
    """
    rows: list[dict[str, Any]] = []
    noise: list[dict[str, Any]] = []
    base: dict[str, str | None] = {}
    noisy = {it.id for it in items[: suite.noisy]}
    if suite.source == "multidoc":
        for item in items:
            _base_call(suite, item, target, base, rows, bar)
            if item.id in noisy:
                _noise_call(suite, item, target, base, noise, bar)
            for m in methods:
                for ratio in ratios:
                    _compressed_call(suite, item, m, ratio, target, base, rows, bar)
        return rows, noise
    for item in items:
        _base_call(suite, item, target, base, rows, bar)
    for item in items:
        if item.id in noisy:
            _noise_call(suite, item, target, base, noise, bar)
    for m in methods:
        for ratio in ratios:
            for item in items:
                _compressed_call(suite, item, m, ratio, target, base, rows, bar)
    return rows, noise


def _common(suite: Suite, item: BenchItem, method: str, ratio: float) -> dict[str, Any]:
    return {
        "suite": suite.name,
        "task": item.task,
        "item": item.id,
        "kind": suite.kind,
        "gold": item.gold,
        "method": method,
        "ratio": ratio,
        "tokens_before": count(item.prompt),
        "context_tokens": count(item.context),
    }


def _base_call(
    suite: Suite,
    item: BenchItem,
    target: CompletionTarget,
    base: dict[str, str | None],
    rows: list[dict[str, Any]],
    bar: Any,
) -> None:
    bar.update(1)
    common = {**_common(suite, item, "none", 1.0), "compress_s": 0.0}
    try:
        row, answer = _call_row(suite, item, target, item.prompt, common)
    except RuntimeError as exc:
        log.warning("%s: uncompressed call failed (%s); item skipped", item.id, exc)
        return
    base[item.id] = answer
    row["base_answer"] = answer
    row["agree"] = answer is not None
    rows.append(row)


def _noise_call(
    suite: Suite,
    item: BenchItem,
    target: CompletionTarget,
    base: dict[str, str | None],
    noise: list[dict[str, Any]],
    bar: Any,
) -> None:
    bar.update(1)
    if item.id not in base:
        return
    try:
        out = target.complete(suite.variant(item), max_tokens=suite.max_tokens, stop=suite.stop)
    except RuntimeError as exc:
        log.warning("%s: noise-floor call failed (%s)", item.id, exc)
        return
    ans = parse_answer(suite.kind, out.text)
    noise.append(
        {
            "suite": suite.name,
            "item": item.id,
            "agree": agree(suite.kind, base[item.id], ans),
            "correct": correct(suite.kind, ans, item.gold),
        }
    )


def _compressed_call(
    suite: Suite,
    item: BenchItem,
    m: Method,
    ratio: float,
    target: CompletionTarget,
    base: dict[str, str | None],
    rows: list[dict[str, Any]],
    bar: Any,
) -> None:
    bar.update(1)
    if item.id not in base:
        return
    common = {**_common(suite, item, m.name, ratio), "base_answer": base[item.id]}
    try:
        comp = m.timed(item, ratio)
        row, answer = _call_row(suite, item, target, comp.prompt, common)
        row["compress_s"] = comp.total_s
        row["agree"] = agree(suite.kind, base[item.id], answer)
    except Exception as exc:  # a broken method or call is a row, not a crash
        log.warning("%s %s@%s failed: %s", item.id, m.name, ratio, exc)
        row = {**common, "error": f"{type(exc).__name__}: {exc}"}
    rows.append(row)


def _screen_suite(
    suite: Suite,
    items: Sequence[BenchItem],
    methods: Sequence[Method],
    profile: SuiteProfile,
    target: CompletionTarget,
) -> list[dict[str, Any]]:
    """Screen-and-apply on the suite's items (the grid's calls: cache hits, no new calls)."""
    out: list[dict[str, Any]] = []
    if not items:
        return out
    for name in profile.screen.methods:
        m = next((m for m in methods if m.name == name and m.available), None)
        if m is None:
            continue
        plan = profile.screen
        if plan.budget < len(items):
            from dataclasses import replace

            plan = replace(plan, budget=len(items))
        for mode in plan.modes:
            try:
                rec = screen_task(
                    items, m, target, plan, max_tokens=suite.max_tokens, stop=suite.stop,
                    kind=suite.kind, mode=mode,
                )  # fmt: skip
            except Exception as exc:
                log.warning("screening %s with %s (%s) failed: %s", suite.name, m.name, mode, exc)
                continue
            rec["suite"] = suite.name
            out.append(rec)
    return out
