"""Run the benchmark: methods × keep ratios × items against a real target.

    promptsieve bench --profile quick                 # CI: Gemma 3 270M, minutes
    promptsieve bench --profile standard              # Qwen2.5-Coder-0.5B-Instruct
    promptsieve bench --profile headline              # Qwen2.5-Coder-1.5B-Instruct, resumable
    promptsieve bench --profile standard --base-url https://api.openai.com/v1 \\
        --model gpt-4o-mini --out benchmarks/results/gpt-4o-mini   # key from $OPENAI_API_KEY

``quick``, ``standard`` and ``headline`` run the BIG-bench suites (:mod:`benchmarks.suites`:
multi-document QA on held-out articles, BBH tasks with BIG-bench's full question sets,
vitaminc); ``legacy-quick``, ``full`` and ``exhaustive`` are the earlier lm-eval-rotation
profiles on Gemma 3 270M, kept for the results history.

(``python -m benchmarks.run`` from a checkout is the same.) Without ``--base-url`` the
profile's embedded target is started (and stopped) here. Every target call is cached
(``bench/calls.sqlite3`` under promptsieve's cache dir), so an interrupted or repeated run
only pays for calls it has not made yet. Writes ``results.json``, ``report.md`` and PNG
plots into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from promptsieve import ConfigError

from .baselines import METHOD_NAMES, Method, build_methods, context_ratio, count
from .bigbench import data_source
from .data import (
    BenchItem,
    Kind,
    NeedleConfig,
    answers_agree,
    bbh_items,
    extract_answer,
    gsm8k_items,
    needle_items,
)
from .report import write_report
from .screening import ScreenPlan, screen_task
from .suites import PROFILES as SUITE_PROFILES
from .suites import SuiteProfile, limit, run_suites
from .target import (
    DEFAULT_CACHE,
    LOCAL_IDENTITY,
    CallCache,
    CompletionTarget,
    LocalLogprobs,
    LogprobSource,
    local_gguf,
    local_identity,
    local_target,
)

__all__ = ["PROFILES", "STOPS", "Profile", "main", "run"]

log = logging.getLogger(__name__)

#: Stop sequences per kind, as in the lm-eval task files (needles: one line).
STOPS: dict[str, tuple[str, ...]] = {
    "cot": ("</s>", "Q", "\n\n"),
    "direct": ("</s>", "Q", "\n\n"),
    "gsm8k": ("Q:", "</s>", "<|im_end|>"),
    "needle": ("\n",),
}
#: The legacy lm-eval profiles' methods (the suite profiles name theirs in :mod:`.suites`).
LEGACY_METHODS = ("none", "random", "truncate", "selfinfo", "attribution", "head", "sentence")
PRICES = Path(__file__).resolve().parent / "prices.json"
#: lm-eval's 27 BBH tasks (short names), alphabetical.
BBH_TASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa",
    "dyck_languages", "formal_fallacies", "geometric_shapes", "hyperbaton",
    "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two",
    "navigate", "object_counting", "penguins_in_a_table", "reasoning_about_colored_objects",
    "ruin_names", "salient_translation_error_detection", "snarks", "sports_understanding",
    "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects",
    "web_of_lies", "word_sorting",
)  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """What one benchmark run covers; ``None`` task lists mean every task."""

    name: str
    ratios: tuple[float, ...]
    methods: tuple[str, ...] = LEGACY_METHODS
    cot_tasks: tuple[str, ...] | None = None
    cot_per_task: int | None = None
    direct_tasks: tuple[str, ...] | None = None
    direct_per_task: int | None = None
    gsm8k: int | None = None  # None: all 8 rotations, 0: none
    needles: NeedleConfig = field(default_factory=NeedleConfig)
    max_tokens: dict[str, int] = field(
        default_factory=lambda: {"cot": 256, "direct": 8, "gsm8k": 192, "needle": 12}
    )
    screen: ScreenPlan = field(default_factory=ScreenPlan)
    #: extra seeded needle items per size, used only for screening (the test needs ≥ 30)
    screen_needles: int = 40
    screen_needle_sizes: tuple[int, ...] = (2000,)


PROFILES: dict[str, Profile] = {
    # The former CI profile: a few short prompts of every kind, two ratios, all methods, a
    # loose screening test.
    "legacy-quick": Profile(
        name="legacy-quick",
        ratios=(0.7, 0.4),
        # the attribution scorer needs one proxy pass per unit (minutes per 1k-token prompt
        # on 2 cores): its own tests cover it, the full profile benchmarks it
        methods=("none", "random", "truncate", "selfinfo", "head", "sentence"),
        cot_tasks=("sports_understanding",),  # the shortest chains of thought
        cot_per_task=1,
        direct_tasks=("sports_understanding", "navigate"),
        direct_per_task=1,
        gsm8k=1,
        needles=NeedleConfig(sizes=(1000, 1500), per_size=1, needles=3),
        max_tokens={"cot": 96, "direct": 8, "gsm8k": 128, "needle": 12},
        # a loose test (3 agreements pass a ratio) so that CI exercises screening end to end
        screen=ScreenPlan(methods=("head",), max_methods=1, tau=0.6, delta=0.3, ladder=(0.7, 0.4)),
        screen_needles=3,
        screen_needle_sizes=(300,),
    ),
    # By hand, committed (≈1.5 h on 2 CPU cores): every BBH task direct, every third BBH task
    # with chain of thought, half the GSM8K rotations, 2k/4k needles, three ratios over
    # 0.3–0.8; the attribution scorer is left out (minutes per prompt on 2 cores).
    "full": Profile(
        name="full",
        ratios=(0.8, 0.55, 0.3),
        methods=("none", "random", "truncate", "selfinfo", "head", "sentence"),
        cot_tasks=BBH_TASKS[::3],
        cot_per_task=1,
        direct_per_task=1,
        gsm8k=4,
        needles=NeedleConfig(sizes=(2000, 4000), per_size=3, needles=4),
        screen=ScreenPlan(methods=("sentence", "head", "truncate")),
    ),
    # For a bigger machine or a hosted target: every rotation, six ratios, every method.
    "exhaustive": Profile(
        name="exhaustive",
        ratios=(0.8, 0.7, 0.6, 0.5, 0.4, 0.3),
        needles=NeedleConfig(sizes=(2000, 4000, 7000), per_size=4, needles=4),
        screen=ScreenPlan(
            methods=("sentence", "head", "attribution", "selfinfo", "random", "truncate")
        ),
    ),
}


def load_items(profile: Profile) -> list[BenchItem]:
    items: list[BenchItem] = []
    items += needle_items(profile.needles)
    items += bbh_items(cot=False, tasks=profile.direct_tasks, per_task=profile.direct_per_task)
    items += bbh_items(cot=True, tasks=profile.cot_tasks, per_task=profile.cot_per_task)
    if profile.gsm8k != 0:
        items += gsm8k_items(profile.gsm8k)
    return items


def screening_items(profile: Profile, items: Sequence[BenchItem]) -> dict[str, list[BenchItem]]:
    """Task → samples to screen on: the task's items, plus extra needles for needle sizes."""
    tasks: dict[str, list[BenchItem]] = {}
    for it in items:
        tasks.setdefault(it.task, []).append(it)
    if profile.screen_needles:
        extra = needle_items(
            replace(
                profile.needles,
                sizes=profile.screen_needle_sizes,
                per_size=profile.screen_needles,
                seed=profile.needles.seed + 1,
            )
        )
        for it in extra:
            tasks.setdefault(it.task + "_screen", []).append(
                replace(it, task=it.task + "_screen", id=it.id + "_screen")
            )
    return tasks


@contextlib.contextmanager
def _target(args: argparse.Namespace, cache: CallCache) -> Iterator[CompletionTarget]:
    if args.base_url:
        key = os.environ.get(args.api_key_env)
        yield CompletionTarget(args.base_url, args.model, api_key=key, cache=cache, seed=args.seed)
        return
    with local_target() as (url, model):
        yield CompletionTarget(
            url, args.model or model, cache=cache, identity=LOCAL_IDENTITY, seed=args.seed
        )


def run(profile: Profile, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``profile``; returns the results dict (also written to ``args.out``)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache = CallCache(None if args.no_cache else args.cache)
    items = load_items(profile)
    names = tuple(args.methods.split(",")) if args.methods else profile.methods
    with _target(args, cache) as target:
        logprobs: LogprobSource = target
        if "selfinfo" in names and args.selfinfo_source == "local":
            logprobs = LocalLogprobs(cache=cache)
        methods = build_methods(names, logprobs, seed=args.seed, cache=cache)
        status = {m.name: {"ok": m.available, "reason": m.reason} for m in methods}
        for m in methods:
            if not m.available:
                log.warning("method %s unavailable: %s", m.name, m.reason)
        active = [m for m in methods if m.available]
        rows = _grid(items, active, profile, target, tqdm)
        screening = []
        plan = profile.screen
        if not args.no_screen:
            screening = _screen_all(profile, items, active, target, tqdm)
        calls = target.calls
    results: dict[str, Any] = {
        "meta": {
            "profile": profile.name,
            "target": args.base_url or "local llama.cpp (Gemma 3 270M Q4_K_M)",
            "model": target.model,
            "items": len(items),
            "ratios": list(profile.ratios),
            "runtime_s": time.perf_counter() - t0,
            "target_calls": calls,
            "cache_hits": cache.hits,
            "command": "promptsieve bench " + " ".join(shlex.quote(a) for a in args.argv),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "methods": status,
        "rows": rows,
        "screening": screening,
        "screen_plan": asdict(plan),
        "prices": json.loads(PRICES.read_text(encoding="utf-8")),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    write_report(results, out)
    cache.close()
    return results


def _grid(
    items: Sequence[BenchItem],
    methods: Sequence[Method],
    profile: Profile,
    target: CompletionTarget,
    tqdm: Any,
) -> list[dict[str, Any]]:
    compressing = [m for m in methods if m.name != "none"]
    total = len(items) * (1 + len(compressing) * len(profile.ratios))
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=total, desc=f"bench {profile.name}", unit="call", file=sys.stderr)
    for item in items:
        kind: Kind = item.kind
        mt, stop = profile.max_tokens[kind], STOPS[kind]
        try:
            base = target.complete(item.prompt, max_tokens=mt, stop=stop)
        except RuntimeError as exc:
            log.warning("%s: original call failed (%s); item skipped", item.id, exc)
            bar.update(1 + len(compressing) * len(profile.ratios))
            continue
        base_answer = extract_answer(kind, base.text)
        before = count(item.prompt)
        common = {
            "task": item.task,
            "item": item.id,
            "kind": kind,
            "gold": item.gold,
            "base_answer": base_answer,
            "tokens_before": before,
            "context_tokens": count(item.context),
            "server_tokens_before": base.prompt_tokens,
        }
        if any(m.name == "none" for m in methods):
            rows.append(
                {
                    **common,
                    "method": "none",
                    "ratio": 1.0,
                    "tokens_after": before,
                    "server_tokens_after": base.prompt_tokens,
                    "context_kept": 1.0,
                    "answer": base_answer,
                    "agree": base_answer is not None,
                    "correct": base_answer == item.gold,
                    "score_s": 0.0,
                    "compress_s": 0.0,
                    "target_s": base.latency_s,
                    "e2e_s": base.latency_s,
                    "error": None,
                }
            )
        bar.update(1)
        for m in compressing:
            for ratio in profile.ratios:
                rows.append(_one(item, m, ratio, target, mt, stop, common))
                bar.update(1)
    bar.close()
    return rows


def _one(
    item: BenchItem,
    m: Method,
    ratio: float,
    target: CompletionTarget,
    mt: int,
    stop: Sequence[str],
    common: dict[str, Any],
) -> dict[str, Any]:
    row: dict[str, Any] = {**common, "method": m.name, "ratio": ratio, "error": None}
    try:
        comp = m.timed(item, ratio)
        out = target.complete(comp.prompt, max_tokens=mt, stop=stop)
    except Exception as exc:  # a broken method or target call is a row, not a crash
        log.warning("%s %s@%s failed: %s", item.id, m.name, ratio, exc)
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    answer = extract_answer(item.kind, out.text)
    row.update(
        {
            "tokens_after": count(comp.prompt),
            "server_tokens_after": out.prompt_tokens,
            "context_kept": context_ratio(item, comp.prompt),
            "answer": answer,
            "agree": answers_agree(common["base_answer"], answer),
            "correct": answer == item.gold,
            "score_s": comp.score_s,
            "compress_s": comp.total_s,
            "target_s": out.latency_s,
            "e2e_s": comp.total_s + out.latency_s,
        }
    )
    return row


def _screen_all(
    profile: Profile,
    items: Sequence[BenchItem],
    methods: Sequence[Method],
    target: CompletionTarget,
    tqdm: Any,
) -> list[dict[str, Any]]:
    try:
        import promptsieve.fidelity  # noqa: F401
    except ImportError as exc:
        log.warning("screening skipped: %s", exc)
        return []
    plan = profile.screen
    chosen = [m for name in plan.methods for m in methods if m.name == name]
    chosen = chosen[: plan.max_methods or None]
    tasks = screening_items(profile, items)
    out: list[dict[str, Any]] = []
    for m in tqdm(chosen, desc="screening", unit="method", file=sys.stderr):
        for task, task_items in tasks.items():
            kind = task_items[0].kind
            try:
                out.append(
                    screen_task(
                        task_items,
                        m,
                        target,
                        profile.screen,
                        max_tokens=profile.max_tokens[kind],
                        stop=STOPS[kind],
                    )
                )
            except Exception as exc:
                log.warning("screening %s with %s failed: %s", task, m.name, exc)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from promptsieve.fidelity.ladder import LADDER_TESTS

    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="promptsieve bench",
        description="Tokens saved at what fidelity: every method x ratio x suite on a target, "
        "with Wilson intervals, McNemar tests, the noise floor and screening economics. "
        "Profiles quick (CI, Gemma 3 270M), standard (Qwen2.5-Coder-0.5B) and headline "
        "(Qwen2.5-Coder-1.5B) run BIG-bench suites and need the bigbench==1.0.0 sdist in "
        "$PROMPTSIEVE_REGISTRY_DIR or the cache (or $PROMPTSIEVE_BIGBENCH_DIR, unverified); "
        "legacy-quick, full and exhaustive are the earlier lm-eval prompt sets. Every call is "
        "cached, so a stopped run resumes (README: 'Benchmark').",
    )
    ap.add_argument(
        "--profile",
        choices=sorted({*PROFILES, *SUITE_PROFILES}),
        default="quick",
        help="default quick",
    )
    ap.add_argument(
        "--target-model",
        default=None,
        help="embedded target for the suite profiles (default: the profile's; one of "
        "gemma-3-270m, qwen2.5-coder-0.5b-instruct, qwen2.5-coder-1.5b-instruct)",
    )
    ap.add_argument("--n-threads", type=int, default=None, help="llama.cpp threads (local)")
    ap.add_argument(
        "--max-items", type=int, default=None, help="cap every suite at N items (prefix-stable)"
    )
    ap.add_argument(
        "--items",
        type=int,
        default=None,
        help="draw every suite at exactly N items: beyond the profile's size, the same draw "
        "extended (suite profiles; not with --max-items)",
    )
    ap.add_argument(
        "--skip-items",
        type=int,
        default=0,
        help="leave out each suite's first N items (continue a committed run on another "
        "machine; stack the two with benchmarks.merge_runs)",
    )
    ap.add_argument("--suites", default=None, help="comma list of suite names to run")
    ap.add_argument("--ratios", default=None, help="comma list of keep ratios (suite profiles)")
    ap.add_argument(
        "--offline",
        action="store_true",
        help="use cached target calls only (rebuild a report from a stopped run)",
    )
    ap.add_argument("--base-url", default=None, help="OpenAI-compatible /v1 URL (default: local)")
    ap.add_argument("--model", default=None, help="model name at --base-url")
    ap.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the key")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default benchmarks/results/<profile>, relative to the current "
        "folder: in a checkout, the committed results)",
    )
    ap.add_argument("--methods", default=None, help=f"comma list from {', '.join(METHOD_NAMES)}")
    ap.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="the call cache (SQLite; resumes runs)"
    )
    ap.add_argument(
        "--no-cache", action="store_true", help="no call cache: every call goes to the target"
    )
    ap.add_argument(
        "--no-screen", action="store_true", help="skip the screening runs (no screening economics)"
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="the target's sampling seed and the random baseline's"
    )
    ap.add_argument("--screen-tau", type=float, default=None, help="override the profile's τ")
    ap.add_argument("--screen-delta", type=float, default=None, help="override the profile's δ")
    ap.add_argument("--screen-methods", default=None, help="comma list (default: the profile's)")
    ap.add_argument(
        "--screen-ladder-test",
        choices=LADDER_TESTS,
        default=None,
        help="how the ladder's rungs share delta (promptsieve.fidelity.ScreenConfig.ladder_test)",
    )
    ap.add_argument(
        "--selfinfo-source",
        choices=("local", "echo"),
        default=None,
        help="log-probabilities for selfinfo: the local GGUF in-process, or the target's echo "
        "(default: local for the local target, echo otherwise)",
    )
    args = ap.parse_args(argv)
    if args.base_url and not args.model:
        ap.error("--base-url needs --model")
    if args.items is not None and args.profile not in SUITE_PROFILES:
        ap.error(f"--items needs a suite profile ({', '.join(sorted(SUITE_PROFILES))})")
    if args.skip_items and args.profile not in SUITE_PROFILES:
        ap.error(f"--skip-items needs a suite profile ({', '.join(sorted(SUITE_PROFILES))})")
    if args.skip_items and args.out is None:  # the default folder holds the run it continues
        ap.error(
            "--skip-items needs --out (a folder of its own, to merge with the run it continues)"
        )
    args.argv = argv
    args.out = args.out or Path("benchmarks/results") / args.profile
    args.selfinfo_source = args.selfinfo_source or ("echo" if args.base_url else "local")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.profile in SUITE_PROFILES:
        return _main_suites(ap, args)
    profile = PROFILES[args.profile]
    results = run(replace(profile, screen=_screen_plan(ap, args, profile.screen)), args)
    print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}")
    return results


def _screen_plan(
    ap: argparse.ArgumentParser, args: argparse.Namespace, plan: ScreenPlan
) -> ScreenPlan:
    """``plan`` with the --screen-tau/--screen-delta/--screen-methods overrides (checked; an
    explicit method list is screened whole)."""
    if args.screen_tau is not None:
        plan = replace(plan, tau=args.screen_tau)
    if args.screen_delta is not None:
        plan = replace(plan, delta=args.screen_delta)
    if args.screen_ladder_test:
        plan = replace(plan, ladder_test=args.screen_ladder_test)
    if args.screen_methods:
        plan = replace(plan, methods=tuple(args.screen_methods.split(",")), max_methods=None)
    if not (0 < plan.tau < 1 and 0 < plan.delta < 1):
        ap.error("--screen-tau and --screen-delta must be in (0, 1)")
    return plan


def _main_suites(ap: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    profile = SUITE_PROFILES[args.profile]
    if args.target_model:
        profile = replace(profile, model=args.target_model)
    profile = replace(profile, screen=_screen_plan(ap, args, profile.screen))
    if args.methods:
        profile = replace(profile, methods=tuple(args.methods.split(",")))
    try:
        profile = limit(
            profile,
            args.max_items,
            args.suites.split(",") if args.suites else None,
            skip=args.skip_items,
            items=args.items,
        )
        if args.ratios:
            ratios = tuple(float(r) for r in args.ratios.split(","))
            if not all(0 < r < 1 for r in ratios):
                raise ValueError("--ratios must be in (0, 1)")
            profile = replace(profile, ratios=ratios)
        # screening reads the grid's calls: its ladder is the run's ratios (conservative first)
        profile = replace(
            profile,
            screen=replace(profile.screen, ladder=tuple(sorted(profile.ratios, reverse=True))),
        )
    except ConfigError as exc:  # missing data (a ValueError too): one line, not the usage
        print(f"promptsieve bench: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as exc:
        ap.error(str(exc))
    from promptsieve.local import EMBEDDED_MODELS

    if not args.base_url and profile.model not in EMBEDDED_MODELS:
        ap.error(f"--target-model must be one of {sorted(EMBEDDED_MODELS)}")
    try:
        results = run_suite_profile(profile, args)
    except ConfigError as exc:
        print(f"promptsieve bench: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"wrote {args.out / 'results.json'} and {args.out / 'report.md'}")
    return results


def run_suite_profile(profile: SuiteProfile, args: argparse.Namespace) -> dict[str, Any]:
    """Run a suite profile against ``--base-url`` or its embedded target."""
    from promptsieve.local import EMBEDDED_MODELS, LocalTarget, LocalTargetConfig

    cache = CallCache(None if args.no_cache else args.cache)
    names = profile.methods
    meta: dict[str, Any] = {
        "command": "promptsieve bench " + " ".join(shlex.quote(a) for a in args.argv),
    }
    with contextlib.ExitStack() as stack:
        if args.base_url or args.offline:
            spec = EMBEDDED_MODELS.get(profile.model)
            local_model = not args.base_url and spec is not None
            target = CompletionTarget(
                args.base_url or "http://offline.invalid/v1",
                spec.name if local_model and spec else args.model,
                api_key=os.environ.get(args.api_key_env),
                cache=cache,
                identity=local_identity(profile.model) if local_model else None,
                seed=args.seed,
                chat=spec.instruct if local_model and spec else True,
                offline=args.offline,
            )
            tok_s = spec.prompt_tok_s if local_model and spec else 500.0
            label = (
                f"local llama.cpp ({spec.general_name}, Q4_K_M)"
                if local_model and spec
                else args.base_url
            )
            meta.update(target=label, model=target.model)
        else:
            spec = EMBEDDED_MODELS[profile.model]
            cfg = LocalTargetConfig(model=profile.model, n_threads=args.n_threads)
            local = stack.enter_context(LocalTarget.start(cfg))
            target = CompletionTarget(
                local.base_url,
                local.model,
                cache=cache,
                identity=local_identity(profile.model),
                seed=args.seed,
                chat=spec.instruct,
            )
            tok_s = spec.prompt_tok_s
            meta.update(target=f"local llama.cpp ({spec.general_name}, Q4_K_M)", model=spec.name)
        logprobs: LogprobSource = target
        if "selfinfo" in names and not args.base_url and not args.offline:
            logprobs = LocalLogprobs(
                local_gguf(profile.model), cache=cache, n_threads=args.n_threads
            )
        methods = build_methods(names, logprobs, seed=args.seed, cache=cache)
        for m in methods:
            if not m.available:
                log.warning("method %s unavailable: %s", m.name, m.reason)
        active = [m for m in methods if m.available]
        results = run_suites(
            profile,
            target,
            active,
            out=args.out,
            meta={**meta, **data_source()},
            tok_s=tok_s,
            screen=not args.no_screen,
        )
        results["methods"] = {m.name: {"ok": m.available, "reason": m.reason} for m in methods}
    results["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["meta"]["cache_hits"] = cache.hits
    results["prices"] = json.loads(PRICES.read_text(encoding="utf-8"))
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    from .suite_report import write_suite_report

    write_suite_report(results, args.out)
    cache.close()
    return results


if __name__ == "__main__":
    main()
