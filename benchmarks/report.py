"""Turn benchmark rows into a summary, a Markdown report and PNG plots.

Works on the plain ``results.json`` structure (``meta``, ``methods``, ``rows``,
``screening``, ``prices``), so a report can be regenerated without the target:
``python -m benchmarks.report benchmarks/results/standard``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["percentile", "summarize", "write_plots", "write_report"]

Row = Mapping[str, Any]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _mean(values: Iterable[float]) -> float | None:
    xs = list(values)
    return statistics.fmean(xs) if xs else None


def summarize(rows: Sequence[Row], by: Sequence[str] = ("method", "ratio")) -> list[dict[str, Any]]:
    """Aggregate rows (errors excluded) by the ``by`` fields."""
    groups: dict[tuple[Any, ...], list[Row]] = {}
    for r in rows:
        if r.get("error"):
            continue
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        before = sum(r["tokens_before"] for r in rs)
        after = sum(r["tokens_after"] for r in rs)
        sb = sum(r["server_tokens_before"] or 0 for r in rs)
        sa = sum(r["server_tokens_after"] or 0 for r in rs)
        scored = [r["score_s"] for r in rs if r["method"] not in ("none", "random", "truncate")]
        out.append(
            {
                **dict(zip(by, key, strict=True)),
                "n": len(rs),
                "context_kept": _mean(r["context_kept"] for r in rs),
                "tokens_before": before / len(rs),
                "tokens_after": after / len(rs),
                "saved_share": 1 - after / before if before else 0.0,
                "server_saved_share": 1 - sa / sb if sb else None,
                "agreement": _mean(float(r["agree"]) for r in rs),
                "accuracy": _mean(float(r["correct"]) for r in rs),
                "answered": _mean(float(r["answer"] is not None) for r in rs),
                "score_p50": percentile(scored, 50),
                "score_p95": percentile(scored, 95),
                "e2e_p50": percentile([r["e2e_s"] for r in rs], 50),
                "e2e_p95": percentile([r["e2e_s"] for r in rs], 95),
            }
        )
    return sorted(out, key=lambda d: tuple(_sort_key(d[k]) for k in by))


def _sort_key(v: Any) -> Any:
    order = ["none", "random", "truncate", "selfinfo", "attribution", "head", "sentence"]
    if isinstance(v, str) and v in order:
        return (0, order.index(v), "")
    if isinstance(v, (int, float)):
        return (1, -v, "")
    return (2, 0, str(v))


def _fmt(v: Any, pct: bool = False, digits: int = 2) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.0f}%"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{1000 * v:.0f}"


def write_report(results: Mapping[str, Any], out_dir: Path) -> Path:
    """Write ``report.md`` (and the plots) for ``results`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = results["rows"]
    meta = results.get("meta", {})
    prices = results.get("prices", {})
    summary = summarize(rows)
    by_kind = summarize(rows, ("kind", "method", "ratio"))
    lines = [
        f"# promptsieve benchmark — profile `{meta.get('profile', '?')}`",
        "",
        f"Target: `{meta.get('model', '?')}` at `{meta.get('target', '?')}`; "
        f"{meta.get('items', '?')} items; run took {_fmt(meta.get('runtime_s'))} s "
        f"({meta.get('target_calls', '?')} uncached target calls, "
        f"{meta.get('cache_hits', '?')} cache hits). Command: `{meta.get('command', '')}`",
        "",
        "Tokens are tiktoken (gpt-4o) counts of the whole prompt; *server* is the target's "
        "own `usage.prompt_tokens`. *Agreement*: the extracted final answer equals the "
        "uncompressed prompt's. *Kept*: share of the compressible context kept. Latencies: "
        "scoring (proxy, or the target's log-probabilities for `selfinfo`) and end to end "
        "(compression + target call), p50/p95.",
        "",
    ]
    unavailable = {m: v["reason"] for m, v in results.get("methods", {}).items() if not v["ok"]}
    if unavailable:
        lines.append("Not run: " + "; ".join(f"`{m}` ({r})" for m, r in unavailable.items()))
        lines.append("")
    lines += [
        "## All items",
        "",
        "| method | ratio | n | kept | tokens saved | server saved | agreement | accuracy |"
        " score p50 ms | score p95 ms | e2e p50 s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['method']} | {_fmt(s['ratio'])} | {s['n']} | {_fmt(s['context_kept'], True)} "
            f"| {_fmt(s['saved_share'], True)} | {_fmt(s['server_saved_share'], True)} "
            f"| {_fmt(s['agreement'], True)} | {_fmt(s['accuracy'], True)} "
            f"| {_ms(s['score_p50'])} | {_ms(s['score_p95'])} | {_fmt(s['e2e_p50'])} |"
        )
    lines += [
        "",
        "## By task kind",
        "",
        "| kind | method | ratio | n | tokens saved | agreement | accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in by_kind:
        lines.append(
            f"| {s['kind']} | {s['method']} | {_fmt(s['ratio'])} | {s['n']} "
            f"| {_fmt(s['saved_share'], True)} | {_fmt(s['agreement'], True)} "
            f"| {_fmt(s['accuracy'], True)} |"
        )
    table = prices.get("usd_per_million_input_tokens", {})
    if table:
        models = list(table)
        lines += [
            "",
            f"## Money saved per million requests (USD, list prices as of {prices.get('as_of')})",
            "",
            "Average tokens saved per request × price; " + str(prices.get("note", "")),
            "",
            "| method | ratio | tokens saved / request | " + " | ".join(models) + " |",
            "|---|---|---|" + "---|" * len(models),
        ]
        for s in summary:
            if s["method"] == "none":
                continue
            saved = s["tokens_before"] - s["tokens_after"]
            cells = " | ".join(f"{saved * table[m]:,.0f}" for m in models)
            lines.append(f"| {s['method']} | {_fmt(s['ratio'])} | {saved:.0f} | {cells} |")
    lines += _screening_lines(results.get("screening", []), results.get("screen_plan", {}))
    plots = write_plots(results, out_dir)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _screening_lines(screening: Sequence[Row], plan: Mapping[str, Any]) -> list[str]:
    if not screening:
        return []
    n_req = screening[0].get("requests", 0)
    lines = [
        "",
        "## Screening economics",
        "",
        f"`promptsieve.fidelity.screen` per task and method (tau={plan.get('tau')}, "
        f"delta={plan.get('delta')}, ladder {plan.get('ladder')}). Screening tokens are every "
        "screening call's prompt; *net / request* subtracts background monitoring "
        f"({plan.get('monitor_rate')} of applied requests); *net after {n_req:,}* is that many "
        "requests' savings minus the screening tokens.",
        "",
    ]
    for method in sorted({s["method"] for s in screening}):
        rs = [s for s in screening if s["method"] == method]
        passed = [s for s in rs if s["passed"]]
        calls = sum(s["calls"] for s in rs)
        lines.append(
            f"- `{method}`: {len(passed)}/{len(rs)} tasks pass; {calls} target calls spent "
            "on screening."
        )
    lines += [
        "",
        "| task | method | samples | verdict | ratio | calls | screening tokens |"
        f" net / request | net after {n_req:,} | break-even requests |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in screening:
        lines.append(
            f"| {s['task']} | {s['method']} | {s['samples']} "
            f"| {'pass' if s['passed'] else 'fail'} | {_fmt(s['ratio'])} | {s['calls']} "
            f"| {s['screen_prompt_tokens']:,} | {_fmt(s['net_per_request'], digits=0)} "
            f"| {s['net_after_requests']:,.0f} | {_fmt(s['break_even_requests'])} |"
        )
    return lines


def write_plots(results: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Tokens saved vs agreement per method; scorer latency vs context length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    paths: list[Path] = []
    kinds = sorted({r["kind"] for r in rows})
    panels = ["all", *kinds] if len(kinds) > 1 else ["all"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        sub = rows if panel == "all" else [r for r in rows if r["kind"] == panel]
        for method in _methods(sub):
            pts = [s for s in summarize([r for r in sub if r["method"] == method])]
            pts.sort(key=lambda s: s["saved_share"])
            ax.plot(
                [100 * s["saved_share"] for s in pts],
                [100 * (s["agreement"] or 0) for s in pts],
                marker="o",
                label=method,
            )
        ax.set_title(panel)
        ax.set_xlabel("prompt tokens saved (%)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("agreement with uncompressed (%)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    p = out_dir / "saved_vs_agreement.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for method in _methods(rows):
        if method in ("none", "random", "truncate"):
            continue
        lat = [
            (float(r["context_tokens"]), float(r["score_s"]))
            for r in rows
            if r["method"] == method and r.get("score_s") is not None
        ]
        lat = [pt for pt in lat if not _is_nan(pt[1])]
        if lat:
            ax.scatter([x for x, _ in lat], [y for _, y in lat], label=method, s=14)
    ax.set_xlabel("context length (tiktoken tokens)")
    ax.set_ylabel("scoring latency (s)")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    p = out_dir / "scorer_latency.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    paths.append(p)
    return paths


def _is_nan(x: float) -> bool:
    return x != x


def _methods(rows: Sequence[Row]) -> list[str]:
    return sorted({r["method"] for r in rows}, key=_sort_key)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Regenerate report.md and plots from results.json")
    ap.add_argument("out", type=Path, help="folder holding results.json")
    args = ap.parse_args(argv)
    results = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
    if "suites" in results:  # a BIG-bench suite run (quick/standard/headline)
        from .suite_report import write_suite_report

        print(write_suite_report(results, args.out))
        return
    print(write_report(results, args.out))


if __name__ == "__main__":
    main()
