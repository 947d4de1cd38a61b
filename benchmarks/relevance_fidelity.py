"""Explanation fidelity of the relevance scorer against the target's own leave-one-out oracle.

Usage::

    python -m benchmarks.relevance_fidelity [--items 16] [--ratios 0.5,0.25]
        [--model qwen2.5-coder-0.5b-instruct] [--head PATH ...] [--lm-proxy]
        [--out benchmarks/results/relevance_fidelity]

The protocol of Liu et al. (ACL 2026, arXiv 2505.12509, "Revitalizing Black-Box
Interpretability"): on held-out items — multi-document QA items of about 500 tokens built
from the **test** articles of ``disfl_qa`` (never seen in training) — compare the proxy's
sentence ranking with the oracle's, the target's own leave-one-out drop in the
log-probability of its answer (``benchmarks/_loo.py``):

* (a) Spearman rank correlation per item (mean), and top-k overlap (k = 3 sentences and
  k = 30 % of the sentences);
* (b) at equal ratio (share of context tokens kept, sentences kept best-first), the target's
  answer agreement with its uncompressed answer when pruning follows the proxy vs the oracle,
  and the proxy's share of the oracle's agreement (the paper's "proxy reaches ≥ 90 % of the
  oracle"), with Wilson intervals and an exact McNemar test on the paired outcomes;
* (c) cost: the proxy's CPU milliseconds per item against the oracle's target calls, prompt
  tokens evaluated (with the KV-cache reuse, and as independent calls) and seconds.

``--head PATH`` (repeatable) adds a row ``relevance (<file stem>)`` for another relevance
head, e.g. one trained with the target's leave-one-out labels (``train_relevance
--teacher-items``). Baselines in the same table: the sentence scorer (cosine to the
question on the full encoder), document order, and a seeded random ranking.
``--lm-proxy`` adds the paper's own proxy explanation: the same leave-one-out attribution
computed on the ONNX LM proxy (Qwen2.5-Coder-0.5B-Instruct) for *its own* answer
(``_loo.ProxyLeaveOneOut``; no target call), with its cost in graph runs, tokens and seconds,
and the same attribution of the *target's* answer to the full prompt (known for every
screened request, since the original prompt is sent; the row "… (target's answer)").
``--rows NAME`` (repeatable) keeps only those rankings and the oracle (and skips the LM
proxy's leave-one-out that none of them needs), to add a row cheaply.
The ``coarse (…)`` rows prune with the SDK's coarse-to-fine order over the same sentence scores
(:func:`coarse_keep`: whole passages first, then sentences keyed by score + 0.5 x passage
score), the way ``Compressor()`` cuts retrieved documents; their Spearman is over those
sentence keys.
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import logging
import random
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._loo import LeaveOneOut, render
from ._results import write_results
from .stats import mcnemar, squad_normalize, wilson
from .train_relevance import build_context, doc_sentences, question_block

log = logging.getLogger("relevance_fidelity")

SIZE = 500
SEED = 11
DEFAULT_OUT = Path("benchmarks/results/relevance_fidelity")


def agree(a: str, b: str) -> bool:
    """SQuAD-normalised exact match of two answers (first line only)."""
    return squad_normalize(a.splitlines()[0] if a else "") == squad_normalize(
        b.splitlines()[0] if b else ""
    )


def keep_best_first(scores: np.ndarray, costs: Sequence[int], ratio: float) -> set[int]:
    """Sentences kept best-first while they fit ``ratio`` of the tokens (ties: earlier)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    budget = ratio * sum(costs)
    kept: set[int] = set()
    used = 0
    for i in order:
        if used + costs[i] <= budget:
            kept.add(i)
            used += costs[i]
    if not kept:
        kept.add(order[0])
    return kept


PASSAGE_WEIGHT = 0.5  # CompressorConfig.passage_weight's default
LM_ROW = "proxy LM leave-one-out"
LM_TARGET_ROW = "proxy LM leave-one-out (target's answer)"


def passage_scores(scores: np.ndarray, doc_of: Sequence[int]) -> np.ndarray:
    """Each sentence's passage score: the best sentence score of its passage, as in
    ``promptsieve._coarse.score_part``; shape ``(n_sentences,)``."""
    best: dict[int, float] = {}
    for s, d in zip(scores, doc_of, strict=True):
        best[d] = max(best.get(d, -np.inf), float(s))
    return np.array([best[d] for d in doc_of], dtype=np.float64)


def coarse_keep(
    scores: np.ndarray,
    doc_of: Sequence[int],
    costs: Sequence[int],
    ratio: float,
    passage_weight: float = PASSAGE_WEIGHT,
) -> set[int]:
    """Sentences kept by the SDK's coarse-to-fine order (``promptsieve._allocate``): whole
    passages first, lowest passage score (its best sentence) first, while a passage fits in
    what is still to drop, never the best passage; then sentences of the kept passages by
    ``score + passage_weight x passage score``. Dropping continues in that order until the
    kept sentences fit ``ratio`` of the tokens, so the kept share matches
    :func:`keep_best_first`'s at the same ratio (ties: the later item drops first)."""
    n = len(scores)
    docs = sorted(set(doc_of))
    per_sentence = passage_scores(scores, doc_of)
    pscore = {doc_of[i]: per_sentence[i] for i in range(n)}
    budget = ratio * sum(costs)
    kept = set(range(n))
    used = float(sum(costs))
    best = max(docs, key=lambda d: (pscore[d], -d))
    for d in sorted(docs, key=lambda d: (pscore[d], -d)):
        members = [i for i in range(n) if doc_of[i] == d]
        cost = sum(costs[i] for i in members)
        if d == best or used - cost < budget:
            break
        kept -= set(members)
        used -= cost
    key = {i: scores[i] + passage_weight * per_sentence[i] for i in kept}
    for i in sorted(kept, key=lambda i: (key[i], -i)):
        if used <= budget or len(kept) == 1:
            break
        kept.discard(i)
        used -= costs[i]
    return kept


def pruned_docs(docs: Sequence[Sequence[str]], kept: set[int]) -> list[list[str]]:
    out: list[list[str]] = []
    k = 0
    for d in docs:
        out.append([s for j, s in enumerate(d) if k + j in kept])
        k += len(d)
    return out


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    k = max(1, min(k, len(a)))
    ta = set(sorted(range(len(a)), key=lambda i: (-a[i], i))[:k])
    tb = set(sorted(range(len(b)), key=lambda i: (-b[i], i))[:k])
    return len(ta & tb) / k


def run(args: argparse.Namespace) -> dict[str, Any]:
    from scipy.stats import spearmanr

    from promptsieve.proxy import Proxy, ProxyConfig
    from promptsieve.proxy.relevance import RelevanceConfig, RelevanceScorer
    from promptsieve.tokens import count_tokens

    from .bigbench.multidoc import multidoc_raw

    ratios = [float(r) for r in args.ratios.split(",")]
    items = multidoc_raw("test", SIZE, args.items, SEED)
    proxy = Proxy.load(ProxyConfig())
    scorer = RelevanceScorer(proxy)
    loo = LeaveOneOut(args.model)
    rng = random.Random(SEED)

    def sentence_cosine(context: str, spans: list[tuple[int, int]], q: str) -> np.ndarray:
        emb = proxy.embed([q, *(context[a:b] for a, b in spans)])
        return (emb[1:] @ emb[0]).astype(np.float64)

    rankers: dict[str, Callable[[str, list[tuple[int, int]], str], np.ndarray]] = {}
    proxy_ms: list[float] = []

    def sentence_ranker(
        rs: Any, cpu_ms: list[float] | None = None
    ) -> Callable[[str, list[tuple[int, int]], str], Any]:
        """Pooled sentence scores of ``rs``; CPU-ms per call appended to ``cpu_ms`` if given
        (only the committed head's cost is reported: the extra heads cost the same)."""

        def rank(context: str, spans: list[tuple[int, int]], q: str) -> np.ndarray:
            c0 = time.process_time()
            out = rs.pool(rs.score(context, question=q), spans)
            if cpu_ms is not None:
                cpu_ms.append(1000 * (time.process_time() - c0))
            return np.asarray(out)

        return rank

    rankers["relevance (proxy)"] = sentence_ranker(scorer, proxy_ms)
    for path in args.head:
        other = RelevanceScorer(proxy, RelevanceConfig(head=Path(path)))
        rankers[f"relevance ({Path(path).stem})"] = sentence_ranker(other)
    rankers["sentence (cosine)"] = sentence_cosine
    rankers["document order"] = lambda c, s, q: -np.arange(len(s), dtype=np.float64)
    rankers["random"] = lambda c, s, q: np.array([rng.random() for _ in s])
    # the SDK's coarse-to-fine order over the same sentence scores (passages first)
    coarse = {"coarse (cosine)": "sentence (cosine)", "coarse (relevance)": "relevance (proxy)"}
    coarse.update({f"coarse ({Path(p).stem})": f"relevance ({Path(p).stem})" for p in args.head})
    lm_loo = None
    if args.lm_proxy:
        from promptsieve.proxy.lm import LMProxy

        from ._loo import ProxyLeaveOneOut

        lm_loo = ProxyLeaveOneOut(LMProxy.load())
        coarse[f"coarse ({LM_ROW})"] = LM_ROW
        coarse[f"coarse ({LM_TARGET_ROW})"] = LM_TARGET_ROW
    lm_rows = [LM_ROW, LM_TARGET_ROW] if lm_loo is not None else []
    wanted = _rows_wanted(args.rows, [*rankers, *coarse, *lm_rows])
    rows: list[dict[str, Any]] = []
    for n, item in enumerate(items):
        docs = doc_sentences(item)
        qb = question_block(item.question)
        oracle = loo.attribute(docs, qb)
        context, spans, doc_of = build_context(docs)
        costs = [count_tokens(context[a:b], "gpt-4o") for a, b in spans]
        drops = np.array(oracle.drops)
        row: dict[str, Any] = {
            "id": item.id,
            "answer": oracle.answer,
            "gold": item.answer,
            "n_sentences": len(spans),
            "oracle": {
                "calls": oracle.calls,
                "tokens": oracle.tokens,
                "tokens_no_cache": oracle.tokens_no_cache,
                "seconds": oracle.seconds,
            },
            "methods": {},
        }
        all_scores = {"oracle": drops}
        for name, fn in rankers.items():
            all_scores[name] = np.asarray(fn(context, spans, qb), dtype=np.float64)
        if lm_loo is not None:
            # its own greedy answer, then the target's (known once the full prompt was sent)
            for key, name, given in (
                ("lm_proxy", LM_ROW, None),
                ("lm_proxy_target", LM_TARGET_ROW, oracle.answer),
            ):
                if wanted is not None and not {name, f"coarse ({name})"} & wanted:
                    continue
                lm = lm_loo.attribute(docs, qb, answer=given)
                all_scores[name] = np.array(lm.drops)
                row[key] = {
                    "answer": lm.answer,
                    "runs": lm.calls,
                    "tokens": lm.tokens,
                    "seconds": lm.seconds,
                }
        row["proxy_cpu_ms"] = proxy_ms[-1]
        for name, base in coarse.items():  # its sentence keys
            if base not in all_scores:  # an LM row that was not asked for
                continue
            pw = passage_scores(all_scores[base], doc_of)
            all_scores[name] = all_scores[base] + PASSAGE_WEIGHT * pw
        for name, sc in all_scores.items():
            if wanted is not None and name not in wanted:
                continue
            m: dict[str, Any] = {}
            if name != "oracle":
                rho = spearmanr(sc, drops).statistic if np.std(drops) > 0 else float("nan")
                m["spearman"] = float(rho)
                m["top3"] = topk_overlap(sc, drops, 3)
                m["top30pct"] = topk_overlap(sc, drops, round(0.3 * len(spans)))
            for r in ratios:
                if name in coarse:
                    kept = coarse_keep(all_scores[coarse[name]], doc_of, costs, r)
                else:
                    kept = keep_best_first(sc, costs, r)
                ans = loo.answer(render(pruned_docs(docs, kept), qb))
                m[f"agree@{r}"] = agree(ans, oracle.answer)
                m[f"answer@{r}"] = ans
            row["methods"][name] = m
        rows.append(row)
        first = next((k for k in row["methods"] if k != "oracle"), None)
        log.info(
            "%d/%d %s: oracle %.0f s, proxy %.0f CPU-ms, rho(%s) %.2f",
            n + 1, len(items), item.id, oracle.seconds, proxy_ms[-1], first,
            row["methods"][first]["spearman"] if first else float("nan"),
        )  # fmt: skip
        _write(args, ratios, rows)
    return _write(args, ratios, rows)


def _rows_wanted(rows: list[str] | None, known: Sequence[str]) -> set[str] | None:
    """The ``--rows`` names plus ``"oracle"`` as a set (None: every ranking); SystemExit
    naming the known ones on an unknown name."""
    if not rows:
        return None
    unknown = [r for r in rows if r not in known and r != "oracle"]
    if unknown:
        raise SystemExit(
            f"unknown --rows {unknown}; known rankings: " + ", ".join(repr(k) for k in known)
        )
    return {*rows, "oracle"}


def _write(
    args: argparse.Namespace, ratios: list[float], rows: list[dict[str, Any]]
) -> dict[str, Any]:
    names = list(rows[0]["methods"]) if rows else []
    summary: dict[str, Any] = {}
    for name in names:
        ms = [r["methods"][name] for r in rows]
        s: dict[str, Any] = {}
        if name != "oracle":
            rho = [m["spearman"] for m in ms if m["spearman"] == m["spearman"]]
            s["spearman_mean"] = float(np.mean(rho)) if rho else float("nan")
            s["top3_mean"] = float(np.mean([m["top3"] for m in ms]))
            s["top30pct_mean"] = float(np.mean([m["top30pct"] for m in ms]))
        for r in ratios:
            k = sum(m[f"agree@{r}"] for m in ms)
            s[f"agree@{r}"] = {
                "k": k,
                "n": len(ms),
                "rate": k / len(ms),
                "wilson95": list(wilson(k, len(ms))),
            }
        summary[name] = s
    oracle_ms = [1000 * r["oracle"]["seconds"] for r in rows]
    prox = [r["proxy_cpu_ms"] for r in rows]
    share: dict[str, Any] = {}
    proxies = [n for n in names if n not in ("oracle", "document order", "random")]
    for r in ratios:
        if "oracle" not in summary:
            break
        o = summary["oracle"][f"agree@{r}"]["rate"]
        oa = [row["methods"]["oracle"][f"agree@{r}"] for row in rows]
        for name in proxies:
            p = summary[name][f"agree@{r}"]["rate"]
            pa = [row["methods"][name][f"agree@{r}"] for row in rows]
            share.setdefault(name, {})[str(r)] = {
                "proxy_over_oracle": p / o if o else float("nan"),
                "mcnemar_p": mcnemar(pa, oa)["p"],
            }
    cost: dict[str, Any] = {
        "proxy_cpu_ms_mean": float(np.mean(prox)) if prox else float("nan"),
        "oracle_ms_mean": float(np.mean(oracle_ms)) if oracle_ms else float("nan"),
        "oracle_calls_mean": float(np.mean([r["oracle"]["calls"] for r in rows])) if rows else 0,
        "oracle_tokens_mean": float(np.mean([r["oracle"]["tokens"] for r in rows])) if rows else 0,
        "oracle_tokens_no_cache_mean": float(
            np.mean([r["oracle"]["tokens_no_cache"] for r in rows])
        )
        if rows
        else 0,
    }
    cost["proxy_share_of_oracle_time"] = (
        cost["proxy_cpu_ms_mean"] / cost["oracle_ms_mean"] if oracle_ms else float("nan")
    )
    for key in ("lm_proxy", "lm_proxy_target"):
        with_lm = [r for r in rows if key in r]
        if not with_lm:
            continue
        lm = [r[key] for r in with_lm]
        secs = float(np.mean([m["seconds"] for m in lm]))
        cost[key] = {
            "seconds_mean": secs,
            "runs_mean": float(np.mean([m["runs"] for m in lm])),
            "tokens_mean": float(np.mean([m["tokens"] for m in lm])),
            "share_of_oracle_time": secs / (cost["oracle_ms_mean"] / 1000)
            if cost["oracle_ms_mean"]
            else float("nan"),
        }
        if key == "lm_proxy":  # the target-answer row explains the target's answer itself
            cost[key]["answer_agrees_with_target"] = {
                "k": sum(agree(r[key]["answer"], r["answer"]) for r in with_lm),
                "n": len(lm),
            }
    out = {
        "command": "python -m benchmarks.relevance_fidelity " + shlex.join(sys.argv[1:]),
        "target": args.model,
        "items": len(rows),
        "item_size_tokens": SIZE,
        "split": "disfl_qa test articles",
        "summary": summary,
        "proxy_vs_oracle": share,
        "cost": cost,
        "rows": rows,
    }
    write_results(args.out, out, _markdown(out, ratios))
    return out


def _markdown(out: dict[str, Any], ratios: list[float]) -> str:
    lines = [
        "# Relevance scorer: fidelity to the target's leave-one-out oracle",
        "",
        f"`{out['command']}` — target {out['target']}, {out['items']} items of about "
        f"{out['item_size_tokens']} tokens from the {out['split']}.",
        "",
        "| ranking | Spearman vs oracle | top-3 overlap | top-30 % overlap | "
        + " | ".join(f"agreement @ {r}" for r in ratios)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(ratios),
    ]
    for name, s in out["summary"].items():
        cells = [
            f"{s[f'agree@{r}']['rate']:.2f} [{s[f'agree@{r}']['wilson95'][0]:.2f}, "
            f"{s[f'agree@{r}']['wilson95'][1]:.2f}] ({s[f'agree@{r}']['k']}/{s[f'agree@{r}']['n']})"
            for r in ratios
        ]
        if name == "oracle":
            lines.append("| oracle (target LOO) | — | — | — | " + " | ".join(cells) + " |")
        else:
            lines.append(
                f"| {name} | {s['spearman_mean']:.3f} | {s['top3_mean']:.3f} | "
                f"{s['top30pct_mean']:.3f} | " + " | ".join(cells) + " |"
            )
    lines += [
        "",
        "Proxy-guided agreement as a share of oracle-guided agreement (exact McNemar):",
        "",
    ]
    for name, by_ratio in out["proxy_vs_oracle"].items():
        cells = [
            f"ratio {r}: {v['proxy_over_oracle']:.2f} (p = {v['mcnemar_p']:.3f})"
            for r, v in by_ratio.items()
        ]
        lines.append(f"* {name}: " + "; ".join(cells))
    c = out["cost"]
    lines += [
        "",
        f"Cost per item: proxy {c['proxy_cpu_ms_mean']:.0f} CPU-ms; oracle "
        f"{c['oracle_calls_mean']:.1f} target calls, {c['oracle_tokens_mean']:.0f} prompt tokens "
        f"evaluated with KV-cache reuse ({c['oracle_tokens_no_cache_mean']:.0f} as independent "
        f"calls), {c['oracle_ms_mean'] / 1000:.1f} s; proxy / oracle time = "
        f"{100 * c['proxy_share_of_oracle_time']:.2f} %.",
        "",
    ]
    if "lm_proxy" in c:
        m = c["lm_proxy"]
        lines += [
            f"The LM proxy's leave-one-out: {m['runs_mean']:.1f} graph runs, "
            f"{m['tokens_mean']:.0f} tokens, {m['seconds_mean']:.1f} s wall per item "
            f"({100 * m['share_of_oracle_time']:.0f} % of the oracle's time, 0 target calls); "
            f"its own answer equals the target's on {m['answer_agrees_with_target']['k']} of "
            f"{m['answer_agrees_with_target']['n']} items.",
            "",
        ]
    if "lm_proxy_target" in c:
        m = c["lm_proxy_target"]
        lines += [
            f"The LM proxy's leave-one-out of the target's answer (no generation): "
            f"{m['runs_mean']:.1f} graph runs, {m['tokens_mean']:.0f} tokens, "
            f"{m['seconds_mean']:.1f} s wall per item "
            f"({100 * m['share_of_oracle_time']:.0f} % of the oracle's time).",
            "",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m benchmarks.relevance_fidelity")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--ratios", default="0.5,0.25")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--head", action="append", default=[], help="another relevance head file")
    ap.add_argument(
        "--lm-proxy",
        action="store_true",
        help="add the ONNX LM proxy's leave-one-out attribution (of its own answer, and of "
        "the target's) as rankings",
    )
    ap.add_argument(
        "--rows",
        action="append",
        default=None,
        metavar="NAME",
        help="only this ranking (repeatable; the oracle is always kept), e.g. 'sentence (cosine)'",
    )
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
