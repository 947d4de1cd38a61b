"""Train the relevance head of the question-aware relevance scorer (seeded, reproducible).

Usage::

    python -m benchmarks.train_relevance teacher [--items 24] [--model qwen2.5-coder-0.5b-instruct]
    python -m benchmarks.train_relevance train [--depths 2,3] [--seed 0] [--train-items 1200]
        [--teacher-items 24] [--teacher-repeat 1] [--teacher-margin 0.1]
        [--out-dir sdk/promptsieve/proxy/heads] [--name relevance-v1]
    python -m benchmarks.train_relevance heldout --head A.safetensors [--head B.safetensors]
        [--teacher-items 100] [--out results.json]

Data (BIG-bench ``disfl_qa`` through ``benchmarks.bigbench``, split by article; the test
articles are never read here — ``train_passages`` refuses them):

* **Answer labels** (train articles): a question with its gold passage and 0–3 distractor
  passages from *other* train articles, rendered as the benchmark renders documents
  (``Document [i]`` + text); the sentence holding the answer span is relevant, every other
  sentence and every distractor sentence is not. Half the questions carry the benchmark's
  instruction in front, as the Compressor then sees them.
* **Target-teacher labels** (dev articles; ``teacher`` step): the local target's own
  leave-one-out drop in the log-probability of its answer when one sentence is removed
  (``benchmarks/_loo.py``; the 0.5B Qwen2.5-Coder target on this CPU). Items of about 350
  tokens (gold + distractors of the dev split), only those whose context and question fit
  one proxy window (:func:`teacher_items`). Cached in ``benchmarks/.cache/``; the last third
  is held out for the Spearman against the teacher. Session 11's result (39 items did not
  help): ``benchmarks/results/relevance_teacher.md``.
* **Few-shot / instruction text**: lm-eval's few-shot demonstration passages and pydoc
  topics (``benchmarks/_head_data``), every sentence labelled relevant, so the head does not
  learn that everything but one sentence can go where nothing was retrieved.

Model: the proxy's first ``depth`` encoder layers, frozen (their states are computed once),
and :class:`~promptsieve.proxy._relevance_head.RelevanceHead` trained on top. Sentence logit
= learned ``mean``/``max`` pooling of its token logits. Losses: per item, binary
cross-entropy over sentences plus a listwise softmax cross-entropy (the answer sentence, or
the teacher's softmax-normalised drops, as the target distribution); teacher items add a
RankNet pairwise loss (Burges et al., ICML 2005) over the sentence pairs whose drops differ by
more than ``TEACHER_MARGIN`` nats, so that the head learns the teacher's whole order, not only
its top sentence.

Selection and report on dev articles (answer labels): mean reciprocal rank of the answer
sentence, top-1, and whether it survives at 50 % / 25 % of the context's tokens when
sentences are kept best-first; baselines: the sentence scorer (cosine on the full
encoder) and document order. The fewest layers within 0.01 MRR of the best depth are
picked. Output: ``<name>.safetensors`` and ``<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("train_relevance")

DEFAULT_OUT_DIR = Path("sdk/promptsieve/proxy/heads")
TEACHER_SIZE = 350  # most items' context + question then fit one 512-token proxy window
TEACHER_SEED = 7
TEACHER_MARGIN = 0.1  # nats: teacher pairs closer than this carry no order
PICK_TOLERANCE = 0.01


@dataclass
class Text:
    """One training or evaluation text: a context, its question, sentence spans and labels."""

    kind: str  # "answer" | "teacher" | "fewshot"
    context: str
    question: str | None
    spans: list[tuple[int, int]]  # sentence char spans in context
    labels: np.ndarray  # (n_sent,) 1/0 (answer, fewshot) or teacher drops (nats)
    doc_of: list[int] = field(default_factory=list)  # document index per sentence


def _instruction() -> str:
    from .bigbench.multidoc import INSTRUCTION

    return INSTRUCTION


def question_block(question: str) -> str:
    return f"{_instruction()}\n\nQuestion: {question}\nAnswer:"


def build_context(docs: Sequence[Sequence[str]]) -> tuple[str, list[tuple[int, int]], list[int]]:
    """Render documents like the benchmark; the char span and document of every sentence."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    doc_of: list[int] = []
    pos = 0
    for d, sents in enumerate(docs):
        head = f"Document [{d + 1}]\n"
        out.append(head)
        pos += len(head)
        for k, s in enumerate(sents):
            if k:
                out.append(" ")
                pos += 1
            out.append(s)
            spans.append((pos, pos + len(s)))
            doc_of.append(d)
            pos += len(s)
        out.append("\n\n")
        pos += 2
    return "".join(out), spans, doc_of


def answer_texts(split: str, n: int, seed: int, count: Any, capacity: int) -> list[Text]:
    """Gold passage + 0–3 distractors from other articles of ``split`` (train or dev)."""
    from .bigbench.multidoc import train_passages

    pool = train_passages(split)  # type: ignore[arg-type]
    qs = [(p, q) for p in pool for q in p.questions if q.answer_sentence is not None]
    rng = random.Random(f"relevance:{split}:{seed}")
    rng.shuffle(qs)
    out: list[Text] = []
    for p, q in qs[:n]:
        others = [o for o in pool if o.article != p.article]
        k = rng.choice((0, 1, 2, 2, 3, 3))
        docs = [list(p.sentences)]
        labels = [1.0 if i == q.answer_sentence else 0.0 for i in range(len(p.sentences))]
        budget = capacity - count(" ".join(p.sentences))
        for o in rng.sample(others, k=min(len(others), 6)):
            if k == 0:
                break
            c = count(" ".join(o.sentences))
            if c > budget:
                continue
            docs.append(list(o.sentences))
            labels += [0.0] * len(o.sentences)
            budget -= c
            k -= 1
        order = list(range(len(docs)))
        rng.shuffle(order)
        flat_labels: list[float] = []
        starts = np.cumsum([0] + [len(d) for d in docs])
        for d in order:
            flat_labels += labels[starts[d] : starts[d + 1]]
        context, spans, doc_of = build_context([docs[d] for d in order])
        question = q.question if rng.random() < 0.5 else question_block(q.question)
        out.append(Text("answer", context, question, spans, np.array(flat_labels), doc_of))
    return out


def fewshot_texts(n: int, seed: int, count: Any) -> list[Text]:
    """Few-shot demonstrations and pydoc topics: every sentence relevant (see docstring)."""
    from promptsieve._passages import split_sentences

    from ._head_data import build_passages

    train, _ = build_passages(count, 480, seed)
    picked = [p for p in train if p.source in ("fewshot", "pydoc")]
    random.Random(f"relevance:fewshot:{seed}").shuffle(picked)
    out = []
    for p in picked[:n]:
        spans = split_sentences(p.text)
        if len(spans) < 2:
            continue
        out.append(Text("fewshot", p.text, p.question, spans, np.ones(len(spans))))
    return out


def teacher_items(n: int, proxy: Any) -> list[Any]:
    """The first ``n`` dev items whose context and question fit one proxy window (the head
    trains on single windows; :func:`encode` would skip the others after their costly
    leave-one-out)."""
    from promptsieve.proxy.relevance import RelevanceConfig, question_ids, windows

    from .bigbench.multidoc import multidoc_raw

    max_q = RelevanceConfig().max_question_tokens
    out = []
    for item in multidoc_raw("dev", TEACHER_SIZE, 4 * n, TEACHER_SEED):
        context, _, _ = build_context(doc_sentences(item))
        q = question_ids(proxy, question_block(item.question), max_q)
        if len(windows(proxy.config, len(proxy.tokenize(context)[0]), len(q))) == 1:
            out.append(item)
        if len(out) == n:
            break
    return out


def doc_sentences(item: Any) -> list[list[str]]:
    from .bigbench.multidoc import sentences

    return [sentences(d) for d in item.docs]


def teacher_texts(n: int, model: str, compute: bool, proxy: Any) -> list[Text]:
    """Leave-one-out teacher labels for the first ``n`` dev items (computed if ``compute``)."""
    from ._loo import LeaveOneOut

    loo = LeaveOneOut(model) if compute else None
    out = []
    for item in teacher_items(n, proxy):
        docs = doc_sentences(item)
        qb = question_block(item.question)
        if loo is None:
            from ._loo import cached_result

            res = cached_result(model, docs, qb)
            if res is None:
                continue
        else:
            res = loo.attribute(docs, qb)
            log.info("teacher %s: %d sentences, %.0f s", item.id, len(res.drops), res.seconds)
        context, spans, doc_of = build_context(docs)
        out.append(Text("teacher", context, qb, spans, np.array(res.drops), doc_of))
    return out


# -- encoding --------------------------------------------------------------------------------


@dataclass
class Encoded:
    """One text in one request-path window: frozen states per depth and token → sentence."""

    text: Text
    states: dict[int, Any]  # depth -> (s, 384) float16 tensor
    mask: Any  # (s,) long
    types: Any  # (s,) long
    tok_sent: Any  # (s,) long: sentence index of each window position, -1 elsewhere


def encode(proxy: Any, texts: Sequence[Text], depths: Sequence[int]) -> list[Encoded]:
    """Each text as the request path builds its window (``[CLS] q [SEP] ctx [SEP]``), run
    through the frozen truncated encoder once; texts longer than one window are skipped."""
    import torch

    from promptsieve.proxy import default_head_path
    from promptsieve.proxy._export import default_model_dir, scorer_layers, truncated_encoder
    from promptsieve.proxy.relevance import RelevanceConfig, build_feeds, question_ids, windows

    onnx_depth = scorer_layers(Path(proxy.config.scorer_head or default_head_path()))
    use_onnx = set(depths) == {onnx_depth}  # the scorer graph's token_states: that depth
    bert = None if use_onnx else truncated_encoder(default_model_dir(), max(depths))
    max_q = RelevanceConfig().max_question_tokens
    out = []
    t0 = time.perf_counter()
    skipped = 0
    for k, t in enumerate(texts):
        ids, offsets = proxy.tokenize(t.context)
        q = question_ids(proxy, t.question, max_q)
        if len(windows(proxy.config, len(ids), len(q))) > 1:
            skipped += 1
            continue
        f = build_feeds([ids], q, proxy._cls, proxy._sep)
        tok_sent = np.full(f["input_ids"].shape[1], -1, dtype=np.int64)
        base = len(q) + 2
        for j, (a, b) in enumerate(t.spans):
            inside = (offsets[:, 0] >= a) & (offsets[:, 1] <= b) & (offsets[:, 1] > offsets[:, 0])
            tok_sent[base + np.flatnonzero(inside)] = j
        tf = {key: torch.from_numpy(v) for key, v in f.items()}
        if bert is None:
            (st,) = proxy._run(f, ["token_states"], proxy.scorer_session)
            states = {onnx_depth: torch.from_numpy(st[0]).to(torch.float16)}
        else:
            with torch.no_grad():
                hs = bert(**tf, output_hidden_states=True).hidden_states
            states = {d: hs[d][0].to(torch.float16) for d in depths}
        out.append(
            Encoded(
                t,
                states,
                tf["attention_mask"][0],
                tf["token_type_ids"][0],
                torch.from_numpy(tok_sent),
            )
        )
        if (k + 1) % 200 == 0:
            log.info("encoded %d/%d texts (%.0f s)", k + 1, len(texts), time.perf_counter() - t0)
    if skipped:
        log.info("skipped %d texts longer than one window", skipped)
    return out


# -- the head ----------------------------------------------------------------------------------


def batch_sentence_logits(head: Any, encs: Sequence[Encoded], depth: int) -> list[Any]:
    """Pooled sentence logits of each text of a batch (torch, differentiable)."""
    import torch

    width = max(int(e.mask.shape[0]) for e in encs)
    b = len(encs)
    states = torch.zeros(b, width, encs[0].states[depth].shape[1])
    mask = torch.zeros(b, width, dtype=torch.long)
    types = torch.zeros(b, width, dtype=torch.long)
    sent = torch.full((b, width), -1, dtype=torch.long)
    offsets = []
    total = 0
    for i, e in enumerate(encs):
        n = int(e.mask.shape[0])
        states[i, :n] = e.states[depth].float()
        mask[i, :n] = e.mask
        types[i, :n] = e.types
        ts = e.tok_sent.clone()
        ts[ts >= 0] += total
        sent[i, :n] = ts
        offsets.append((total, total + len(e.text.spans)))
        total += len(e.text.spans)
    logits = head(states, mask, types)
    ok = sent >= 0
    idx = sent[ok]
    vals = logits[ok]
    sums = torch.zeros(total).index_add(0, idx, vals)
    cnt = torch.zeros(total).index_add(0, idx, torch.ones_like(vals)).clamp(min=1.0)
    mx = torch.full((total,), -1e4).scatter_reduce(0, idx, vals, reduce="amax")
    mx = torch.where(mx < -1e3, torch.zeros_like(mx), mx)
    pooled = head.pool[0] * (sums / cnt) + head.pool[1] * mx
    return [pooled[a:z] for a, z in offsets]


def item_loss(logit: Any, text: Text, margin: float = TEACHER_MARGIN) -> Any:
    import torch
    import torch.nn.functional as F

    y = torch.from_numpy(text.labels).float()
    if text.kind == "teacher":
        target = torch.softmax(y.clamp(-10, 10), 0)
        listwise = -(target * torch.log_softmax(logit, 0)).sum()
        # RankNet on the pairs the teacher orders by more than TEACHER_MARGIN nats: the
        # softmax target above is nearly one-hot on the answer sentence, this term carries
        # the teacher's order of the rest (the oracle ranking that fidelity is measured on)
        ordered = (y[:, None] - y[None, :]) > margin
        if not bool(ordered.any()):
            return listwise
        return listwise + F.softplus(-(logit[:, None] - logit[None, :])[ordered]).mean()
    if text.kind == "fewshot":
        return 0.3 * F.binary_cross_entropy_with_logits(logit, y)
    pos = float(y.sum())
    bce = F.binary_cross_entropy_with_logits(
        logit, y, pos_weight=torch.tensor(min(8.0, (len(y) - pos) / max(pos, 1.0)))
    )
    ce = -torch.log_softmax(logit, 0)[y > 0.5].mean()
    return bce + ce


def train_head(
    encs: list[Encoded],
    depth: int,
    seed: int,
    epochs: int,
    batch: int = 16,
    margin: float = TEACHER_MARGIN,
) -> Any:
    import torch

    from promptsieve.proxy._relevance_head import RelevanceHead

    torch.manual_seed(seed)
    head = RelevanceHead(layers=depth)
    rng = random.Random(seed)
    # batches of similar length (little padding), shuffled batch order per epoch
    by_len = sorted(range(len(encs)), key=lambda i: int(encs[i].mask.shape[0]))
    batches = [by_len[i : i + batch] for i in range(0, len(by_len), batch)]
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=max(1, epochs * len(batches))
    )
    for ep in range(epochs):
        rng.shuffle(batches)
        total = 0.0
        head.train()
        for bi in batches:
            opt.zero_grad()
            group = [encs[i] for i in bi]
            outs = batch_sentence_logits(head, group, depth)
            pairs = zip(outs, group, strict=True)
            loss = sum(item_loss(o, e.text, margin) for o, e in pairs) / len(bi)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(bi)
        log.info("depth %d epoch %d: loss %.4f", depth, ep + 1, total / len(encs))
    head.eval()
    return head


# -- evaluation -------------------------------------------------------------------------------


def ranking_metrics(
    scores: Sequence[np.ndarray], texts: Sequence[Text], count: Any
) -> dict[str, float]:
    """MRR / top-1 of the answer sentence; kept at 50 % / 25 % of tokens, best-first."""
    rr: list[float] = []
    top1: list[bool] = []
    k50: list[bool] = []
    k25: list[bool] = []
    for s, t in zip(scores, texts, strict=True):
        gold = int(np.argmax(t.labels))
        order = sorted(range(len(s)), key=lambda i: (-s[i], i))
        rank = order.index(gold) + 1
        rr.append(1.0 / rank)
        top1.append(rank == 1)
        costs = [count(t.context[a:b]) for a, b in t.spans]
        total = sum(costs)
        for frac, acc in ((0.5, k50), (0.25, k25)):
            used, kept = 0, set()
            for i in order:
                if used + costs[i] > frac * total:
                    break
                used += costs[i]
                kept.add(i)
            acc.append(gold in kept)
    return {
        "mrr": float(np.mean(rr)),
        "top1": float(np.mean(top1)),
        "kept_at_50": float(np.mean(k50)),
        "kept_at_25": float(np.mean(k25)),
        "n": len(rr),
    }


def teacher_spearmans(scores: Sequence[np.ndarray], texts: Sequence[Text]) -> list[float]:
    """Per item, Spearman's rho between a ranker's sentence scores and the teacher's drops
    (nan where either is constant or the item has fewer than 3 sentences); aligned with
    ``texts``, so two rankers pair item by item."""
    from scipy.stats import spearmanr

    out = []
    for s, t in zip(scores, texts, strict=True):
        ok = len(s) > 2 and np.std(t.labels) > 0 and np.std(s) > 0
        out.append(float(spearmanr(s, t.labels).statistic) if ok else float("nan"))
    return out


def _spearman_teacher(scores: Sequence[np.ndarray], texts: Sequence[Text]) -> float:
    vals = teacher_spearmans(scores, texts)
    return float(np.nanmean(vals)) if not np.all(np.isnan(vals)) else float("nan")


def split_teacher(teacher: list[Text]) -> tuple[list[Text], list[Text]]:
    """The first two thirds of the teacher items train; the last third is held out."""
    n = len(teacher) * 2 // 3
    return teacher[:n], teacher[n:]


def head_scores(head: Any, encs: list[Encoded], depth: int) -> list[np.ndarray]:
    import torch

    out: list[np.ndarray] = []
    with torch.no_grad():
        for i in range(0, len(encs), 32):
            out += [
                o.numpy().astype(np.float64)
                for o in batch_sentence_logits(head, encs[i : i + 32], depth)
            ]
    return out


def baseline_scores(proxy: Any, texts: Sequence[Text]) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {"sentence (cosine)": [], "document order": []}
    for t in texts:
        emb = proxy.embed([t.question or t.context[-200:], *(t.context[a:b] for a, b in t.spans)])
        out["sentence (cosine)"].append((emb[1:] @ emb[0]).astype(np.float64))
        out["document order"].append(-np.arange(len(t.spans), dtype=np.float64))
    return out


# -- commands ---------------------------------------------------------------------------------


def cmd_teacher(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    from promptsieve.proxy import Proxy, ProxyConfig

    texts = teacher_texts(args.items, args.model, compute=True, proxy=Proxy.load(ProxyConfig()))
    log.info("teacher labels for %d dev items in %.0f s", len(texts), time.perf_counter() - t0)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from promptsieve.proxy import Proxy, ProxyConfig
    from promptsieve.proxy._relevance_head import save_relevance_head
    from promptsieve.tokens import count_tokens

    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(max(1, args.threads))
    torch.use_deterministic_algorithms(True)
    proxy = Proxy.load(ProxyConfig())

    def ptok(s: str) -> int:
        return len(proxy.tokenize(s)[0])

    def gpt(s: str) -> int:
        return count_tokens(s, "gpt-4o")

    depths = [int(x) for x in args.depths.split(",")]
    capacity = 480 - 40
    train = answer_texts("train", args.train_items, args.seed, ptok, capacity)
    train += fewshot_texts(args.fewshot_items, args.seed, ptok)
    teacher = teacher_texts(args.teacher_items, args.model, compute=False, proxy=proxy)
    teacher_train, held_teacher = split_teacher(teacher)
    n_teacher_train = len(teacher_train)
    if args.teacher_repeat:  # 0: the teacher items are only evaluated (held-out Spearman)
        train += teacher_train
    dev = answer_texts("dev", args.dev_items, args.seed + 1, ptok, capacity)
    log.info(
        "texts: train %d (answer %d, fewshot %d, teacher %d), dev %d, held-out teacher %d",
        len(train), sum(t.kind == "answer" for t in train), sum(t.kind == "fewshot" for t in train),
        n_teacher_train if args.teacher_repeat else 0, len(dev), len(held_teacher),
    )  # fmt: skip
    encs = encode(proxy, train, depths)
    dev_encs = encode(proxy, dev, depths)
    held_encs = encode(proxy, held_teacher, depths) if held_teacher else []
    encs += [e for e in encs if e.text.kind == "teacher"] * max(0, args.teacher_repeat - 1)
    train = [e.text for e in encs]  # texts longer than one window were skipped
    dev = [e.text for e in dev_encs]
    held_teacher = [e.text for e in held_encs]
    t_enc = time.perf_counter()
    log.info("encoded in %.0f s", t_enc - t_start)
    results: dict[str, Any] = {}
    heads = {}
    for d in depths:
        t0 = time.perf_counter()
        head = train_head(encs, d, args.seed, args.epochs, margin=args.teacher_margin)
        heads[d] = head
        m = ranking_metrics(head_scores(head, dev_encs, d), dev, gpt)
        if held_encs:
            m["teacher_spearman_heldout"] = _spearman_teacher(
                head_scores(head, held_encs, d), held_teacher
            )
        m["train_s"] = time.perf_counter() - t0
        results[f"depth {d}"] = m
        log.info("depth %d: %s", d, m)
    best = max(results[f"depth {d}"]["mrr"] for d in depths)
    pick = min(d for d in depths if results[f"depth {d}"]["mrr"] >= best - PICK_TOLERANCE)
    base = baseline_scores(proxy, dev)
    baselines = {k: ranking_metrics(v, dev, gpt) for k, v in base.items()}
    if held_teacher:
        hb = baseline_scores(proxy, held_teacher)
        for k in baselines:
            baselines[k]["teacher_spearman_heldout"] = _spearman_teacher(hb[k], held_teacher)
    head = heads[pick]
    head.extra = {
        "trained_by": "python -m benchmarks.train_relevance train",
        "seed": str(args.seed),
    }
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.name}.safetensors"
    if not args.dry_run:
        save_relevance_head(head, path)
    summary = {
        "command": "python -m benchmarks.train_relevance " + " ".join(args.argv),
        "seed": args.seed,
        "picked_depth": pick,
        "pool": [float(head.pool[0].detach()), float(head.pool[1].detach())],
        "data": {
            "train_answer": sum(t.kind == "answer" for t in train),
            "train_fewshot": sum(t.kind == "fewshot" for t in train),
            "train_teacher": n_teacher_train if args.teacher_repeat else 0,
            "teacher_repeat": args.teacher_repeat,
            "teacher_margin": args.teacher_margin,
            "teacher_model": args.model,
            "dev_answer": len(dev),
            "heldout_teacher": len(held_teacher),
            "splits": "disfl_qa articles: train (answer labels), dev (teacher labels, "
            "selection); test never read",
        },
        "dev": results,
        "baselines_dev": baselines,
        "seconds": {"encode": t_enc - t_start, "total": time.perf_counter() - t_start},
    }
    if not args.dry_run:
        path.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


def cmd_heldout(args: argparse.Namespace) -> int:
    """Committed heads and the cosine baseline against the held-out teacher items: mean
    Spearman per ranker with a percentile bootstrap 95 % interval over items
    (``scipy.stats.bootstrap``, seeded), and a paired Wilcoxon signed-rank test of each
    ranker against the first head (``scipy.stats.wilcoxon``) on the items both can rank."""
    from scipy.stats import bootstrap, wilcoxon

    from promptsieve.proxy import Proxy, ProxyConfig
    from promptsieve.proxy._relevance_head import load_relevance_head

    proxy = Proxy.load(ProxyConfig())
    teacher = teacher_texts(args.teacher_items, args.model, compute=False, proxy=proxy)
    _, held = split_teacher(teacher)
    if not held:
        log.error("no cached teacher items: run `python -m benchmarks.train_relevance teacher`")
        return 2
    if len({Path(p).stem for p in args.head}) < len(args.head):
        log.error("two --head files share a name; rename one (rows are named by file stem)")
        return 2
    heads = {Path(p).stem: load_relevance_head(p) for p in args.head}
    depths = sorted({h.layers for h in heads.values()})
    encs = encode(proxy, held, depths)
    held = [e.text for e in encs]
    per_item = {name: teacher_spearmans(head_scores(h, encs, h.layers), held)
                for name, h in heads.items()}  # fmt: skip
    base = baseline_scores(proxy, held)
    per_item |= {k: teacher_spearmans(v, held) for k, v in base.items()}
    first = next(iter(heads))
    rows: dict[str, Any] = {}
    for name, vals in per_item.items():
        v = np.array([x for x in vals if not np.isnan(x)])
        ci = bootstrap((v,), np.mean, confidence_level=0.95, method="percentile",
                       random_state=args.seed, n_resamples=10_000).confidence_interval  # fmt: skip
        row: dict[str, Any] = {"mean": float(v.mean()), "ci95": [float(ci.low), float(ci.high)],
                               "n": len(v),
                               "items": [None if np.isnan(x) else x for x in vals]}  # fmt: skip
        if name != first:
            pairs = [(a, b) for a, b in zip(per_item[first], vals, strict=True)
                     if not (np.isnan(a) or np.isnan(b))]  # fmt: skip
            d = np.array([a - b for a, b in pairs])
            row[f"vs {first}"] = {
                "n": len(d), "first_higher": int((d > 0).sum()), "other_higher": int((d < 0).sum()),
                "wilcoxon_p": float(wilcoxon(d).pvalue) if np.any(d) else 1.0,
            }  # fmt: skip
        rows[name] = row
        log.info("%s: %.3f [%.3f, %.3f] (n %d)", name, row["mean"], *row["ci95"], row["n"])
    summary = {
        "command": "python -m benchmarks.train_relevance " + " ".join(args.argv),
        "teacher_model": args.model,
        "heldout_items": len(held),
        "rankers": rows,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "items"}
                      for k, v in rows.items()}, indent=1))  # fmt: skip
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ap = argparse.ArgumentParser(prog="python -m benchmarks.train_relevance")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("teacher", help="leave-one-out teacher labels on dev items (slow)")
    t.add_argument("--items", type=int, default=24)
    t.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    r = sub.add_parser("train", help="train the relevance head")
    r.add_argument("--depths", default="2")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--train-items", type=int, default=1200)
    r.add_argument("--fewshot-items", type=int, default=150)
    r.add_argument("--dev-items", type=int, default=300)
    r.add_argument("--teacher-items", type=int, default=24)
    r.add_argument(
        "--teacher-repeat",
        type=int,
        default=1,
        help="each teacher item this many times an epoch (0: held-out evaluation only)",
    )
    r.add_argument(
        "--teacher-margin",
        type=float,
        default=TEACHER_MARGIN,
        help="nats; the RankNet term's pairs differ by more (inf: listwise loss only)",
    )
    r.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    r.add_argument("--epochs", type=int, default=6)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR))
    r.add_argument("--name", default="relevance-v1")
    r.add_argument("--dry-run", action="store_true")
    h = sub.add_parser("heldout", help="committed heads vs the held-out teacher items")
    h.add_argument("--head", action="append", required=True, help="a head's .safetensors")
    h.add_argument("--teacher-items", type=int, default=100)
    h.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--out", default=None, help="write the per-item figures here (JSON)")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"teacher": cmd_teacher, "train": cmd_train, "heldout": cmd_heldout}
    return commands[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
