"""Held-out fidelity of the committed head scorer to its teacher (the attribution scorer).

Usage::

    python -m benchmarks.head_fidelity [--passages 480] [--seed 0] [--head PATH] [--int8]

Runs the real request path — ``HeadScorer(proxy).score(text, question=...)`` on the ONNX
scorer graph — over the held-out passages of ``benchmarks.train_head`` (same data, seed and
split; documents never shared with training) and prints the mean per-passage Spearman
correlation and top-30 % / top-50 % word overlap with the teacher's word scores, next to the
baselines (random, position). Teacher labels come from ``benchmarks/.cache/`` (computed and
cached on a miss: a few seconds per passage).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._head_data import Passage, build_passages, teacher_labels
from .train_head import CACHE_DIR, PASSAGES, TEACHER_MAX_UNITS, fidelity, teacher_tag


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.head_fidelity", description=__doc__)
    p.add_argument("--passages", type=int, default=PASSAGES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--head", type=Path, default=None, help="default: the committed head")
    p.add_argument("--int8", action="store_true", help="int8-quantised scorer graph")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from promptsieve.proxy import (
        AttributionConfig,
        AttributionScorer,
        HeadScorer,
        Proxy,
        ProxyConfig,
        TokenScores,
    )
    from promptsieve.proxy.attribution import whitespace_units

    proxy = Proxy.load(ProxyConfig(scorer_head=args.head, scorer_int8=args.int8))
    _, held = build_passages(lambda s: len(proxy.tokenize(s)[0]), args.passages, args.seed)
    teacher = AttributionScorer(proxy, AttributionConfig(max_units=TEACHER_MAX_UNITS))

    def score(ps: Passage) -> np.ndarray:
        ts = teacher.score(ps.text, question=ps.question)
        return ts.unit_scores(whitespace_units(ps.text)).astype(np.float64)

    labels = teacher_labels(held, score, CACHE_DIR, teacher_tag(proxy), logging.info)
    head = HeadScorer(proxy)

    def words(ps: Passage, ts: TokenScores) -> np.ndarray:
        return ts.unit_scores(whitespace_units(ps.text)).astype(np.float64)

    pred = [words(ps, head.score(ps.text, question=ps.question)) for ps in held]
    rng = np.random.default_rng(args.seed + 1)
    rows = {
        "head (ONNX)": fidelity(pred, labels),
        "random": fidelity([rng.random(len(y)) for y in labels], labels),
        "position": fidelity([-np.arange(len(y), dtype=float) for y in labels], labels),
    }
    for src in sorted({ps.source for ps in held}):
        idx = [i for i, ps in enumerate(held) if ps.source == src]
        rows[f"head on {src}"] = fidelity([pred[i] for i in idx], [labels[i] for i in idx])
    print(f"held-out: {len(held)} passages; scorer fingerprint {head.fingerprint}\n")
    print("| scorer | passages | Spearman | top-30% overlap | top-50% overlap |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['passages']:.0f} | {r['spearman']:.3f} | "
            f"{r['top30_overlap']:.3f} | {r['top50_overlap']:.3f} |"
        )
    print("\n" + json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
