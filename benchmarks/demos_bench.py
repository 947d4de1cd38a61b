"""The seed paper's own experiments: demonstration selection and poisoned-demonstration
cleaning by Kernel SHAP attribution on the ONNX LM proxy (Liu et al., ACL 2026, §5).

Part (a), *selection*: for each task and repeat (a seeded draw of demonstrations, validation
requests and test questions, see :mod:`benchmarks.demos_tasks`), every method orders the
demonstrations from least to most useful; the least useful are removed one at a time while
the target keeps at least ``0.9 x`` its full-prompt accuracy on the test questions. The
metric is the share of demonstrations removed (the last rung before the first failure).
Methods:

- ``proxy``: exact Shapley / Kernel SHAP on the ONNX LM proxy (Qwen2.5-Coder-0.5B-Instruct);
- ``oracle``: the same procedure on the target itself (its log-probabilities via llama.cpp,
  or, with ``--base-url``, an OpenAI-compatible chat API's, read off its greedy reply);
- ``random``: a seeded random order;
- ``selfinfo``: LLMLingua-style self-information, the mean surprisal of a demonstration's
  tokens under the proxy LM in the full prompt (low = predictable = removed first);
- ``head``: the MiniLM query head's mean keep-probability (promptsieve's cheap fallback).

Part (b), *poisoned*: 16 demonstrations of a classification task with a share of flipped
labels; target accuracy after removing every negatively attributed demonstration (proxy,
oracle), after removing as many at random, and without cleaning; McNemar (exact binomial on
discordant test questions) for proxy vs random.

Part (c), *cost*: proxy seconds and tokens against the oracle's target calls and tokens.

Every target call goes through the SQLite call cache and every attribution through the demos
cache, so an interrupted run resumes; each finished (task, repeat) is appended to
``results/demos/<part>.jsonl`` at once.

    python -m benchmarks.demos_bench a --tasks sports_understanding,navigate --repeats 1
    python -m benchmarks.demos_bench b --repeats 1
    python -m benchmarks.demos_bench report
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from promptsieve.demos import (
    DemoAttribution,
    DemoAttributionConfig,
    DemoFormat,
    Demonstration,
    HeadDemoScorer,
    LMDemoScorer,
    attribute_demos,
)

from .demos_tasks import LAYOUTS, TASKS, Draw, draw, fmt_for, parse_answer

log = logging.getLogger("benchmarks.demos")

RESULTS = Path(__file__).resolve().parent / "results" / "demos"
METHODS = ("proxy", "oracle", "random", "selfinfo", "head")


# ----------------------------------------------------------------------------- components


class Bench:
    """Lazily built shared components (the proxy LM, the target, the head)."""

    def __init__(
        self, target_model: str, threads: int | None, int8: bool, base_url: str | None = None
    ) -> None:
        self.target_model = target_model
        self.base_url = base_url
        self.threads = threads
        self.int8 = int8
        self._lm: LMDemoScorer | None = None
        self._target: Any = None
        self._head: HeadDemoScorer | None = None

    @property
    def lm(self) -> LMDemoScorer:
        if self._lm is None:
            from promptsieve.proxy.lm import LMProxyConfig

            self._lm = LMDemoScorer(
                config=LMProxyConfig(intra_op_threads=self.threads, int8=self.int8, batch_size=4)
            )
        return self._lm

    @property
    def target(self) -> Any:
        if self._target is None:
            from .demos_target import ChatTarget, LlamaTarget
            from .target import CallCache

            cache = CallCache(_cache_path())
            if self.base_url:
                self._target = ChatTarget(self.base_url, self.target_model, cache=cache)
            else:
                self._target = LlamaTarget(self.target_model, cache=cache, n_threads=self.threads)
        return self._target

    @property
    def head(self) -> HeadDemoScorer:
        if self._head is None:
            self._head = HeadDemoScorer()
        return self._head


def _cache_path() -> Path:
    from promptsieve._paths import cache_dir

    return cache_dir() / "bench" / "demos-calls.sqlite3"


def answers(
    bench: Bench, d: Draw, fmt: DemoFormat, kept: Sequence[Demonstration]
) -> list[str | None]:
    """The target's greedy reply to each test question, parsed to one of ``d.choices``
    (``None`` where no choice is stated)."""
    out = []
    for q, _ in d.test:
        reply = bench.target.reply(fmt, kept, q)
        out.append(parse_answer(reply, d.choices))
    return out


def accuracy(bench: Bench, d: Draw, fmt: DemoFormat, kept: Sequence[Demonstration]) -> list[int]:
    """1/0 per test question: the target's greedy reply parsed against the gold answer."""
    got = answers(bench, d, fmt, kept)
    return [int(a == gold) for a, (_, gold) in zip(got, d.test, strict=True)]


def selfinfo_order(bench: Bench, d: Draw, fmt: DemoFormat) -> tuple[list[float], float]:
    """Mean surprisal (nats/token) of each demonstration in the full prompt, on the proxy."""
    lm = bench.lm.lm
    t0 = time.perf_counter()
    pieces = [lm.encode(fmt.lm_prefix())] + [lm.encode(fmt.lm_demo(x)) for x in d.demos]
    ids = np.concatenate(pieces)
    lp = lm.token_logprobs(ids)
    scores, pos = [], len(pieces[0])
    for p in pieces[1:]:
        seg = lp[pos : pos + len(p)]
        scores.append(float(-np.nanmean(seg)) if len(seg) else 0.0)
        pos += len(p)
    return scores, time.perf_counter() - t0


def orders(
    bench: Bench, d: Draw, fmt: DemoFormat, methods: Sequence[str], cfg: DemoAttributionConfig
) -> dict[str, dict[str, Any]]:
    """Per method: ``order`` (least useful first), ``values`` and cost figures."""
    from .demos_target import OracleScorer

    out: dict[str, dict[str, Any]] = {}
    n = len(d.demos)
    for m in methods:
        t0 = time.perf_counter()
        if m in ("proxy", "oracle", "head"):
            if m == "proxy":
                scorer: Any = bench.lm
            elif m == "oracle":
                scorer = OracleScorer(bench.target)
            else:
                scorer = bench.head
            before = dict(bench.target.counts) if m == "oracle" else {}
            attr: DemoAttribution = attribute_demos(
                d.demos, d.validation, fmt=fmt, config=cfg, scorer=scorer
            )
            after = dict(bench.target.counts) if m == "oracle" else {}
            cost = {k: after.get(k, 0) - before.get(k, 0) for k in after}
            out[m] = {
                "order": attr.ranking(),
                "values": list(attr.values),
                "seconds": attr.seconds,
                "cached": attr.cached,
                "evaluations": attr.evaluations,
                "proxy_tokens": attr.tokens if m == "proxy" else 0,
                "target": cost,
            }
        elif m == "random":
            rng = random.Random(f"{d.task}:{d.repeat}:random")
            order = list(range(n))
            rng.shuffle(order)
            out[m] = {"order": order, "values": None, "seconds": 0.0}
        elif m == "selfinfo":
            scores, secs = selfinfo_order(bench, d, fmt)
            order = sorted(range(n), key=lambda i: (scores[i], -i))
            out[m] = {"order": order, "values": scores, "seconds": secs}
        else:
            raise ValueError(f"unknown method {m}")
        out[m]["wall_s"] = time.perf_counter() - t0
        log.info("%s/%d %s: order %s (%.0f s)", d.task, d.repeat, m, out[m]["order"],
                 out[m]["wall_s"])  # fmt: skip
    return out


# --------------------------------------------------------------------------------- part (a)


def _add_half(rec: dict[str, Any], acc: Any) -> None:
    """Per method, the per-question correctness with half the demonstrations removed (the
    least useful ``n // 2`` by its order): a fixed rung on which methods are compared paired,
    question by question, which the share-removed score (it stops at the first noisy miss)
    cannot do."""
    n = rec["n_demos"]
    for o in rec["methods"].values():
        gone = set(o["order"][: n // 2])
        o["half_correct"] = acc(tuple(i for i in range(n) if i not in gone))
    rec["full_correct"] = acc(tuple(range(n)))


def _backfill_half(bench: Bench, path: Path) -> None:
    """Add ``half_correct`` to finished draws recorded before it existed (call cache)."""
    if not path.is_file():
        return
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if all("full_correct" in r for r in rows):
        return
    for r in rows:
        if "full_correct" in r:
            continue
        d = draw(r["task"], r["repeat"], r["n_demos"], r["n_val"], r["n_test"])
        fmt = fmt_for(TASKS[r["task"]], r.get("layout", "turn"))

        def acc(kept_idx: tuple[int, ...], d: Draw = d, fmt: DemoFormat = fmt) -> list[int]:
            return accuracy(bench, d, fmt, [d.demos[i] for i in kept_idx])

        _add_half(r, acc)
        log.info("a %s/%d: backfilled the half-removed rung", r["task"], r["repeat"])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_a(bench: Bench, args: argparse.Namespace) -> None:
    path = RESULTS / "a.jsonl"
    cfg = _config(args)
    _backfill_half(bench, path)
    for repeat, task in _todo(path, args.repeats, args.tasks, args.layout):
        t0 = time.perf_counter()
        d = draw(task, repeat, args.demos, args.val, args.test)
        fmt = fmt_for(TASKS[task], args.layout)
        ords = orders(bench, d, fmt, args.methods, cfg)
        acc_cache: dict[tuple[int, ...], list[int]] = {}

        def acc(
            kept_idx: tuple[int, ...],
            d: Draw = d,
            fmt: DemoFormat = fmt,
            cache: dict[tuple[int, ...], list[int]] = acc_cache,
        ) -> list[int]:
            if kept_idx not in cache:
                cache[kept_idx] = accuracy(bench, d, fmt, [d.demos[i] for i in kept_idx])
            return cache[kept_idx]

        n = len(d.demos)
        full = acc(tuple(range(n)))
        base = sum(full) / len(full)
        rec: dict[str, Any] = {
            "task": task, "repeat": repeat, "n_demos": n, "n_test": len(d.test),
            "n_val": len(d.validation), "target": bench.target_model, "layout": args.layout,
            "full_acc": base, "zero_shot_acc": None, "methods": {},
            "shap": cfg.resolved_method(n), "samples": args.samples,
        }  # fmt: skip
        for m, o in ords.items():
            removed, curve = 0, []
            for k in range(1, n + 1):
                gone = set(o["order"][:k])
                kept = tuple(i for i in range(n) if i not in gone)
                a = sum(acc(kept)) / len(d.test)
                curve.append(round(a, 4))
                if a + 1e-12 < 0.9 * base:
                    break
                removed = k
            rec["methods"][m] = {
                **{k: v for k, v in o.items() if k != "order"},
                "order": o["order"],
                "removed": removed,
                "share": removed / n,
                "curve": curve,
            }
        _add_half(rec, acc)
        if () in acc_cache:
            rec["zero_shot_acc"] = sum(acc_cache[()]) / len(d.test)
        rec["wall_s"] = time.perf_counter() - t0
        rec["target_counts"] = dict(bench.target.counts)
        _append(path, rec)
        log.info("a %s/%d: full %.2f, shares %s (%.0f s)", task, repeat, base,
                 {m: rec["methods"][m]["share"] for m in rec["methods"]},
                 rec["wall_s"])  # fmt: skip


# --------------------------------------------------------------------------------- part (b)


def poison(d: Draw, flip: float, repeat: int) -> tuple[list[Demonstration], list[int]]:
    """``d``'s demonstrations with ``round(flip * n)`` of them (seeded by task and part (b)'s
    ``repeat``) given a wrong label, and the indices flipped."""
    rng = random.Random(f"{d.task}:{repeat}:flip")
    n = len(d.demos)
    flipped = sorted(rng.sample(range(n), round(flip * n)))
    demos = list(d.demos)
    for i in flipped:
        others = [c for c in d.choices if c != demos[i].output]
        demos[i] = Demonstration(demos[i].input, rng.choice(others))
    return demos, flipped


def run_b(bench: Bench, args: argparse.Namespace) -> None:
    path = RESULTS / "b.jsonl"
    cfg = _config(args)
    for repeat, task in _todo(path, args.repeats, [args.poison_task], args.layout):
        t0 = time.perf_counter()
        d = draw(task, 100 + repeat, args.poison_demos, args.val, args.test)
        n = len(d.demos)
        demos, flipped = poison(d, args.flip, repeat)
        fmt = fmt_for(TASKS[task], args.layout)
        from .demos_target import OracleScorer

        rec: dict[str, Any] = {
            "task": task, "repeat": repeat, "n_demos": n, "flipped": flipped,
            "n_test": len(d.test), "n_val": len(d.validation), "target": bench.target_model,
            "layout": args.layout,
            "samples": args.samples, "shap": cfg.resolved_method(n), "methods": {},
        }  # fmt: skip
        poisoned = Draw(d.task, d.repeat, tuple(demos), d.validation, d.test, d.choices)

        def acc(
            kept: Sequence[int],
            p: Draw = poisoned,
            fmt: DemoFormat = fmt,
            demos: list[Demonstration] = demos,
        ) -> list[int]:
            return accuracy(bench, p, fmt, [demos[i] for i in kept])

        rec["methods"]["none"] = {"kept": list(range(n)), "correct": acc(range(n))}
        for m in ("proxy", "oracle"):
            if m not in args.methods:
                continue
            scorer: Any = bench.lm if m == "proxy" else OracleScorer(bench.target)
            before = dict(bench.target.counts)
            attr = attribute_demos(demos, d.validation, fmt=fmt, config=cfg, scorer=scorer)
            cost = {k: v - before.get(k, 0) for k, v in bench.target.counts.items()}
            removed = attr.negative()
            kept = [i for i in range(n) if i not in removed]
            rec["methods"][m] = {
                "values": list(attr.values), "removed": removed, "kept": kept,
                "correct": acc(kept), "seconds": attr.seconds, "cached": attr.cached,
                "evaluations": attr.evaluations, "target": cost if m == "oracle" else {},
                "proxy_tokens": attr.tokens if m == "proxy" else 0,
                "flipped_removed": len(set(removed) & set(flipped)),
            }  # fmt: skip
        if "proxy" in rec["methods"]:
            k = len(rec["methods"]["proxy"]["removed"])
            rr = random.Random(f"{task}:{repeat}:random")
            removed = sorted(rr.sample(range(n), k))
            kept = [i for i in range(n) if i not in removed]
            rec["methods"]["random"] = {
                "removed": removed, "kept": kept, "correct": acc(kept),
                "flipped_removed": len(set(removed) & set(flipped)),
            }  # fmt: skip
        rec["wall_s"] = time.perf_counter() - t0
        _append(path, rec)
        log.info("b %s/%d: %s (%.0f s)", task, repeat,
                 {m: sum(v["correct"]) for m, v in rec["methods"].items()},
                 rec["wall_s"])  # fmt: skip


# ---------------------------------------------------------------------------------- probe


def run_probe(bench: Bench, args: argparse.Namespace) -> None:
    """Does the target use the demonstrations? Per task, repeat 0's draw: accuracy on the
    test questions with all demonstrations and with none (``results/demos/probe.jsonl``)."""
    for task in args.tasks:
        d = draw(task, 0, args.demos, args.val, args.test)
        fmt = fmt_for(TASKS[task], args.layout)
        full = accuracy(bench, d, fmt, list(d.demos))
        zero = accuracy(bench, d, fmt, [])
        rec = {
            "task": task, "n_demos": len(d.demos), "n_test": len(d.test),
            "target": bench.target_model, "layout": args.layout, "full_correct": full,
            "zero_correct": zero,
        }  # fmt: skip
        _append(RESULTS / "probe.jsonl", rec)
        log.info("probe %s: %d/%d with demonstrations, %d/%d without", task, sum(full),
                 len(full), sum(zero), len(zero))  # fmt: skip


def run_poison_probe(bench: Bench, args: argparse.Namespace) -> None:
    """Do flipped labels hurt the target? Per task, part (b)'s repeat-0 draw: accuracy on the
    test questions with the clean demonstrations, with the poisoned ones, and with none
    (``results/demos/poison_probe.jsonl``). Part (b) can only separate cleaning methods on
    a task where the poisoned accuracy is clearly below the clean one."""
    for task in args.tasks:
        d = draw(task, 100, args.poison_demos, args.val, args.test)
        demos, flipped = poison(d, args.flip, 0)
        fmt = fmt_for(TASKS[task], args.layout)
        gold = [g for _, g in d.test]
        rec: dict[str, Any] = {
            "task": task, "n_demos": len(d.demos), "flipped": flipped, "n_test": len(d.test),
            "target": bench.target_model, "layout": args.layout, "gold": gold,
            "last_label": {"clean": d.demos[-1].output, "poisoned": demos[-1].output},
        }  # fmt: skip
        for name, kept in (("clean", list(d.demos)), ("poisoned", demos), ("zero", [])):
            got = answers(bench, d, fmt, kept)
            rec[f"{name}_answers"] = got
            rec[f"{name}_correct"] = [int(a == g) for a, g in zip(got, gold, strict=True)]
        _append(RESULTS / "poison_probe.jsonl", rec)
        log.info("poison probe %s: clean %d, poisoned %d, none %d of %d", task,
                 sum(rec["clean_correct"]), sum(rec["poisoned_correct"]),
                 sum(rec["zero_correct"]), len(d.test))  # fmt: skip


# ------------------------------------------------------------------------------- fidelity


def run_fidelity(bench: Bench, args: argparse.Namespace) -> None:
    """Proxy vs oracle attribution on the same draws (no accuracy rungs): rank agreement of
    the Shapley values, and what each cost (proxy seconds/tokens, oracle target calls)."""
    from scipy.stats import kendalltau, spearmanr

    path = RESULTS / "fidelity.jsonl"
    cfg = _config(args)
    for repeat, task in _todo(path, args.repeats, args.tasks, args.layout):
        d = draw(task, repeat, args.demos, args.val, args.test)
        ords = orders(bench, d, fmt_for(TASKS[task], args.layout), ["proxy", "oracle"], cfg)
        p, o = ords["proxy"]["values"], ords["oracle"]["values"]
        rec = {
            "task": task, "repeat": repeat, "n_demos": len(d.demos), "n_val": args.val,
            "shap": cfg.resolved_method(len(d.demos)), "samples": args.samples,
            "target": bench.target_model, "layout": args.layout,
            "spearman": float(spearmanr(p, o)[0]), "kendall": float(kendalltau(p, o)[0]),
            "same_least_useful": ords["proxy"]["order"][0] == ords["oracle"]["order"][0],
            "methods": ords,
        }  # fmt: skip
        _append(path, rec)
        log.info("fidelity %s/%d: spearman %.2f", task, repeat, rec["spearman"])


# --------------------------------------------------------------------------------- timing


def run_timing(bench: Bench, args: argparse.Namespace) -> None:
    """Attribution time of one 8-demonstration task on the proxy, cache off."""
    d = draw(args.tasks[0], 0, 8, args.val, 1)
    fmt = fmt_for(TASKS[d.task], args.layout)
    cfg = DemoAttributionConfig(
        cache=False, max_validation=args.val, method=args.method, samples=args.samples
    )
    lm = bench.lm
    t0 = time.perf_counter()
    c0 = time.process_time()
    _ = lm.lm
    load_s = time.perf_counter() - t0
    attr = attribute_demos(d.demos, d.validation, fmt=fmt, config=cfg, scorer=lm)
    rec = {
        "task": d.task, "n_demos": 8, "n_val": len(d.validation), "method": attr.method,
        "coalitions": attr.evaluations, "seconds": attr.seconds, "load_s": load_s,
        "cpu_s": time.process_time() - c0,
        "proxy_tokens": attr.tokens, "provider": lm.lm.provider, "int8": bench.int8,
        "proxy": lm.lm.fingerprint,
        "threads": bench.threads, "time": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
    _append(RESULTS / "timing.jsonl", rec)
    print(json.dumps(rec))


# ------------------------------------------------------------------------------- helpers


def _config(args: argparse.Namespace) -> DemoAttributionConfig:
    return DemoAttributionConfig(samples=args.samples, max_validation=args.val, method=args.method)


def _todo(path: Path, repeats: int, tasks: Sequence[str], layout: str) -> Iterator[tuple[int, str]]:
    """(repeat, task) pairs, repeat-major, not yet recorded in ``path`` for ``layout`` (runs
    resume)."""
    done = _done(path)
    for repeat in range(repeats):
        for task in tasks:
            if (task, repeat, layout) not in done:
                yield repeat, task


def _done(path: Path) -> set[tuple[str, int, str]]:
    if not path.is_file():
        return set()
    out = set()
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.add((r["task"], int(r["repeat"]), r.get("layout", "turn")))
    return out


def _append(path: Path, rec: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(rec) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.demos_bench")
    ap.add_argument(
        "part", choices=("a", "b", "probe", "poison-probe", "fidelity", "timing", "report")
    )
    ap.add_argument("--tasks", default="sports_understanding,navigate,snarks,"
                    "date_understanding,logical_deduction_three_objects")  # fmt: skip
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--demos", type=int, default=8)
    ap.add_argument("--val", type=int, default=3)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--samples", type=int, default=1000, help="Kernel SHAP coalitions")
    ap.add_argument(
        "--target", default="qwen2.5-coder-1.5b-instruct",
        help="an embedded GGUF (llama.cpp in-process), or with --base-url the API's model name",
    )  # fmt: skip
    ap.add_argument(
        "--base-url", default=None,
        help="an OpenAI-compatible chat API as the target (key: $OPENAI_API_KEY; needs --out); "
        "the oracle reads log-probabilities off its greedy reply (demos_target.ChatTarget)",
    )  # fmt: skip
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--int8", action="store_true", help="int8 LM proxy")
    ap.add_argument("--poison-task", default="sports_understanding")
    ap.add_argument("--poison-demos", type=int, default=16)
    ap.add_argument("--flip", type=float, default=0.3)
    ap.add_argument("--method", default="auto", choices=("auto", "exact", "kernel"))
    ap.add_argument(
        "--layout", default="turn", choices=LAYOUTS,
        help="demonstrations in one user message (turn) or as message pairs (turns)",
    )  # fmt: skip
    ap.add_argument("--out", type=Path, default=None, help="results folder")
    args = ap.parse_args(argv)
    if args.base_url and args.out is None:
        ap.error("--base-url needs --out DIR: another target's draws go to a results folder "
                 "of their own (results/demos/ holds the embedded Qwen target's)")  # fmt: skip
    if args.out is not None:
        global RESULTS
        RESULTS = args.out
    args.tasks = [t for t in args.tasks.split(",") if t]
    args.methods = [m for m in args.methods.split(",") if m]
    for t in args.tasks:
        if t not in TASKS:
            ap.error(f"unknown task {t}; choose from {sorted(TASKS)}")
    if not 0.25 <= args.flip <= 0.4 and args.part == "b":
        log.warning("--flip %.2f is outside the protocol's 25-40 %%", args.flip)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.part == "report":
        from .demos_report import main as report_main

        report_main(RESULTS)
        return
    bench = Bench(args.target, args.threads, args.int8, args.base_url)
    parts = {
        "a": run_a, "b": run_b, "probe": run_probe, "poison-probe": run_poison_probe,
        "fidelity": run_fidelity,
        "timing": run_timing,
    }  # fmt: skip
    parts[args.part](bench, args)


if __name__ == "__main__":
    main(sys.argv[1:])
