"""The report of a suite run: every method × ratio × suite with intervals and paired tests.

Reads the ``results.json`` written by :func:`benchmarks.suites.run_suites` and writes
``report.md`` and ``accuracy.png``/``agreement.png``. For each cell (suite, method, ratio):

* accuracy against gold and agreement with the uncompressed answer, each with its Wilson
  95 % interval;
* the share of context tokens kept;
* McNemar's exact test of accuracy against the *strongest baseline* at that ratio (the
  baseline method — random, truncate or selfinfo — with the highest accuracy in that cell
  row), on the same items.

Per suite: the uncompressed accuracy with its interval and the chance level, and the noise
floor (agreement of the uncompressed answer with the answer to a meaning-preserving
variant) with its interval. Screening economics per suite and screened method.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .bigbench.multidoc import data_read
from .stats import mcnemar, paired_difference, wilson

__all__ = ["BASELINES", "cells", "pairwise", "write_suite_report"]

Row = Mapping[str, Any]
BASELINES = ("random", "truncate", "selfinfo")
_ORDER = (
    "none", "random", "truncate", "selfinfo", "sentence", "head", "coarse", "coarse-reorder",
    "default", "attribution",
)  # fmt: skip


def _method_key(m: str) -> tuple[int, str]:
    return (_ORDER.index(m) if m in _ORDER else len(_ORDER), m)


def _ok(rows: Sequence[Row]) -> list[Row]:
    return [r for r in rows if not r.get("error") and "correct" in r]


def cells(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One summary per (suite, method, ratio), with intervals and the paired test."""
    rows = _ok(results["rows"])
    suites = list(results["suites"]) + (["bbh (pooled)"] if _bbh(results) > 1 else [])
    out: list[dict[str, Any]] = []
    for suite in suites:
        srows = [r for r in rows if _in_suite(r, suite)]
        ratios = sorted({r["ratio"] for r in srows if r["method"] != "none"}, reverse=True)
        by = {(r["method"], r["ratio"], r["item"]): r for r in srows}
        methods = sorted({r["method"] for r in srows}, key=_method_key)
        base_items = sorted({r["item"] for r in srows if r["method"] == "none"})
        base = _cell(suite, "none", 1.0, [by[("none", 1.0, i)] for i in base_items])
        base.update(agreement=math.nan, agreement_ci=(math.nan, math.nan))  # itself: n/a
        out.append(base)
        for ratio in ratios:
            group = {
                m: [by[(m, ratio, i)] for i in base_items if (m, ratio, i) in by]
                for m in methods
                if m != "none"
            }
            accs = {
                m: sum(r["correct"] for r in g) / len(g)
                for m, g in group.items()
                if g and m in BASELINES
            }
            best = max(accs, key=lambda m: (accs[m], -_method_key(m)[0])) if accs else None
            for m, g in group.items():
                if not g:
                    continue
                cell = _cell(suite, m, ratio, g)
                if best is not None and m != best:
                    ref = {r["item"]: r["correct"] for r in group[best]}
                    pairs = [(r["correct"], ref[r["item"]]) for r in g if r["item"] in ref]
                    test = mcnemar([a for a, _ in pairs], [b for _, b in pairs])
                    cell.update(vs=best, vs_p=test["p"], wins=test["a_only"], losses=test["b_only"])
                elif m == best:
                    cell.update(vs="(best baseline)")
                out.append(cell)
    return out


def pairwise(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each project method (not a baseline) against every other method at the same ratio,
    and against the uncompressed prompt, on the same items: McNemar's exact test of accuracy.

    Returns one record per (suite, ratio, method, other) with ``wins`` (only the method
    right), ``losses`` (only the other right), ``n`` paired items, ``p``, and ``diff``: the
    accuracy difference (method minus other) with its paired bootstrap 95 % interval
    (:func:`benchmarks.stats.paired_difference`), as proportions.
    """
    rows = _ok(results["rows"])
    out: list[dict[str, Any]] = []
    for suite in results["suites"]:
        srows = [r for r in rows if r["suite"] == suite]
        by = {(r["method"], r["ratio"], r["item"]): r["correct"] for r in srows}
        methods = sorted({r["method"] for r in srows} - {"none"}, key=_method_key)
        ratios = sorted({r["ratio"] for r in srows if r["method"] != "none"}, reverse=True)
        for ratio in ratios:
            for m in (m for m in methods if m not in BASELINES):
                for other in (*(o for o in methods if o != m), "none"):
                    key_ratio = 1.0 if other == "none" else ratio
                    items = [
                        i for (mm, rr, i) in by if mm == m and rr == ratio
                        if (other, key_ratio, i) in by
                    ]  # fmt: skip
                    if not items:
                        continue
                    a = [bool(by[(m, ratio, i)]) for i in items]
                    b = [bool(by[(other, key_ratio, i)]) for i in items]
                    t = mcnemar(a, b)
                    out.append({
                        "suite": suite, "ratio": ratio, "method": m, "other": other,
                        "n": len(items), "wins": t["a_only"], "losses": t["b_only"], "p": t["p"],
                        "diff": paired_difference(a, b),
                    })  # fmt: skip
    return out


def _pairwise_lines(results: Mapping[str, Any]) -> list[str]:
    recs = pairwise(results)
    if not recs:
        return []
    lines = [
        "",
        "## Paired comparisons of the project's methods",
        "",
        "Each project method against every other method at the same ratio and against the "
        "uncompressed prompt (none), on the same items: wins / losses are the discordant "
        "items (only this method right / only the other right), p is McNemar's exact test; "
        "the accuracy difference (this method minus the other, points) carries a paired "
        "bootstrap 95 % percentile interval (10,000 resamples of the items, seed 0). Against "
        "none, a lower bound above −5 reads as non-inferior at the SDK's margin ε = 0.05 for "
        "this fixed sample (the SDK's own test is sequential and anytime-valid, so stricter).",
        "",
        "| suite | ratio | method | vs | n | wins / losses | p | accuracy difference [95 % CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        lines.append(
            f"| {r['suite']} | {r['ratio']:g} | {r['method']} | {r['other']} | {r['n']} | "
            f"{r['wins']} / {r['losses']} | {_p(r['p'])} | {_diff(r['diff'])} |"
        )
    return lines


def _bbh(results: Mapping[str, Any]) -> int:
    return sum(1 for s in results["suites"] if s.startswith("bbh_"))


def _in_suite(r: Row, suite: str) -> bool:
    if suite == "bbh (pooled)":
        return str(r["suite"]).startswith("bbh_")
    return bool(r["suite"] == suite)


def _cell(suite: str, method: str, ratio: float, rows: Sequence[Row]) -> dict[str, Any]:
    n = len(rows)
    k = sum(1 for r in rows if r["correct"])
    a = sum(1 for r in rows if r.get("agree"))
    kept = [r["context_kept"] for r in rows if r.get("context_kept") is not None]
    return {
        "suite": suite,
        "method": method,
        "ratio": ratio,
        "n": n,
        "accuracy": k / n if n else math.nan,
        "accuracy_ci": wilson(k, n),
        "agreement": a / n if n else math.nan,
        "agreement_ci": wilson(a, n),
        "kept": sum(kept) / len(kept) if kept else math.nan,
        "tokens_before": sum(r["tokens_before"] for r in rows) / n if n else math.nan,
    }


def _pct(x: float) -> str:
    return "–" if x != x else f"{100 * x:.0f}"


def _ci(ci: Sequence[float]) -> str:
    lo, hi = ci
    return "" if lo != lo else f" [{100 * lo:.0f}, {100 * hi:.0f}]"


def _diff(d: Sequence[float]) -> str:
    mid, lo, hi = d
    return "–" if mid != mid else f"{_points(mid)} [{_points(lo)}, {_points(hi)}]"


def _points(x: float) -> str:
    v = round(100 * x)
    return f"{v:+d}" if v else "0"


def _p(p: float | None) -> str:
    if p is None:
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def noise_floors(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for suite in results["suites"]:
        rows = [r for r in results.get("noise", []) if r["suite"] == suite]
        k = sum(1 for r in rows if r["agree"])
        out[suite] = {"agree": k, "n": len(rows), "ci": wilson(k, len(rows))}
    return out


def modal_answers(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per suite, how varied the uncompressed answers are: ``share`` of the items whose
    answer (lowercased, stripped) is the most common one, and ``distinct`` answers. A share
    near 1 means the target answers the same whatever the question, so agreement between
    compressed and uncompressed answers is high for free and says nothing of the method."""
    out = {}
    for suite in results["suites"]:
        answers = [
            str(r.get("answer") or "").strip().lower()
            for r in _ok(results["rows"])
            if r["suite"] == suite and r["method"] == "none"
        ]
        counts = Counter(answers)
        top = counts.most_common(1)[0][1] if counts else 0
        out[suite] = {"share": top / len(answers) if answers else math.nan, "distinct": len(counts)}
    return out


def _data_lines(meta: Mapping[str, Any]) -> list[str]:
    """The BIG-bench data a run read, said in the report where it is not the verified sdist
    with the committed split (then its figures are not comparable with the committed ones)."""
    data = data_read(meta)
    if data == "sdist":
        return []
    return [
        f"**Data: {data}** — not the verified bigbench==1.0.0 sdist: these figures are not "
        "comparable with the committed results.",
        "",
    ]


def write_suite_report(results: Mapping[str, Any], out_dir: Path) -> Path:
    """Write ``report.md`` (and plots) into ``out_dir``; returns the report's path."""
    meta = results["meta"]
    summary = cells(results)
    floors = noise_floors(results)
    modal = modal_answers(results)
    lines = [
        f"# promptsieve benchmark — profile `{meta.get('profile')}`",
        "",
        f"Target: **{meta.get('target')}** (`{meta.get('model')}`), temperature 0, seed 0. "
        f"Finished {meta.get('finished', '(in progress)')}; {meta.get('target_calls', 0)} new "
        f"target calls, {meta.get('runtime_s', 0) / 60:.0f} min.",
        "",
        f"Command: `{meta.get('command', '')}`",
        "",
        *_data_lines(meta),
        "Accuracy: choice/label tasks — the extracted answer equals the gold label; "
        "multi-document QA — SQuAD normalisation, then equal, or the gold (≤ 5 tokens) "
        "contained in an answer of ≤ 30 tokens, or token-F1 ≥ 0.5. Agreement: the same metric "
        "between the compressed and the uncompressed answer. Brackets: Wilson 95 % intervals. "
        "p: McNemar's exact test of accuracy against the strongest baseline (random, truncate, "
        "selfinfo) at the same ratio on the same items; wins/losses are its discordant pairs. "
        "Modal answer: the share of items whose uncompressed answer is the most common one; "
        "near 100 % the target answers alike whatever the question, and agreement is high "
        "for free.",
        "",
        "## Uncompressed accuracy and noise floor",
        "",
        "| suite | items | prompt tokens | accuracy % [95 % CI] | chance % | modal answer % "
        "(distinct answers) | noise floor: agreement % [95 % CI] (n) |",
        "|---|---|---|---|---|---|---|",
    ]
    for suite, info in results["suites"].items():
        base = next((c for c in summary if c["suite"] == suite and c["method"] == "none"), None)
        if base is None:
            continue
        fl = floors[suite]
        chance = info.get("chance")
        lines.append(
            f"| {suite} | {base['n']} | {info['avg_prompt_tokens']:.0f} | "
            f"{_pct(base['accuracy'])}{_ci(base['accuracy_ci'])} | "
            f"{'–' if chance is None else _pct(chance)} | "
            f"{_pct(modal[suite]['share'])} ({modal[suite]['distinct']}) | "
            f"{_pct(fl['agree'] / fl['n']) if fl['n'] else '–'}{_ci(fl['ci'])} ({fl['n']}) |"
        )
    lines += [
        "",
        "## Every method × ratio × suite",
        "",
        "| suite | method | ratio | n | context kept % | accuracy % [95 % CI] | "
        "agreement % [95 % CI] | vs | wins/losses | p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in summary:
        wl = f"{c['wins']}/{c['losses']}" if "wins" in c else ""
        lines.append(
            f"| {c['suite']} | {c['method']} | {c['ratio']:g} | {c['n']} | {_pct(c['kept'])} | "
            f"{_pct(c['accuracy'])}{_ci(c['accuracy_ci'])} | "
            f"{_pct(c['agreement'])}{_ci(c['agreement_ci'])} | {c.get('vs', '')} | {wl} | "
            f"{_p(c.get('vs_p'))} |"
        )
    lines += _pairwise_lines(results)
    lines += _screening_lines(results)
    missing = [m for m, st in results.get("methods", {}).items() if not st.get("ok")]
    if missing:
        lines += ["", "Methods not run: " + "; ".join(
            f"{m} ({results['methods'][m]['reason']})" for m in missing
        )]  # fmt: skip
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with contextlib.suppress(ImportError):  # matplotlib is in the bench extra
        write_suite_plots(summary, out_dir)
    return path


def _screening_lines(results: Mapping[str, Any]) -> list[str]:
    recs = results.get("screening") or []
    if not recs:
        return []
    plan = results.get("screen_plan", {})
    lines = [
        "",
        "## Screening economics",
        "",
        f"The SDK's sequential test (τ = {plan.get('tau')}, δ = {plan.get('delta')}) on each "
        f"suite's items in order, ladder {plan.get('ladder')} from conservative to aggressive, "
        "with the suite's own agreement metric (mode agreement), or non-inferior accuracy "
        "against gold (mode labelled: H0 acc(compressed) < acc(original) − margin, the SDK's "
        "betting test). Calls are paired (original + compressed); "
        f"net tokens count the screening calls and {plan.get('monitor_rate')} monitoring of "
        "applied requests, over 10,000 requests.",
        "",
        "| suite | method | mode | verdict | ratio | paired calls | screening tokens | "
        "saved / request | net over 10k requests | break-even requests | rungs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in recs:
        rungs = "; ".join(_rung(x) for x in r["rungs"])
        saved = r.get("saved_per_request")
        mode = r.get("mode", "agreement")
        lines.append(
            f"| {r.get('suite', r['task'])} | {r['method']} | {mode} ({r.get('margin', '')}) | "
            f"{'passed' if r['passed'] else 'failed'} | {r['ratio'] if r['ratio'] else '–'} | "
            f"{r['calls']} | {r['screen_prompt_tokens']} | "
            f"{'–' if saved is None else f'{saved:.0f}'} | {r['net_after_requests']:,.0f} | "
            f"{r['break_even_requests'] or '–'} | {rungs} |"
        )
    return lines


def _rung(x: Mapping[str, Any]) -> str:
    """One ladder rung: agreements/n, or (labelled) correct compressed vs original, and the
    anytime-valid lower bound on the tested difference."""
    if x.get("original_correct") is None:
        return f"{x['ratio']:g}: {x['agree']}/{x['n']} {x['decision']}"
    return (
        f"{x['ratio']:g}: correct {x['agree']} vs {x['original_correct']} of {x['n']}, "
        f"lower {x['lower']:+.2f} {x['decision']}"
    )


def write_suite_plots(summary: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """Accuracy and agreement vs context kept, per suite, with Wilson error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    suites = sorted({c["suite"] for c in summary})
    paths = []
    for measure in ("accuracy", "agreement"):
        cols = min(4, len(suites))
        rows_n = math.ceil(len(suites) / cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 3.3 * rows_n), squeeze=False)
        for ax, suite in zip(axes.flat, suites, strict=False):
            cs = [c for c in summary if c["suite"] == suite]
            base = next((c for c in cs if c["method"] == "none"), None)
            for m in sorted({c["method"] for c in cs} - {"none"}, key=_method_key):
                pts = sorted((c for c in cs if c["method"] == m), key=lambda c: c["ratio"])
                xs = [c["ratio"] for c in pts]
                ys = [100 * c[measure] for c in pts]
                lo = [100 * (c[measure] - c[f"{measure}_ci"][0]) for c in pts]
                hi = [100 * (c[f"{measure}_ci"][1] - c[measure]) for c in pts]
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=2, label=m)
            if base is not None and measure == "accuracy":
                ax.axhline(100 * base["accuracy"], color="k", ls="--", lw=1, label="uncompressed")
            ax.set_title(suite, fontsize=9)
            ax.set_xlabel("keep ratio")
            ax.set_ylim(-5, 105)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(suites) :]:
            ax.axis("off")
        axes[0][0].set_ylabel(f"{measure} (%)")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / f"{measure}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def main(out: Path) -> Path:
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return write_suite_report(results, out)
