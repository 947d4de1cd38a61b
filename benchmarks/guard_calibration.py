"""Does the sieve's instance guard predict harm? Calibrated on the headline's cached answers.

    python -m benchmarks.guard_calibration                 # collect (MiniLM only) + report
    python -m benchmarks.guard_calibration --report-only   # re-analyse the collected records

The headline benchmark (``promptsieve bench --profile headline``: suite ``multidoc_1k``, 100
test-article items, target Qwen2.5-Coder-1.5B-Instruct) answered every item uncompressed and
compressed by each method at ratios 0.5 and 0.25. This script rebuilds the same items and the
same compressions (deterministic: seeded items, seeded ``random``, the SDK's compressors as
``benchmarks.baselines`` builds them) and reads the target's answers from the call cache
**only** (``CompletionTarget(offline=True)``: a compression whose answer is not cached is
reported as missing, never sent). No target is started.

For every compressed prompt it computes the guard's cosine the way the sieve does
(``Sieve._variant``), in three variants:

* ``pooled``: ``Compression.similarity``, the scoring pass's pooled states (whole text vs
  kept text), which the sieve used until this calibration;
* ``passage``: ``Compression.passage_similarity``, the same cosine over the passages the
  coarse-to-fine budget kept (passages dropped whole leave both sides); equal to ``pooled``
  when no passage was dropped whole;
* ``embed``: the proxy's embedding of the whole original prompt vs the whole compressed one
  (``Compressor.similarity``, the sieve's fallback for a compressor without pooled states).

``random`` and ``truncate`` are not the compressor's output, so their ``pooled`` and
``passage`` cosines are what the default compressor would report for the same cut: its
sentence scorer's states, the kept words found by aligning the compressed text to the
original's words (in order), and a passage counted as dropped whole when none of its words
is left. For ``default``/``coarse`` the same alignment reproduces ``Compression.similarity``
(largest difference reported in the results).

Per method x ratio x variant: the pass rate at each threshold, AUC of the cosine for
agreement with the uncompressed answer (Mann-Whitney U / n1 n2; 0.5 = no information),
agreement and accuracy among passed vs vetoed compressions (Wilson intervals, Fisher's exact
test), and the outcome of the sieve's policy (vetoed -> the uncompressed answer) against
sending every compression, paired per item (exact McNemar). Items are split by the gold
passage's article (sorted article names, alternate halves): thresholds are picked on the
``calib`` half and reported on the ``eval`` half.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import fisher_exact, mannwhitneyu

from .baselines import COUNT_MODEL, RandomPrune, Truncate, _make_compressor, context_ratio, query
from .bigbench.multidoc import multidoc_raw, passages
from .stats import agree, correct, mcnemar, parse_answer, wilson
from .suites import PROFILES, limit
from .target import DEFAULT_CACHE, CallCache, CompletionTarget, local_identity

__all__ = ["main"]

OUT = Path("benchmarks/results/guard_calibration")
METHODS = ("default", "coarse", "head", "truncate", "random")
VARIANTS = ("pooled", "passage", "embed")
THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
OLD = 0.8  # GateConfig().guard_threshold
_WORD = re.compile(r"\w+|[^\w\s]")  # words and single punctuation marks


# -- collection -----------------------------------------------------------------------------


def _articles(n: int) -> dict[str, str]:
    """item id -> article of its gold passage (the split's unit)."""
    of = {p.id: p.article for p in passages("test")}
    return {m.id: of[m.doc_ids[m.gold_index]] for m in multidoc_raw("test", 1000, n, 0)}


def _halves(articles: dict[str, str]) -> dict[str, str]:
    names = sorted(set(articles.values()))
    half = {a: ("calib" if i % 2 == 0 else "eval") for i, a in enumerate(names)}
    return {item: half[a] for item, a in articles.items()}


def _aligned(context: str, kept_context: str) -> list[tuple[int, int]]:
    """Spans of ``context``'s words kept in ``kept_context`` (greedy in-order alignment)."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(context)]
    out: list[tuple[int, int]] = []
    j = 0
    for w in _WORD.findall(kept_context):
        while j < len(words) and context[words[j][0] : words[j][1]] != w:
            j += 1
        if j == len(words):
            raise ValueError("compressed text is not a subsequence of the original's words")
        out.append(words[j])
        j += 1
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    n = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / n) if n > 0 else 0.0


def _pooled_from_cut(ts: Any, context: str, kept: Sequence[tuple[int, int]]) -> tuple[float, float]:
    """(pooled, passage) cosines of a word-level cut on the scorer's states ``ts``."""
    from promptsieve._passages import split_passages

    whole, part = ts.pooled_states(list(kept))
    starts = np.array([s for s, _ in kept], dtype=np.int64)
    scope = []
    for a, b in split_passages(context):
        if np.any((starts >= a) & (starts < b)):
            scope += [(m.start() + a, m.end() + a) for m in _WORD.finditer(context[a:b])]
    within = ts.pooled_states(scope)[1]
    return _cos(whole, part), _cos(within, part)


def collect(
    n: int, ratios: Sequence[float], cache_path: Path, partial: Path | None = None
) -> dict[str, Any]:
    from promptsieve.prompt import Message, TextPart

    profile = limit(PROFILES["headline"], n, ["multidoc_1k"])
    suite = profile.suites[0]
    items = suite.items()
    halves = _halves(articles := _articles(n))
    spec_model = profile.model
    from promptsieve.local import EMBEDDED_MODELS

    spec = EMBEDDED_MODELS[spec_model]
    cache = CallCache(cache_path)
    target = CompletionTarget(
        "http://offline.invalid/v1",
        spec.name,
        cache=cache,
        identity=local_identity(spec_model),
        seed=0,
        chat=spec.instruct,
        offline=True,  # cached answers only: a miss raises, nothing is sent
    )
    comps = _compressors()
    default = comps["default"]
    memo = default.scorer  # the sentence scorer, shared with ``coarse``
    words = {"random": RandomPrune(0), "truncate": Truncate()}
    records: list[dict[str, Any]] = []
    missing: list[str] = []
    max_diff = 0.0
    checks = [0, 0]  # alignment checks done, skipped
    t0 = time.perf_counter()
    for k, item in enumerate(items):

        def ask(prompt: str, label: str) -> str | bool | None:
            try:
                out = target.complete(prompt, max_tokens=suite.max_tokens, stop=suite.stop)
            except RuntimeError:
                missing.append(label)
                return False
            return parse_answer(suite.kind, out.text)

        base = ask(item.prompt, f"{item.id} none")
        if base is False:
            continue
        texts: list[str] = [item.prompt]
        pending: list[dict[str, Any]] = []
        for m in METHODS:
            for ratio in ratios:
                rec: dict[str, Any] = {
                    "item": item.id,
                    "article": articles[item.id],
                    "half": halves[item.id],
                    "method": m,
                    "ratio": ratio,
                }
                if m in comps:
                    msg = Message(
                        role="user", parts=(TextPart(item.context), TextPart(item.question, True))
                    )
                    c = comps[m].compress([msg], ratio=ratio, question=query(item))
                    prompt = c.prompt[0].content
                    rec["pooled"], rec["passage"] = c.similarity, c.passage_similarity
                    # passages dropped whole (records before 2026-12-04: "passage_units_dropped")
                    rec["passages_dropped"] = int(c.decisions.get("passage", 0))
                    if m == "default":  # the sentence scorer's states of this context
                        ts = memo.last
                        assert ts is not None and ts.text == item.context
                    if m != "head" and c.similarity is not None:  # check the alignment route
                        kept = prompt[: len(prompt) - len(item.question)]
                        try:
                            spans = _aligned(item.context, kept)
                        except ValueError:
                            checks[1] += 1
                        else:
                            p, _ = _pooled_from_cut(ts, item.context, spans)
                            max_diff = max(max_diff, abs(p - c.similarity))
                            checks[0] += 1
                else:
                    prompt = words[m].timed(item, ratio).prompt
                    kept = prompt[: len(prompt) - len(item.question)]
                    spans = _aligned(item.context, kept)
                    rec["pooled"], rec["passage"] = _pooled_from_cut(ts, item.context, spans)
                    rec["passages_dropped"] = None
                texts.append(prompt)
                pending.append(rec)
                rec["context_kept"] = context_ratio(item, prompt)
                ans = ask(prompt, f"{item.id} {m}@{ratio}")
                if ans is False:
                    rec["cached"] = False
                else:
                    rec.update(
                        cached=True,
                        agree=agree(suite.kind, base, ans),  # type: ignore[arg-type]
                        correct=correct(suite.kind, ans, item.gold),  # type: ignore[arg-type]
                        base_correct=correct(suite.kind, base, item.gold),  # type: ignore[arg-type]
                    )
                records.append(rec)
        emb = default.proxy.embed(texts)  # the original once, then every compression
        for rec, e in zip(pending, emb[1:], strict=True):
            rec["embed"] = float(e @ emb[0])
        if partial is not None and (k + 1) % 10 == 0:  # a stopped run keeps what it reached
            partial.write_text(json.dumps({"records": records, "missing": missing}), "utf-8")
        print(
            f"\r{k + 1}/{len(items)} items, {time.perf_counter() - t0:.0f} s",
            end="",
            file=sys.stderr,
            flush=True,
        )
    print(file=sys.stderr)
    cache.close()
    mismatches = _against_headline(records)
    return {
        "items": len(items),
        "ratios": list(ratios),
        "missing": missing,
        "alignment_max_abs_diff": max_diff,
        "alignment_checks": checks,
        "headline_mismatches": mismatches,
        "records": records,
        "halves": {h: sorted({articles[i] for i in articles if halves[i] == h})
                   for h in ("calib", "eval")},
        "compressor_fingerprints": {m: c.fingerprint for m, c in comps.items()},
    }  # fmt: skip


class _Memo:
    """A scorer that remembers its last result (same text, question, units: same scores)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._key: object = None
        self.last: Any = None

    def __getattr__(self, name: str) -> Any:  # name, fingerprint, pool ...
        return getattr(self._inner, name)

    def score(self, text: str, *, question: str | None = None, units: Any = None) -> Any:
        key = (text, question, None if units is None else tuple(map(tuple, units)))
        if key != self._key:
            self.last = self._inner.score(text, question=question, units=units)
            self._key = key
        return self.last


def _compressors() -> dict[str, Any]:
    """``default``, ``coarse`` and ``head`` exactly as ``benchmarks.baselines`` builds them
    (fingerprints checked), with memoised scorers: one scoring pass per item and scorer."""
    from promptsieve.compressor import Compressor

    out: dict[str, Any] = {}
    shared: dict[str, _Memo] = {}
    for m, scorer in (("default", None), ("coarse", "sentence"), ("head", "head")):
        ref: Any = _make_compressor(scorer, coarse=m == "coarse")  # type: ignore[arg-type]
        inner = ref.scorer
        memo = shared.setdefault(inner.fingerprint, _Memo(inner))
        c = Compressor(ref.config, proxy=ref.proxy, scorer=memo)
        if c.fingerprint != ref.fingerprint:
            raise RuntimeError(f"{m}: memoised compressor differs from the benchmark's")
        out[m] = c
    return out


def _against_headline(records: Sequence[dict[str, Any]]) -> list[str]:
    """Rows whose agreement or accuracy differs from the headline run's ``results.json``."""
    path = Path("benchmarks/results/headline/results.json")
    if not path.exists():
        return ["benchmarks/results/headline/results.json not found: not checked"]
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    ref = {(r["item"], r["method"], r["ratio"]): r for r in rows if r.get("suite") == "multidoc_1k"}
    out = []
    for r in records:
        h = ref.get((r["item"], r["method"], r["ratio"]))
        same = h is not None and (h["agree"], h["correct"]) == (r["agree"], r["correct"])
        if r.get("cached") and not same:
            out.append(f"{r['item']} {r['method']}@{r['ratio']}")
    return out


# -- analysis -------------------------------------------------------------------------------


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n if n else math.nan, "ci": [lo, hi]}


def _auc(sims: Sequence[float], good: Sequence[bool]) -> float:
    """P(cosine of an agreeing compression > a disagreeing one's); 0.5 = no information."""
    pos = [s for s, g in zip(sims, good, strict=True) if g]
    neg = [s for s, g in zip(sims, good, strict=True) if not g]
    if not pos or not neg:
        return math.nan
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def _sim(r: dict[str, Any], variant: str) -> float:
    s = r.get(variant)
    return 1.0 if s is None else float(s)  # nothing dropped: the guard has nothing to veto


def cell_stats(rows: Sequence[dict[str, Any]], variant: str, threshold: float) -> dict[str, Any]:
    """Guard behaviour of ``variant`` at ``threshold`` on one method x ratio's rows."""
    sims = [_sim(r, variant) for r in rows]
    passed = [s >= threshold for s in sims]
    ag = [bool(r["agree"]) for r in rows]
    ok = [bool(r["correct"]) for r in rows]
    base = [bool(r["base_correct"]) for r in rows]
    p_ag = sum(a for a, p in zip(ag, passed, strict=True) if p)
    v_ag = sum(a for a, p in zip(ag, passed, strict=True) if not p)
    n_p = sum(passed)
    n_v = len(rows) - n_p
    fisher = (
        float(fisher_exact([[p_ag, n_p - p_ag], [v_ag, n_v - v_ag]])[1]) if n_p and n_v else 1.0
    )
    # the sieve's policy: a vetoed compression sends the original (its answer, its cost)
    policy_ok = [o if p else b for o, p, b in zip(ok, passed, base, strict=True)]
    policy_ag = [a or not p for a, p in zip(ag, passed, strict=True)]
    kept = [float(r["context_kept"]) if p else 1.0 for r, p in zip(rows, passed, strict=True)]
    return {
        "n": len(rows),
        "pass": _rate(n_p, len(rows)),
        "agree_passed": _rate(p_ag, n_p),
        "agree_vetoed": _rate(v_ag, n_v),
        "fisher_p": fisher,
        "correct_passed": _rate(sum(o for o, p in zip(ok, passed, strict=True) if p), n_p),
        "correct_vetoed": _rate(sum(o for o, p in zip(ok, passed, strict=True) if not p), n_v),
        "policy_accuracy": _rate(sum(policy_ok), len(rows)),
        "policy_agreement": _rate(sum(policy_ag), len(rows)),
        "policy_vs_send_all": mcnemar(policy_ok, ok),
        "policy_vs_none": mcnemar(policy_ok, base),
        "context_kept": float(np.mean(kept)) if kept else math.nan,
        "auc_agree": _auc(sims, ag),
        "auc_correct": _auc(sims, ok),
    }


def _pick(rows: Sequence[dict[str, Any]], variant: str, floor: float) -> float:
    """The strictest threshold on the grid that passes at least ``floor`` of ``rows`` at every
    ratio (``rows``: the calibration half's ``default`` compressions)."""
    best = min(THRESHOLDS)
    for t in THRESHOLDS:
        if all(
            cell_stats([r for r in rows if r["ratio"] == ratio], variant, t)["pass"]["rate"]
            >= floor
            for ratio in sorted({r["ratio"] for r in rows})
        ):
            best = max(best, t)
    return best


def analyse(data: dict[str, Any]) -> dict[str, Any]:
    recs = [r for r in data["records"] if r.get("cached")]
    ratios = data["ratios"]
    out: dict[str, Any] = {"cells": [], "picked": {}, "heldout": []}
    for m in METHODS:
        for ratio in ratios:
            rows = [r for r in recs if r["method"] == m and r["ratio"] == ratio]
            for v in VARIANTS:
                for t in THRESHOLDS:
                    out["cells"].append(
                        {"method": m, "ratio": ratio, "variant": v, "threshold": t,
                         "half": "all", **cell_stats(rows, v, t)}
                    )  # fmt: skip
    calib = [r for r in recs if r["half"] == "calib" and r["method"] == "default"]
    for v in VARIANTS:
        t = _pick(calib, v, 0.9)
        out["picked"][v] = t
        for m in METHODS:
            for ratio in ratios:
                rows = [
                    r
                    for r in recs
                    if r["half"] == "eval" and r["method"] == m and r["ratio"] == ratio
                ]
                for thr, label in ((OLD, "old 0.8"), (t, "picked")):
                    out["heldout"].append(
                        {"method": m, "ratio": ratio, "variant": v, "threshold": thr,
                         "label": label, **cell_stats(rows, v, thr)}
                    )  # fmt: skip
    # the change: pooled at 0.8 (old guard) vs passage at 0.8 (new guard), paired per item
    out["old_vs_new"] = []
    for m in METHODS:
        for ratio in ratios:
            rows = [r for r in recs if r["method"] == m and r["ratio"] == ratio]
            old = [_sim(r, "pooled") >= OLD for r in rows]
            new = [_sim(r, "passage") >= OLD for r in rows]
            ok = [bool(r["correct"]) for r in rows]
            base = [bool(r["base_correct"]) for r in rows]
            acc_old = [o if p else b for o, p, b in zip(ok, old, base, strict=True)]
            acc_new = [o if p else b for o, p, b in zip(ok, new, base, strict=True)]
            out["old_vs_new"].append(
                {
                    "method": m,
                    "ratio": ratio,
                    "n": len(rows),
                    "pass_old": _rate(sum(old), len(rows)),
                    "pass_new": _rate(sum(new), len(rows)),
                    "newly_passed": sum(1 for a, b in zip(old, new, strict=True) if b and not a),
                    "newly_vetoed": sum(1 for a, b in zip(old, new, strict=True) if a and not b),
                    "newly_passed_agree": _rate(
                        sum(
                            1
                            for r, a, b in zip(rows, old, new, strict=True)
                            if b and not a and r["agree"]
                        ),
                        sum(1 for a, b in zip(old, new, strict=True) if b and not a),
                    ),
                    "accuracy_old": _rate(sum(acc_old), len(rows)),
                    "accuracy_new": _rate(sum(acc_new), len(rows)),
                    "new_vs_old": mcnemar(acc_new, acc_old),
                }
            )
    return out


# -- report ---------------------------------------------------------------------------------


def _fmt(c: dict[str, Any]) -> str:
    if not c["n"]:
        return "–"
    lo, hi = c["ci"]
    return f"{c['k']}/{c['n']} = {c['rate']:.2f} [{lo:.2f}, {hi:.2f}]"


def _p(p: float) -> str:
    return f"{p:.3g}"


def write_md(data: dict[str, Any], res: dict[str, Any], path: Path, command: str) -> None:
    recs = data["records"]
    n_cached = sum(1 for r in recs if r.get("cached"))
    lines = [
        "# Instance guard calibration: does the cosine predict harm?",
        "",
        f"Collected with `{data.get('command', 'python -m benchmarks.guard_calibration')}`; "
        f"this report: `{command}` (`--report-only` re-analyses the committed "
        "`guard_calibration.records.json` without the proxy).",
        "",
        "Target-free: the headline run's cached answers (Qwen2.5-Coder-1.5B-Instruct, suite "
        f"`multidoc_1k`, {data['items']} test-article items), compressions rebuilt "
        "deterministically, cosines on the MiniLM proxy. See the script's docstring for the "
        "three cosines (`pooled`: the old guard's; `passage`: over the kept passages; `embed`: "
        "whole-prompt embeddings). Rates: k/n = rate [Wilson 95 %].",
        "",
        f"Cached: {n_cached} of {len(recs)} compressed prompts (+ the uncompressed ones); "
        f"missing from the cache: {len(data['missing'])}"
        + (f" ({', '.join(data['missing'][:10])}{' …' if len(data['missing']) > 10 else ''})"
           if data["missing"] else "")
        + f". Alignment check (the `random`/`truncate` route reproduces "
        f"`Compression.similarity` of `default`/`coarse`): largest |difference| "
        f"{data['alignment_max_abs_diff']:.2g} over {data['alignment_checks'][0]} prompts "
        f"({data['alignment_checks'][1]} not word subsequences, skipped).",
        "",
        f"Agreement/accuracy differing from `benchmarks/results/headline/results.json`: "
        f"{len(data['headline_mismatches'])} rows.",
        "",
        f"Article halves: calib = {', '.join(data['halves']['calib'])}; eval = "
        f"{', '.join(data['halves']['eval'])}.",
        "",
        "## Discrimination, all items (threshold 0.8)",
        "",
        "AUC: the cosine's AUC for agreement with the uncompressed answer (0.5: no "
        "information). Fisher: passed vs vetoed agreement. Policy: the sieve's outcome "
        "(vetoed -> original) vs sending the compression; McNemar a/b = only policy right / "
        "only compression right.",
        "",
        "| method | ratio | cosine | pass | AUC agree | agree passed | agree vetoed | Fisher p "
        "| policy acc | send-all vs policy (McNemar) | policy context kept |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for c in res["cells"]:
        if c["threshold"] != OLD:
            continue
        mc = c["policy_vs_send_all"]
        lines.append(
            f"| {c['method']} | {c['ratio']} | {c['variant']} | {_fmt(c['pass'])} | "
            f"{c['auc_agree']:.2f} | {_fmt(c['agree_passed'])} | {_fmt(c['agree_vetoed'])} | "
            f"{_p(c['fisher_p'])} | {_fmt(c['policy_accuracy'])} | "
            f"{mc['a_only']}/{mc['b_only']} p={_p(mc['p'])} | {c['context_kept']:.2f} |"
        )
    lines += [
        "",
        "## Pass rate by threshold, all items",
        "",
        "| method | ratio | cosine | " + " | ".join(str(t) for t in THRESHOLDS) + " |",
        "|---|---|---|" + "---:|" * len(THRESHOLDS),
    ]
    for m in METHODS:
        for ratio in data["ratios"]:
            for v in VARIANTS:
                cs = [
                    c
                    for c in res["cells"]
                    if (c["method"], c["ratio"], c["variant"]) == (m, ratio, v)
                ]
                lines.append(
                    f"| {m} | {ratio} | {v} | "
                    + " | ".join(f"{c['pass']['rate']:.2f}" for c in cs)
                    + " |"
                )
    lines += [
        "",
        "## The change: old guard (`pooled` >= 0.8) vs new guard (`passage` >= 0.8), all items",
        "",
        "Accuracy under each guard's policy (vetoed -> original answer), paired per item.",
        "",
        "| method | ratio | pass old | pass new | newly passed (agree) | newly vetoed "
        "| accuracy old | accuracy new | new vs old (McNemar) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in res["old_vs_new"]:
        mc = c["new_vs_old"]
        lines.append(
            f"| {c['method']} | {c['ratio']} | {_fmt(c['pass_old'])} | {_fmt(c['pass_new'])} | "
            f"{c['newly_passed']} ({_fmt(c['newly_passed_agree'])}) | {c['newly_vetoed']} | "
            f"{_fmt(c['accuracy_old'])} | {_fmt(c['accuracy_new'])} | "
            f"{mc['a_only']}/{mc['b_only']} p={_p(mc['p'])} |"
        )
    lines += [
        "",
        "## Held out: thresholds picked on the calib half, reported on the eval half",
        "",
        "Rule (fixed before looking at the eval half): per cosine, the strictest threshold on "
        f"the grid {list(THRESHOLDS)} that passes >= 90 % of the calib half's `default` "
        "compressions at every ratio. Picked: "
        + ", ".join(f"`{v}` {t}" for v, t in res["picked"].items())
        + ".",
        "",
        "| method | ratio | cosine | threshold | pass | AUC agree | agree passed | agree vetoed "
        "| Fisher p | policy acc |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in res["heldout"]:
        lines.append(
            f"| {c['method']} | {c['ratio']} | {c['variant']} | {c['threshold']} ({c['label']}) "
            f"| {_fmt(c['pass'])} | {c['auc_agree']:.2f} | {_fmt(c['agree_passed'])} | "
            f"{_fmt(c['agree_vetoed'])} | {_p(c['fisher_p'])} | {_fmt(c['policy_accuracy'])} |"
        )
    if res.get("default_scorer"):
        lines += [
            "",
            "## `benchmarks.default_scorer`: the default's guard pass rate, old vs new",
            "",
            "Old: `benchmarks/results/default_scorer.json` (the whole-text cosine); new: "
            "`benchmarks/results/guard_calibration_default_scorer.json` (`python -m "
            "benchmarks.default_scorer --suites multidoc,needles --methods head,default "
            "--ratios 0.5,0.33,0.25 --needle-sizes 1000,2000 --needles-per-size 20 "
            "--multidoc-items 50 --out benchmarks/results/guard_calibration_default_scorer`), "
            "paired on the same prompts (identical compressions); McNemar a/b = only new passes "
            "/ only old passes.",
            "",
            "| suite | ratio | old guard | new guard | McNemar |",
            "|---|---|---:|---:|---:|",
        ]
        for c in res["default_scorer"]:
            mc = c["new_vs_old"]
            lines.append(
                f"| {c['suite']} | {c['ratio']} | {_fmt(c['old'])} | {_fmt(c['new'])} | "
                f"{mc['a_only']}/{mc['b_only']} p={_p(mc['p'])} |"
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def default_scorer_pairs(old: Path, new: Path) -> list[dict[str, Any]]:
    """Guard pass rates of ``default`` in two ``benchmarks.default_scorer`` results (the old
    guard's and the new one's), paired on the prompts both hold (exact McNemar)."""
    if not (old.exists() and new.exists()):
        return []
    ra = {r["id"]: r for r in json.loads(old.read_text(encoding="utf-8"))["rows"]}
    rb = {r["id"]: r for r in json.loads(new.read_text(encoding="utf-8"))["rows"]}
    out = []
    for suite in sorted({r["suite"] for r in rb.values()}):
        ids = [i for i, r in rb.items() if r["suite"] == suite and i in ra]
        ratios = sorted({float(k.split("@")[1]) for k in rb[ids[0]] if "@" in k}, reverse=True)
        for ratio in ratios:
            cell = f"default@{ratio}"
            if any(cell not in ra[i] for i in ids):
                continue
            a = [bool(ra[i][cell]["guard"]) for i in ids]
            b = [bool(rb[i][cell]["guard"]) for i in ids]
            out.append(
                {
                    "suite": suite,
                    "ratio": ratio,
                    "old": _rate(sum(a), len(ids)),
                    "new": _rate(sum(b), len(ids)),
                    "same_prompts": all(ra[i][cell]["ratio"] == rb[i][cell]["ratio"] for i in ids),
                    "new_vs_old": mcnemar(b, a),
                }
            )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.guard_calibration")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--ratios", default="0.5,0.25")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--report-only", action="store_true", help="re-analyse <out>.records.json")
    args = ap.parse_args(argv)
    raw = args.out.with_suffix(".records.json")
    command = "python -m benchmarks.guard_calibration " + " ".join(argv or sys.argv[1:])
    if args.report_only:
        data = json.loads(raw.read_text(encoding="utf-8"))
    else:
        ratios = [float(r) for r in args.ratios.split(",")]
        data = collect(args.items, ratios, args.cache, raw.with_suffix(".partial.json"))
        data["model"] = COUNT_MODEL
        data["command"] = command.strip()
        raw.parent.mkdir(parents=True, exist_ok=True)
        raw.write_text(json.dumps(data, indent=0), encoding="utf-8")
    res = analyse(data)
    res["default_scorer"] = default_scorer_pairs(
        Path("benchmarks/results/default_scorer.json"),
        Path("benchmarks/results/guard_calibration_default_scorer.json"),
    )
    args.out.with_suffix(".json").write_text(
        json.dumps({"command": command.strip(), **res}, indent=1), encoding="utf-8"
    )
    write_md(data, res, args.out.with_suffix(".md"), command.strip())
    print(f"wrote {args.out}.json and {args.out}.md")


if __name__ == "__main__":
    main()
