"""Which scorer should ``Compressor()`` use by default? Target-free checks on the suites the
multi-document QA figures do not cover: needles, few-shot (BBH) and GSM8K prompts, plus
multi-document QA sent the way a user sends it (one string).

Usage::

    python -m benchmarks.default_scorer [--suites gsm8k,bbh,needles,multidoc,bbh_cot]
        [--methods head,sentence-c2f,default] [--ratios 0.5,0.33,0.25]
        [--needle-sizes 1000,2000] [--needles-per-size 25] [--bbh-per-task 4]
        [--bbh-cot-per-task 2] [--gsm8k-orders 3] [--multidoc-items 30]
        [--out benchmarks/results/default_scorer]

Each prompt goes to ``Compressor(CompressorConfig(...)).compress(prompt, ratio=r)`` as one
string, exactly as a user's call does: the SDK's own segmentation finds the demonstrations
and the final question (nothing is pre-protected by the benchmark), and the budget is
counted with the SDK's default counter (``model=None``). Methods:

* ``head`` — the default before the switch: ``CompressorConfig(scorer="head")`` (word path);
* ``sentence-c2f`` — ``CompressorConfig(scorer="sentence", coarse_to_fine=True)`` for every
  part, demonstrations included;
* ``sentence`` — ``CompressorConfig(scorer="sentence")`` (word path);
* ``default`` — ``CompressorConfig()`` as it stands when the script runs.

Suites (all seeded, built from installed packages; no target model is called):

* ``needles`` — ``benchmarks.data.needle_items`` (RULER multi-key "special magic number",
  4 needles per haystack of pydoc/stdlib prose), ``--needle-sizes`` tokens.
* ``bbh`` / ``bbh_cot`` — ``benchmarks.bigbench.bbh_task_items`` for every BBH task that
  BIG-bench holds questions for: lm-eval's 3-shot prompt (direct / chain-of-thought) and
  ``--bbh-per-task`` seeded BIG-bench questions.
* ``gsm8k`` — lm-eval's GSM8K 8-shot chain-of-thought prompt: each of the 8 exemplars held
  out in turn as the question, the other 7 as demonstrations, in ``--gsm8k-orders`` seeded
  orders (the first is lm-eval's own order). Only 8 distinct questions: rates are clustered.
* ``multidoc`` — ``benchmarks.bigbench.multidoc_raw("test", 1000, n)``: the multi-document
  QA test articles, documents + instruction + question in one string.

Per prompt and ratio (booleans, so each is a rate with a Wilson 95 % interval and a paired
exact McNemar test of every method against ``head``):

* ``question``: the final question block (for needles and multi-document QA with its
  "Answer:" cue / instruction) survives word for word (whitespace-normalised);
* ``guard``: the sieve's instance guard would let the compression through: the
  compression's own similarity (``Compression.passage_similarity``, the cosine the sieve
  tests: over the kept passages, see ``benchmarks/guard_calibration.py``) ≥ 0.8, ``GateConfig()``'s
  ``guard_threshold`` (below it the default sieve sends the original);
* needles: ``answer`` (the asked number is still in the prompt), ``bound`` (the asked key
  and its number still in one sentence) and ``needle`` (the whole needle sentence);
* multi-document QA: ``answer``, the gold answer still in the prompt (SQuAD-normalised);
* few-shot: ``clean`` — the question is intact and every demonstration is either kept
  whole or dropped whole (none thinned); ``demos_whole`` — all kept whole; ``labels`` —
  every demonstration that is not dropped whole still shows its answer the way the target
  must copy it (direct: ``A: (B)``; chain of thought and GSM8K: the closing "the answer is
  X." sentence), which is what lm-eval's regexes and ``benchmarks.stats.parse_answer`` read
  off the target's reply. Demonstrations are the lm-eval exemplars, found by their text.

The main scorer's token scores are memoised per prompt (the scorers are deterministic), so
every ratio after the first reuses them: the outputs are the ones an uncached call
produces, and ``score ms`` is the first ratio's scoring time (a loaded 2-core machine:
compare methods within one run only). Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._results import write_results
from .answer_retention import retained
from .stats import mcnemar, wilson

log = logging.getLogger("default_scorer")

DEFAULT_OUT = Path("benchmarks/results/default_scorer")
METHODS: dict[str, dict[str, Any]] = {
    "head": {"scorer": "head", "coarse_to_fine": False},
    "sentence-c2f": {"scorer": "sentence", "coarse_to_fine": True},
    "sentence": {"scorer": "sentence", "coarse_to_fine": False},
    "default": {},
}
NEEDLE_METRICS = ("answer", "bound", "needle", "question", "guard")
FEWSHOT_METRICS = ("clean", "labels", "question", "demos_whole", "guard")
QA_METRICS = ("answer", "question", "guard")
#: ``GateConfig().guard_threshold``: the sieve's instance guard sends the original below it
GUARD = 0.8


def _metrics(suite: str) -> tuple[str, ...]:
    if suite == "needles":
        return NEEDLE_METRICS
    return QA_METRICS if suite == "multidoc" else FEWSHOT_METRICS


@dataclass(frozen=True)
class Prompt:
    """One prompt of a suite: ``demos`` are the demonstration texts in prompt order, ``labels``
    the answer text each must keep visible; needles: ``needle`` is the asked sentence."""

    suite: str
    id: str
    prompt: str
    question: str
    demos: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    answer: str = ""
    needle: str = ""


def _ws(text: str) -> str:
    return " ".join(text.split())


class _Memo:
    """A scorer that remembers its last result (same text, question and units → same scores)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._key: object = None
        self._val: Any = None

    def __getattr__(self, name: str) -> Any:  # name, fingerprint, pool ...
        return getattr(self._inner, name)

    def score(self, text: str, *, question: str | None = None, units: Any = None) -> Any:
        key = (text, question, None if units is None else tuple(map(tuple, units)))
        if key != self._key:
            self._val = self._inner.score(text, question=question, units=units)
            self._key = key
        return self._val


class _Method:
    def __init__(self, name: str) -> None:
        from promptsieve.compressor import Compressor, CompressorConfig

        cfg = CompressorConfig(**METHODS[name])
        plain = Compressor(cfg)
        self.memo = _Memo(plain.scorer)
        self.comp = Compressor(cfg, proxy=plain.proxy, scorer=self.memo)
        self.name = name
        self.config = {"scorer": cfg.scorer, "coarse_to_fine": cfg.coarse}
        self.fingerprint = self.comp.fingerprint
        self.comp.compress("Warm-up so that loading is not timed. " * 4, ratio=0.5)

    def compress(self, text: str, ratio: float) -> tuple[str, float, float | None]:
        """(compressed prompt, seconds spent scoring, guard similarity); the scoring time is
        the real one on a prompt's first ratio only (then the memoised scores are reused)."""
        r = self.comp.compress(text, ratio=ratio)
        return str(r.prompt), float(r.timings.get("score", 0.0)), r.passage_similarity


# -- suites -----------------------------------------------------------------------------------


def _label_of(kind: str, target: str) -> str:
    """What of a demonstration's answer the target copies: direct ``A: (B)``; chain of thought
    and GSM8K the closing "the answer is X." sentence (lm-eval's extraction regexes)."""
    if kind == "direct":
        return target
    m = re.search(r"[^.\n]*\bthe answer is\b[^\n]*$", target.strip(), flags=re.I)
    return m.group(0).strip() if m else target.strip().splitlines()[-1]


def needle_prompts(sizes: Sequence[int], per_size: int) -> list[Prompt]:
    from .data import NeedleConfig, needle_items

    items = needle_items(NeedleConfig(sizes=tuple(sizes), per_size=per_size, needles=4, seed=0))
    by_size = [[i for i in items if i.task == f"niah_{s / 1000:g}k"] for s in sizes]
    out: list[Prompt] = []
    for group in zip(*by_size, strict=True):  # interleave the sizes: partial runs stay mixed
        for it in group:
            m = re.search(
                r"One of the special magic numbers for \w+ is: " + it.gold + r"\.", it.prompt
            )
            assert m is not None, it.id
            out.append(
                Prompt("needles", it.id, it.prompt, it.question, answer=it.gold, needle=m.group(0))
            )
    return out


def bbh_prompts(cot: bool, per_task: int) -> list[Prompt]:
    from .bigbench.bbh import BBH_TASKS, _prompt, bbh_task_items

    suite = "bbh_cot" if cot else "bbh"
    out: list[Prompt] = []
    for task in BBH_TASKS:
        try:
            items = bbh_task_items(task, cot=cot, n=per_task, seed=0)
            fs = _prompt(task, cot)
        except Exception as exc:  # a task BIG-bench does not hold in this form
            log.warning("%s %s skipped: %s", suite, task, exc)
            continue
        kind = "cot" if cot else "direct"
        demos = tuple(q + fs.target_delimiter + a for q, a in fs.exemplars)
        labels = tuple(
            ("A:" + fs.target_delimiter + a) if kind == "direct" else _label_of(kind, a)
            for _, a in fs.exemplars
        )
        for it in items:
            if not all(_ws(d) in _ws(it.prompt) for d in demos):
                log.warning("%s: demonstrations not found verbatim; skipped", it.id)
                continue
            out.append(Prompt(suite, it.id, it.prompt, it.question, demos, labels))
    return out


def gsm8k_prompts(orders: int) -> list[Prompt]:
    from .data import load_gsm8k_prompt

    p = load_gsm8k_prompt()
    k = len(p.exemplars)
    out: list[Prompt] = []
    for o in range(orders):
        for held in range(k):
            demos = [i for i in range(k) if i != held]
            if o:
                random.Random(f"gsm8k-order:{held}:{o}").shuffle(demos)
            prompt, question = p.render(demos, held)
            texts = tuple(p.exemplars[i][0] + p.target_delimiter + p.exemplars[i][1] for i in demos)
            labels = tuple(_label_of("gsm8k", p.exemplars[i][1]) for i in demos)
            out.append(Prompt("gsm8k", f"gsm8k#{held}.{o}", prompt, question, texts, labels))
    return out


def multidoc_prompts(n: int) -> list[Prompt]:
    """Multi-document QA test items (~1k tokens), as one string the way a user sends them."""
    from .bigbench.multidoc import multidoc_raw

    out = []
    for raw in multidoc_raw("test", 1000, n, 0):
        it = raw.render()
        out.append(Prompt("multidoc", it.id, it.prompt, it.question, answer=raw.answer))
    return out


# -- measuring --------------------------------------------------------------------------------


def measure(p: Prompt, out: str) -> dict[str, bool]:
    """The booleans of one compressed prompt (see the module docstring)."""
    o = _ws(out)
    m = {"question": _ws(p.question) in o}
    if p.suite == "multidoc":
        m["answer"] = retained(p.answer, out)
        return m
    if p.suite == "needles":
        m["answer"] = p.answer in out
        key = re.search(r"for (\w+) is:", p.needle)
        assert key is not None
        # the asked key and its number still in one sentence, in that order
        m["bound"] = bool(re.search(rf"\b{key.group(1)}\b[^.\n]{{0,80}}{p.answer}", out))
        m["needle"] = _ws(p.needle) in o
        return m
    whole = [_ws(d) in o for d in p.demos]
    # a demonstration is gone when not one of its lines (≥ 12 chars) survives word for word
    gone = [
        not w and not any(_ws(ln) in o for ln in d.splitlines() if len(ln.strip()) >= 12)
        for d, w in zip(p.demos, whole, strict=True)
    ]
    m["demos_whole"] = all(whole)
    m["clean"] = m["question"] and all(w or g for w, g in zip(whole, gone, strict=True))
    m["labels"] = all(g or _ws(lab) in o for lab, g in zip(p.labels, gone, strict=True))
    m["n_whole"] = sum(whole)  # type: ignore[assignment]
    m["n_gone"] = sum(gone)  # type: ignore[assignment]
    return m


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .baselines import count

    ratios = [float(r) for r in args.ratios.split(",")]
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    methods = {n: _Method(n) for n in names}
    prompts: list[Prompt] = []
    for s in suites:
        if s == "needles":
            sizes = [int(x) for x in args.needle_sizes.split(",")]
            prompts += needle_prompts(sizes, args.needles_per_size)
        elif s == "bbh":
            prompts += bbh_prompts(False, args.bbh_per_task)
        elif s == "bbh_cot":
            prompts += bbh_prompts(True, args.bbh_cot_per_task)
        elif s == "gsm8k":
            prompts += gsm8k_prompts(args.gsm8k_orders)
        elif s == "multidoc":
            prompts += multidoc_prompts(args.multidoc_items)
        else:
            raise SystemExit(f"unknown suite {s!r}")
    log.info(
        "%d prompts: %s", len(prompts), {s: sum(p.suite == s for p in prompts) for s in suites}
    )
    from promptsieve.segment import segment

    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for p in prompts:
        seg = segment(p.prompt)
        row: dict[str, Any] = {
            "suite": p.suite,
            "id": p.id,
            "tokens": count(p.prompt),
            "demos_found": len(seg.demos),
            "question_found": seg.question is not None,
        }
        for name, meth in methods.items():
            for r in ratios:
                out, score_s, sim = meth.compress(p.prompt, r)
                cell: dict[str, Any] = measure(p, out)
                cell["ratio"] = count(out) / row["tokens"] if row["tokens"] else 1.0
                cell["similarity"] = sim
                # what the default sieve's instance guard does with it (None: nothing dropped)
                cell["guard"] = sim is None or sim >= GUARD
                if r == ratios[0]:
                    row[f"{name}|score_ms"] = 1000 * score_s
                row[f"{name}@{r}"] = cell
        rows.append(row)
        if len(rows) % 5 == 0:
            log.info("%d/%d prompts (%.0f s)", len(rows), len(prompts), time.perf_counter() - t0)
            _write(args, names, ratios, suites, methods, rows)
    return _write(args, names, ratios, suites, methods, rows)


def _write(
    args: argparse.Namespace,
    names: list[str],
    ratios: list[float],
    suites: list[str],
    methods: dict[str, _Method],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    tests: dict[str, Any] = {}
    for s in suites:
        sub = [x for x in rows if x["suite"] == s]
        if not sub:
            continue
        metrics = _metrics(s)
        for r in ratios:
            for name in names:
                vals = [x[f"{name}@{r}"] for x in sub]
                cell: dict[str, Any] = {"n": len(vals)}
                for met in metrics:
                    k = sum(bool(v[met]) for v in vals)
                    cell[met] = {
                        "k": k,
                        "rate": k / len(vals),
                        "wilson95": list(wilson(k, len(vals))),
                    }
                cell["ratio_mean"] = float(np.mean([v["ratio"] for v in vals]))
                cell["score_ms_mean"] = float(
                    np.mean([x.get(f"{name}|score_ms", np.nan) for x in sub])
                )
                cells[f"{s}|{name}|{r}"] = cell
                if name != "head" and "head" in names:
                    tests[f"{s}|{name}|{r}"] = {
                        met: mcnemar(
                            [bool(x[f"{name}@{r}"][met]) for x in sub],
                            [bool(x[f"head@{r}"][met]) for x in sub],
                        )
                        for met in metrics
                    }
    out = {
        "command": "python -m benchmarks.default_scorer " + " ".join(sys.argv[1:]),
        "methods": {n: {**m.config, "fingerprint": m.fingerprint} for n, m in methods.items()},
        "prompts": {s: sum(x["suite"] == s for x in rows) for s in suites},
        "demos_found": {s: [x["demos_found"] for x in rows if x["suite"] == s] for s in suites},
        "cells": cells,
        "vs_head": tests,
        "rows": rows,
    }
    write_results(args.out, out, _markdown(out, names, ratios, suites))
    return out


def _markdown(out: dict[str, Any], names: list[str], ratios: list[float], suites: list[str]) -> str:
    lines = [
        "# Default scorer: needles, few-shot (BBH) and GSM8K, target-free",
        "",
        f"`{out['command']}`",
        "",
        "Each cell: rate [Wilson 95 %]; the last column of a ratio block is the achieved share "
        "of the whole prompt (tiktoken gpt-4o). McNemar: exact, paired, each method against "
        "`head` (the old default) on the same prompts; `a/b` = only this method / only head.",
        "",
    ]
    for s in suites:
        if f"{s}|{names[0]}|{ratios[0]}" not in out["cells"]:
            continue
        metrics = _metrics(s)
        rows = [x for x in out["rows"] if x["suite"] == s]
        found = out["demos_found"][s]
        lines += [
            f"## {s}: {len(rows)} prompts, {np.mean([x['tokens'] for x in rows]):.0f} tokens "
            f"on average; demonstrations found by the SDK's segmenter: "
            f"{sum(1 for f in found if f)} of {len(found)} prompts",
            "",
            "| ratio | method | " + " | ".join(metrics) + " | prompt share | score ms |",
            "|---|---|" + "---:|" * (len(metrics) + 2),
        ]
        for r in ratios:
            for name in names:
                c = out["cells"][f"{s}|{name}|{r}"]
                vals = " | ".join(
                    f"{c[m]['rate']:.2f} [{c[m]['wilson95'][0]:.2f}, {c[m]['wilson95'][1]:.2f}]"
                    for m in metrics
                )
                lines.append(
                    f"| {r} | {name} | {vals} | {c['ratio_mean']:.2f} | {c['score_ms_mean']:.0f} |"
                )
        lines.append("")
        for r in ratios:
            for name in names:
                t = out["vs_head"].get(f"{s}|{name}|{r}")
                if t:
                    lines.append(
                        f"- ratio {r}, {name} vs head: "
                        + "; ".join(
                            f"{m} {t[m]['a_only']}/{t[m]['b_only']} p={t[m]['p']:.3g}"
                            for m in metrics
                        )
                    )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m benchmarks.default_scorer")
    ap.add_argument("--suites", default="gsm8k,bbh,needles,multidoc,bbh_cot")
    ap.add_argument("--methods", default="head,sentence-c2f,default")
    ap.add_argument("--ratios", default="0.5,0.33,0.25")
    ap.add_argument("--needle-sizes", default="1000,2000")
    ap.add_argument("--needles-per-size", type=int, default=25)
    ap.add_argument("--bbh-per-task", type=int, default=4)
    ap.add_argument("--bbh-cot-per-task", type=int, default=2)
    ap.add_argument("--gsm8k-orders", type=int, default=3)
    ap.add_argument("--multidoc-items", type=int, default=30)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
