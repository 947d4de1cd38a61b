"""Answer retention on multi-document QA test articles: does the compressed context still
hold the gold answer? A target-free check of every method, at hundreds of items per cell.

Usage::

    python -m benchmarks.answer_retention [--items 100] [--sizes 1000,2000]
        [--ratios 0.8,0.5,0.33,0.25]
        [--methods random,truncate,head,sentence,sentence-c2f,relevance]  # also coarse, default
        [--out benchmarks/results/answer_retention]

Items: ``benchmarks.bigbench.multidoc_raw("test", size, n)`` — a disfl_qa question, its gold
passage and distractor passages from other *test* articles (split by article; the relevance
head never saw them). Each method compresses the documents at the ratio (tiktoken gpt-4o
tokens of the context, the question protected, exactly as ``benchmarks/baselines.py`` calls
the Compressor); an item is *retained* when the SQuAD-normalised gold answer is still a
substring of the normalised compressed context. Retention bounds what any target can answer
from the compressed prompt; it is not accuracy (a target may still misread kept text, and
the target's own answer is what screening checks).

Reports per cell the retention rate with a Wilson 95 % interval, the achieved context ratio,
scoring time, and an exact McNemar test of ``relevance`` against the best other method at
each ratio. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._results import write_results
from .stats import mcnemar, squad_normalize, wilson

log = logging.getLogger("answer_retention")

DEFAULT_OUT = Path("benchmarks/results/answer_retention")
DEFAULT_METHODS = ("random", "truncate", "head", "sentence", "sentence-c2f", "relevance")


def retained(answer: str, context: str) -> bool:
    gold = squad_normalize(answer)
    return bool(gold) and gold in squad_normalize(context)


def answer_sentence(raw: Any) -> str | None:
    """The gold passage's first sentence holding the answer (sentencex, as in training)."""
    from .bigbench.multidoc import sentences

    gold = squad_normalize(raw.answer)
    for s in sentences(raw.docs[raw.gold_index]):
        if gold and gold in squad_normalize(s):
            return s
    return None


class _Compressor:
    """A promptsieve Compressor called like ``benchmarks.baselines.ProjectMethod``."""

    def __init__(self, name: str, **config: Any) -> None:
        from promptsieve.compressor import Compressor, CompressorConfig
        from promptsieve.segment import SegmentConfig

        self.name = name
        self.comp = Compressor(
            CompressorConfig(
                model="gpt-4o", segment=SegmentConfig(protect_question=False), **config
            )
        )
        self.comp.compress("Warm-up so that loading is not timed.", ratio=0.5)

    def compress(self, context: str, question: str, ratio: float) -> tuple[str, float]:
        from promptsieve.prompt import Message, TextPart

        msg = Message("user", (TextPart(context), TextPart(question, True)))
        r = self.comp.compress([msg], ratio=ratio, question=question.strip())
        return r.prompt[0].parts[0].text, float(r.timings.get("score", 0.0))


def make_method(name: str) -> Any:
    from .baselines import RandomPrune, Truncate

    if name == "random":
        return RandomPrune(0)
    if name == "truncate":
        return Truncate()
    if name == "sentence-c2f":
        return _Compressor(name, scorer="sentence", coarse_to_fine=True)
    if name == "relevance-nothin":
        return _Compressor(name, scorer="relevance", word_thinning=False)
    if name in ("head", "sentence", "relevance", "attribution"):
        return _Compressor(name, scorer=name)
    if name in ("coarse", "default"):  # exactly as ``promptsieve bench`` runs them
        from .baselines import build_methods

        return build_methods([name], logprobs=None)[0]  # type: ignore[arg-type]  # no selfinfo
    raise ValueError(f"unknown method {name!r}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from .baselines import count
    from .bigbench.multidoc import multidoc_raw

    ratios = [float(r) for r in args.ratios.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods = {n: make_method(n) for n in names}
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for size in sizes:
        for raw in multidoc_raw("test", size, args.items, 0):
            item = raw.render()
            ctx_tokens = count(item.context)
            row: dict[str, Any] = {"id": item.id, "size": size, "gold_index": raw.gold_index}
            evidence = answer_sentence(raw)
            for name, m in methods.items():
                for r in ratios:
                    if isinstance(m, _Compressor):
                        kept, score_s = m.compress(item.context, item.question, r)
                    else:
                        c = m.timed(item, r)
                        kept, score_s = c.prompt[: len(c.prompt) - len(item.question)], c.score_s
                    row[f"{name}@{r}"] = {
                        "retained": retained(raw.answer, kept),
                        # the answer's whole sentence still there, word for word
                        "intact": (
                            evidence is not None
                            and squad_normalize(evidence) in squad_normalize(kept)
                        ),
                        "ratio": count(kept) / ctx_tokens if ctx_tokens else 1.0,
                        "score_ms": 1000 * score_s,
                    }
            rows.append(row)
            if len(rows) % 10 == 0:
                log.info("%d items (%.0f s)", len(rows), time.perf_counter() - t0)
                _write(args, names, ratios, sizes, rows)
    return _write(args, names, ratios, sizes, rows)


def _wilson(k: int, n: int) -> list[float]:
    return list(wilson(k, n))


def _mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict[str, Any]:
    m = mcnemar(a, b)
    return {"only_first": m["a_only"], "only_second": m["b_only"], "p": m["p"]}


def _write(
    args: argparse.Namespace,
    names: list[str],
    ratios: list[float],
    sizes: list[int],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    tests: dict[str, Any] = {}
    for size in [*sizes, "all"]:
        sub = [r for r in rows if size == "all" or r["size"] == size]
        if not sub:
            continue
        for r in ratios:
            for name in names:
                vals = [x[f"{name}@{r}"] for x in sub]
                k = sum(v["retained"] for v in vals)
                ki = sum(v["intact"] for v in vals)
                cells[f"{size}|{name}|{r}"] = {
                    "k": k,
                    "n": len(vals),
                    "rate": k / len(vals),
                    "wilson95": _wilson(k, len(vals)),
                    "intact_k": ki,
                    "intact_rate": ki / len(vals),
                    "intact_wilson95": _wilson(ki, len(vals)),
                    "ratio_mean": float(np.mean([v["ratio"] for v in vals])),
                    "score_ms_mean": float(np.mean([v["score_ms"] for v in vals])),
                }
            if "relevance" in names and len(names) > 1:
                others = [n for n in names if n != "relevance"]
                best = max(others, key=lambda n: cells[f"{size}|{n}|{r}"]["rate"])
                best_i = max(others, key=lambda n: cells[f"{size}|{n}|{r}"]["intact_rate"])
                tests[f"{size}|{r}"] = {
                    "best_other": best,
                    **_mcnemar(
                        [x[f"relevance@{r}"]["retained"] for x in sub],
                        [x[f"{best}@{r}"]["retained"] for x in sub],
                    ),
                    "intact": {
                        "best_other": best_i,
                        **_mcnemar(
                            [x[f"relevance@{r}"]["intact"] for x in sub],
                            [x[f"{best_i}@{r}"]["intact"] for x in sub],
                        ),
                    },
                }
    out = {
        "command": "python -m benchmarks.answer_retention " + " ".join(sys.argv[1:]),
        "split": "disfl_qa test articles",
        "items": len(rows),
        "cells": cells,
        "relevance_vs_best_other": tests,
        "rows": rows,
    }
    write_results(args.out, out, _markdown(out, names, ratios, sizes))
    return out


def _markdown(out: dict[str, Any], names: list[str], ratios: list[float], sizes: list[int]) -> str:
    lines = [
        "# Answer retention on multi-document QA (test articles)",
        "",
        f"`{out['command']}` — {out['items']} items; a cell: gold answer still in the "
        "compressed context, rate [Wilson 95 %] (achieved context ratio).",
        "",
    ]

    def table(size: object, cell: Callable[[dict[str, Any]], str]) -> list[str]:
        """One row per method, one column per ratio."""
        rows = [
            "| method | " + " | ".join(f"ratio {r}" for r in ratios) + " |",
            "|---|" + "---:|" * len(ratios),
        ]
        for name in names:
            cs = [out["cells"][f"{size}|{name}|{r}"] for r in ratios]
            rows.append(f"| {name} | " + " | ".join(cell(c) for c in cs) + " |")
        return rows

    for size in [*sizes, "all"]:
        if f"{size}|{names[0]}|{ratios[0]}" not in out["cells"]:
            continue
        lines += [f"**{'all sizes' if size == 'all' else f'~{size} tokens'}**", ""]
        lines += table(
            size,
            lambda c: (
                f"{c['rate']:.2f} [{c['wilson95'][0]:.2f}, {c['wilson95'][1]:.2f}] "
                f"({c['ratio_mean']:.2f})"
            ),
        )
        lines += [
            "",
            "Answer sentence intact (the whole sentence holding the answer, word for word):",
            "",
        ]
        lines += table(
            size,
            lambda c: (
                f"{c['intact_rate']:.2f} [{c['intact_wilson95'][0]:.2f}, "
                f"{c['intact_wilson95'][1]:.2f}]"
            ),
        )
        for r in ratios:
            t = out["relevance_vs_best_other"].get(f"{size}|{r}")
            if t:
                lines.append(
                    f"\nratio {r}: relevance vs {t['best_other']}: only relevance "
                    f"{t['only_first']}, only {t['best_other']} {t['only_second']}, "
                    f"McNemar p = {t['p']:.3g}; intact: vs {t['intact']['best_other']}: "
                    f"{t['intact']['only_first']} / {t['intact']['only_second']}, "
                    f"p = {t['intact']['p']:.3g}"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m benchmarks.answer_retention")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--sizes", default="1000,2000")
    ap.add_argument("--ratios", default="0.8,0.5,0.33,0.25")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
