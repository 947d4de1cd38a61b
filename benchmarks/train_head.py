"""Train the query-aware token head of the one-pass scorer (distilled from attribution).

Usage::

    python -m benchmarks.train_head [--passages 480] [--layers 1,2,3,6] [--seed 0]
        [--pick auto|N] [--out-dir sdk/promptsieve/proxy/heads] [--name head-v2] [--dry-run]

* Text: real offline passages of 60–160 proxy tokens (``benchmarks/_head_data.py``: lm-eval
  few-shot prompts, pydoc topics, man pages), split train/held-out by source document.
* Teacher: ``AttributionScorer`` (leave-one-out, ``max_units=48``) on the full 6-layer proxy;
  labels are per-word importances, cached under ``benchmarks/.cache/`` (the slow part: about
  2–4 s per passage on 2 loaded cores; re-runs reuse the cache).
* Student: ``QueryHead`` over the states of the first ``layers`` encoder layers, the
  passage encoded exactly as at request time (``[CLS] ctx [SEP] question [SEP]``); target per
  token = its word's centred teacher rank in the passage, scaled to [-2, 2]; MSE.
* Held-out report: mean per-passage Spearman correlation of word scores with the teacher, and
  top-k overlap (k = 30 % / 50 % of words), for every depth and for the baselines (random,
  position = earlier words first, untrained head). ``--pick auto`` takes the fewest layers
  whose held-out Spearman is within 0.03 of the best depth's (speed grows with depth).
* Output: ``<name>.safetensors`` (the head, metadata = architecture + depth) and
  ``<name>.json`` (data summary, metrics, seed, command).

Seeded (torch, numpy, data order); re-running gives the same figures up to float noise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._head_data import Passage, build_passages, teacher_labels

log = logging.getLogger("train_head")

DEFAULT_OUT_DIR = Path("sdk/promptsieve/proxy/heads")
PASSAGES = 480  # head_fidelity must build the same split, so both read this
CACHE_DIR = Path("benchmarks/.cache")
TEACHER_MAX_UNITS = 48
PICK_TOLERANCE = 0.03
TOPK = (0.3, 0.5)
SOURCES = ("fewshot", "pydoc", "man")


@dataclass
class Example:
    """One passage ready for the head: encoder inputs, states per depth, word mapping."""

    passage: Passage
    feeds: dict[str, np.ndarray]  # (1, s) each
    states: dict[int, np.ndarray]  # depth -> (1, s, 384)
    offsets: np.ndarray  # (n, 2) context-token char offsets
    units: list[tuple[int, int]]
    teacher: np.ndarray  # (m,) word scores
    target: np.ndarray  # (s,) token targets (0 where ignored)
    weight: np.ndarray  # (s,) 1 for context tokens inside a word


def teacher_tag(proxy: Any) -> str:
    return f"{proxy.fingerprint}-loo{TEACHER_MAX_UNITS}"


def load_data(
    n: int, seed: int, cache_dir: Path = CACHE_DIR
) -> tuple[Any, list[Passage], list[Passage], list[np.ndarray], list[np.ndarray]]:
    """Proxy, passages and (cached) teacher labels for train and held-out."""
    from promptsieve.proxy import AttributionConfig, AttributionScorer, Proxy, ProxyConfig
    from promptsieve.proxy.attribution import whitespace_units

    proxy = Proxy.load(ProxyConfig())
    train, held = build_passages(lambda s: len(proxy.tokenize(s)[0]), n, seed)
    teacher = AttributionScorer(proxy, AttributionConfig(max_units=TEACHER_MAX_UNITS))

    def score(p: Passage) -> np.ndarray:
        ts = teacher.score(p.text, question=p.question)
        return ts.unit_scores(whitespace_units(p.text)).astype(np.float64)

    tag = teacher_tag(proxy)
    held_y = teacher_labels(held, score, cache_dir, tag, log.info)
    train_y = teacher_labels(train, score, cache_dir, tag, log.info)
    return proxy, train, held, train_y, held_y


def _centred_rank(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    if len(x) < 2:
        return np.zeros(len(x))
    return (rankdata(x) - 1) / (len(x) - 1) * 2.0 - 1.0


def build_examples(
    proxy: Any, passages: list[Passage], labels: list[np.ndarray], depths: Sequence[int]
) -> list[Example]:
    """Encode each passage as the runtime does and keep the states of every wanted depth."""
    import torch
    import transformers

    from promptsieve.proxy._export import default_model_dir
    from promptsieve.proxy.attribution import whitespace_units

    bert = transformers.AutoModel.from_pretrained(
        str(default_model_dir()), attn_implementation="eager"
    ).eval()
    out: list[Example] = []
    for p, y in zip(passages, labels, strict=True):
        ids, offsets = proxy.tokenize(p.text)
        q = proxy._question_ids(p.question)
        feeds = proxy._feeds([ids], q)
        with torch.no_grad():
            hs = bert(
                **{k: torch.from_numpy(v) for k, v in feeds.items()}, output_hidden_states=True
            ).hidden_states
        units = whitespace_units(p.text)
        rank = _centred_rank(y) * 2.0
        s = feeds["input_ids"].shape[1]
        target = np.zeros(s, dtype=np.float32)
        weight = np.zeros(s, dtype=np.float32)
        starts = np.array([a for a, _ in units])
        ends = np.array([b for _, b in units])
        idx = np.searchsorted(starts, offsets[:, 0], side="right") - 1
        ok = (idx >= 0) & (offsets[:, 0] < ends[np.clip(idx, 0, None)])
        target[1 : len(ids) + 1] = np.where(ok, rank[np.clip(idx, 0, None)], 0.0)
        weight[1 : len(ids) + 1] = ok
        out.append(
            Example(
                passage=p,
                feeds=feeds,
                states={d: hs[d].numpy() for d in depths},
                offsets=offsets,
                units=units,
                teacher=y,
                target=target,
                weight=weight,
            )
        )
    return out


def _pad(arrs: list[np.ndarray]) -> np.ndarray:
    width = max(a.shape[1] for a in arrs)
    shape = (len(arrs), width, *arrs[0].shape[2:])
    out = np.zeros(shape, dtype=arrs[0].dtype)
    for i, a in enumerate(arrs):
        out[i, : a.shape[1]] = a[0]
    return out


def _batch(exs: list[Example], depth: int) -> dict[str, Any]:
    import torch

    return {
        "h": torch.from_numpy(_pad([e.states[depth] for e in exs])),
        "mask": torch.from_numpy(_pad([e.feeds["attention_mask"] for e in exs])),
        "types": torch.from_numpy(_pad([e.feeds["token_type_ids"] for e in exs])),
        "y": torch.from_numpy(_pad([e.target[None] for e in exs])),
        "w": torch.from_numpy(_pad([e.weight[None] for e in exs])),
    }


def train_head(
    exs: list[Example], depth: int, seed: int, mlp_hidden: int, epochs: int, batch: int = 16
) -> Any:
    import torch

    from promptsieve.proxy._head import QueryHead

    torch.manual_seed(seed)
    head = QueryHead(mlp_hidden=mlp_hidden, layers=depth)
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-2)
    rng = np.random.default_rng(seed)
    batches = [_batch(exs[i : i + batch], depth) for i in range(0, len(exs), batch)]
    head.train()
    for _ in range(epochs):
        for bi in rng.permutation(len(batches)):
            b = batches[bi]
            pred = head(b["h"], b["mask"], b["types"])
            loss = ((pred - b["y"]) ** 2 * b["w"]).sum() / b["w"].sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def head_logits(head: Any, ex: Example, depth: int) -> np.ndarray:
    import torch

    b = _batch([ex], depth)
    with torch.no_grad():
        return np.asarray(head(b["h"], b["mask"], b["types"])[0].numpy())


def word_scores(ex: Example, token_scores: np.ndarray) -> np.ndarray:
    """Per word: mean over its tokens (as ``TokenScores.unit_scores`` does at request time).

    ``token_scores`` covers the whole encoded sequence; the context tokens start after [CLS].
    """
    from promptsieve.proxy import TokenScores

    ctx = token_scores[1 : len(ex.offsets) + 1].astype(np.float32)
    ts = TokenScores(ex.passage.text, ex.offsets, ctx, "x")
    return ts.unit_scores(ex.units).astype(np.float64)


def _topk(x: np.ndarray, k: int) -> set[int]:
    return set(np.lexsort((np.arange(len(x)), -x))[:k].tolist())  # ties: earlier first


def fidelity(pred: list[np.ndarray], teacher: list[np.ndarray]) -> dict[str, float]:
    """Mean per-passage Spearman and top-k overlap of predicted vs teacher word scores."""
    from scipy.stats import spearmanr

    rhos: list[float] = []
    over: dict[float, list[float]] = {f: [] for f in TOPK}
    for p, t in zip(pred, teacher, strict=True):
        if len(t) < 3:
            continue
        if np.ptp(p) == 0 or np.ptp(t) == 0:
            rhos.append(0.0)
        else:
            rhos.append(float(spearmanr(p, t).statistic))
        for f in TOPK:
            k = max(1, round(f * len(t)))
            over[f].append(len(_topk(p, k) & _topk(t, k)) / k)
    out = {"spearman": round(float(np.mean(rhos)), 4), "passages": len(rhos)}
    for f in TOPK:
        out[f"top{round(f * 100)}_overlap"] = round(float(np.mean(over[f])), 4)
    return out


def baselines(held: list[Example], seed: int, depth: int) -> dict[str, dict[str, float]]:
    import torch

    from promptsieve.proxy._head import QueryHead

    rng = np.random.default_rng(seed + 1)
    teacher = [e.teacher for e in held]
    torch.manual_seed(seed + 1)
    untrained = QueryHead(layers=depth).eval()
    return {
        "random": fidelity([rng.random(len(e.units)) for e in held], teacher),
        "position": fidelity([-np.arange(len(e.units), dtype=float) for e in held], teacher),
        "untrained_head": fidelity(
            [word_scores(e, head_logits(untrained, e, depth)) for e in held], teacher
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_head", description=__doc__)
    p.add_argument("--passages", type=int, default=PASSAGES)
    p.add_argument("--layers", default="1,2,3,6")
    p.add_argument("--pick", default="auto", help="'auto' or a depth from --layers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mlp-hidden", type=int, default=32)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    p.add_argument("--name", default="head-v2")
    p.add_argument("--dry-run", action="store_true", help="report only, write no head")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    t0 = time.perf_counter()
    depths = [int(x) for x in args.layers.split(",")]
    proxy, train, held, train_y, held_y = load_data(args.passages, args.seed)
    t_teacher = time.perf_counter() - t0
    log.info(
        "teacher labels ready (%.0f s): %d train, %d held-out", t_teacher, len(train), len(held)
    )
    train_ex = build_examples(proxy, train, train_y, depths)
    held_ex = build_examples(proxy, held, held_y, depths)
    teacher = [e.teacher for e in held_ex]
    results: dict[int, dict[str, float]] = {}
    heads: dict[int, Any] = {}
    for d in depths:
        heads[d] = train_head(train_ex, d, args.seed, args.mlp_hidden, args.epochs)
        pred = [word_scores(e, head_logits(heads[d], e, d)) for e in held_ex]
        results[d] = fidelity(pred, teacher)
        tr = fidelity(
            [word_scores(e, head_logits(heads[d], e, d)) for e in train_ex],
            [e.teacher for e in train_ex],
        )
        log.info("layers=%d held-out %s | train spearman %.3f", d, results[d], tr["spearman"])
    base = baselines(held_ex, args.seed, depths[0])
    for name, r in base.items():
        log.info("baseline %-15s %s", name, r)
    best = max(r["spearman"] for r in results.values())
    if args.pick == "auto":
        pick = min(d for d in depths if results[d]["spearman"] >= best - PICK_TOLERANCE)
    else:
        pick = int(args.pick)
    by_source = {}
    for src in sorted({e.passage.source for e in held_ex}):
        sel = [e for e in held_ex if e.passage.source == src]
        by_source[src] = fidelity(
            [word_scores(e, head_logits(heads[pick], e, pick)) for e in sel],
            [e.teacher for e in sel],
        )
    summary = {
        "version": args.name,
        "layers": pick,
        "architecture": heads[pick].arch(),
        "teacher": f"AttributionScorer(loo, max_units={TEACHER_MAX_UNITS}) on the full proxy",
        "target": "per-passage centred word rank in [-2, 2], MSE over context tokens",
        "data": {
            "train_passages": len(train),
            "heldout_passages": len(held),
            "train_docs": len({x.doc for x in train}),
            "heldout_docs": len({x.doc for x in held}),
            "sources": {
                s: sum(1 for x in train + held if x.source == s)
                for s in ("fewshot", "pydoc", "man")
            },
            "with_question": sum(1 for x in train + held if x.question is not None),
            "tokens_per_passage": "60-160",
        },
        "heldout": {
            "by_layers": {str(d): r for d, r in results.items()},
            "baselines": base,
            "picked_by_source": by_source,
        },
        "seed": args.seed,
        "epochs": args.epochs,
        "proxy_fingerprint": proxy.fingerprint,
        "command": "python -m benchmarks.train_head " + " ".join(argv or sys.argv[1:]),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(summary, indent=2))
    if not args.dry_run:
        from promptsieve.proxy._head import save_head

        args.out_dir.mkdir(parents=True, exist_ok=True)
        heads[pick].extra = {"version": args.name, "seed": str(args.seed)}
        save_head(heads[pick], args.out_dir / f"{args.name}.safetensors")
        (args.out_dir / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
        log.info("wrote %s (layers=%d)", args.out_dir / f"{args.name}.safetensors", pick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
