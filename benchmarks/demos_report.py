"""Report for the demonstration benchmarks: ``results/demos/report.md`` from the JSONL records.

- (a) share of demonstrations removed per method (mean over task × repeat, 95 % bootstrap
  interval), proxy as a share of oracle, and paired comparisons of proxy against random and
  self-information (Wilcoxon signed-rank over the same draws, ``scipy.stats.wilcoxon``);
- (b) target accuracy after cleaning (Wilson intervals via ``binomtest().proportion_ci``),
  McNemar (exact binomial on discordant test questions) for proxy against random deletion
  and against no cleaning;
- (c) cost: proxy seconds and tokens against the oracle's target calls and tokens;
  attribution time for an 8-demonstration task.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr, wilcoxon

from .stats import mcnemar, wilson

RESULTS = Path(__file__).resolve().parent / "results" / "demos"
METHODS = ("proxy", "oracle", "random", "selfinfo", "head")


def _load(name: str) -> list[dict[str, Any]]:
    p = RESULTS / name
    if not p.is_file():
        return []
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def _boot(x: list[float], seed: int = 0) -> tuple[float, float]:
    if len(x) < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    arr = np.asarray(x)
    means = arr[rng.integers(0, len(arr), size=(5000, len(arr)))].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _paired(a: list[float], b: list[float]) -> str:
    d = [x - y for x, y in zip(a, b, strict=True)]
    if sum(1 for v in d if v != 0) < 1:
        return f"n={len(d)}, all ties"
    try:
        p = wilcoxon(a, b, zero_method="zsplit").pvalue
    except ValueError as exc:
        return f"n={len(d)}: {exc}"
    wins = sum(1 for v in d if v > 0)
    losses = sum(1 for v in d if v < 0)
    return f"n={len(d)}, {wins} wins / {losses} losses, Wilcoxon p = {p:.3g}"


def _chance(task: str) -> float:
    """Accuracy of a uniform guess over each question's options (mean over the task)."""
    from .demos_tasks import TASKS, items

    opts = [len(choices) for _, _, choices in items(TASKS[task])]
    return float(np.mean([1 / k for k in opts]))


def _at_chance(task: str, correct: int, n: int) -> bool:
    """Whether ``correct``/``n`` is inside the Wilson 95 % interval around chance or below."""
    lo, _ = wilson(correct, n)
    return lo <= _chance(task)


def _chance_note(flat: list[str]) -> list[str]:
    if not flat:
        return []
    return [
        f"**At chance with the full prompt: {', '.join(flat)}** (the Wilson 95 % interval of "
        "the full-prompt accuracy reaches the chance level). There the demonstrations do not "
        "carry the answer, removing them cannot lower accuracy beyond noise, and these draws "
        "do not tell the methods apart.",
        "",
    ]


LAYOUT_NOTE = (
    "Layout *turn*: the demonstrations and the question in one user message; *turns*: "
    "one user/assistant message pair per demonstration, then the question."
)


def part_probe(rows: list[dict[str, Any]]) -> list[str]:
    """Whether the target uses the demonstrations at all: all of them vs none, per task."""
    if not rows:
        return []
    out = [
        f"### Does the target use the demonstrations? ({rows[0]['target']}, one draw per "
        f"task, {rows[0]['n_demos']} demonstrations vs none, same test questions)",
        "",
        LAYOUT_NOTE,
        "",
        "| task | layout | test questions | chance | with demonstrations | without "
        "| McNemar: with-only / without-only, p |",
        "|---|---|---:|---|---|---|---|",
    ]
    for r in rows:
        f, z = r["full_correct"], r["zero_correct"]
        lo, hi = wilson(sum(f), len(f))
        mc = mcnemar([bool(x) for x in f], [bool(x) for x in z])
        out.append(
            f"| {r['task']} | {_layout(r)} | {len(f)} | {_chance(r['task']):.2f} "
            f"| {np.mean(f):.0%} [{lo:.0%}, {hi:.0%}] "
            f"| {np.mean(z):.0%} | {mc['a_only']} / {mc['b_only']}, {mc['p']:.2g} |"
        )
    out.append("")
    return out


def part_poison_probe(rows: list[dict[str, Any]]) -> list[str]:
    """Whether flipped labels hurt the target: clean vs poisoned vs no demonstrations on part
    (b)'s first draw of each task, and how often the reply repeats the label of the last
    demonstration (the recency bias of Zhao et al., 2021, "Calibrate Before Use")."""
    if not rows:
        return []
    r0 = rows[0]
    out = [
        f"### Do flipped labels hurt the target? ({r0['target']}, part (b)'s first draw per "
        f"task: {r0['n_demos']} demonstrations, {len(r0['flipped'])} of them flipped, "
        f"{r0['n_test']} test questions)",
        "",
        LAYOUT_NOTE,
        "",
        "| task | layout | chance | clean | poisoned | none | clean vs poisoned (McNemar) "
        "| clean vs none (McNemar) | replies = last demonstration's label, clean / none |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c, p, z = r["clean_correct"], r["poisoned_correct"], r["zero_correct"]
        lo, hi = wilson(sum(c), len(c))
        cp = mcnemar([bool(x) for x in c], [bool(x) for x in p])
        cz = mcnemar([bool(x) for x in c], [bool(x) for x in z])
        last = r["last_label"]["clean"]
        same = np.mean([a == last for a in r["clean_answers"]])
        same0 = np.mean([a == last for a in r["zero_answers"]])
        out.append(
            f"| {r['task']} | {_layout(r)} | {_chance(r['task']):.2f} "
            f"| {np.mean(c):.0%} [{lo:.0%}, {hi:.0%}] "
            f"| {np.mean(p):.0%} | {np.mean(z):.0%} | {cp['a_only']} / {cp['b_only']}, "
            f"p {cp['p']:.2g} | {cz['a_only']} / {cz['b_only']}, p {cz['p']:.2g} "
            f"| {same:.0%} / {same0:.0%} |"
        )
    out.append("")
    return out


def part_a(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(a) no finished draws yet."]
    methods = [m for m in METHODS if all(m in r["methods"] for r in rows)]
    tasks = sorted({r["task"] for r in rows})
    out = [
        f"### (a) Share of demonstrations removed at ≥ 0.9 × full-prompt accuracy "
        f"({len(rows)} draws: {len(tasks)} tasks × repeats; target {rows[0]['target']}, "
        f"{rows[0]['n_demos']} demonstrations, {rows[0]['n_val']} validation requests, "
        f"{rows[0]['n_test']} test questions per draw; layout {_layout(rows[0])})",
        "",
        "| task | draws | chance | full acc | zero-shot acc | " + " | ".join(methods) + " |",
        "|---|---|---|---|---|" + "---|" * len(methods),
    ]
    flat = []
    for t in tasks:
        rs = [r for r in rows if r["task"] == t]
        full = np.mean([r["full_acc"] for r in rs])
        n_test = sum(r["n_test"] for r in rs)
        if _at_chance(t, round(sum(r["full_acc"] * r["n_test"] for r in rs)), n_test):
            flat.append(t)
        zs = [r["zero_shot_acc"] for r in rs if r.get("zero_shot_acc") is not None]
        zs_s = f"{np.mean(zs):.2f}" if zs else "–"
        cells = [f"{np.mean([r['methods'][m]['share'] for r in rs]):.1%}" for m in methods]
        out.append(
            f"| {t} | {len(rs)} | {_chance(t):.2f} | {full:.2f} | {zs_s} | "
            + " | ".join(cells)
            + " |"
        )
    means = {m: [r["methods"][m]["share"] for r in rows] for m in methods}
    cells = []
    for m in methods:
        lo, hi = _boot(means[m])
        ci = f" [{lo:.0%}, {hi:.0%}]" if len(means[m]) > 1 else " (one draw: no interval)"
        cells.append(f"**{np.mean(means[m]):.1%}**{ci}")
    out.append("| **mean** | " + f"{len(rows)} | | | | " + " | ".join(cells) + " |")
    out.append("")
    out += _chance_note(flat)
    if "proxy" in means and "oracle" in means and np.mean(means["oracle"]) > 0:
        out.append(
            f"Proxy share / oracle share: {np.mean(means['proxy']) / np.mean(means['oracle']):.1%}"
            " (goal ≥ 95 %; the paper: 91.3 %)."
        )
    for other in ("random", "selfinfo", "head"):
        if "proxy" in means and other in means:
            out.append(f"- proxy vs {other}: {_paired(means['proxy'], means[other])}")
    rhos = [
        float(spearmanr(r["methods"]["proxy"]["values"], r["methods"]["oracle"]["values"])[0])
        for r in rows
        if "proxy" in r["methods"] and "oracle" in r["methods"]
    ]
    if rhos:
        out.append(
            f"- attribution fidelity, Spearman(proxy values, oracle values) per draw: "
            f"{', '.join(f'{x:.2f}' for x in rhos)} (mean {np.mean(rhos):.2f})"
        )
    out.append("")
    return out


def part_a_half(rows: list[dict[str, Any]]) -> list[str]:
    """(a) on a fixed rung: accuracy with the least useful half of the demonstrations removed,
    pooled over every draw's test questions, McNemar between methods on the same questions."""
    rows = [r for r in rows if "full_correct" in r]
    if not rows:
        return []
    methods = [m for m in METHODS if all(m in r["methods"] for r in rows)]
    n_q = sum(len(r["full_correct"]) for r in rows)
    out = [
        f"#### (a) on a fixed rung: half of the demonstrations removed, each method's least "
        f"useful first ({len(rows)} draws, {n_q} test questions pooled; layout "
        f"{_layout(rows[0])})",
        "",
        "The share-removed score stops at the first rung below 0.9 × full accuracy, and with "
        f"{len(rows[0]['full_correct'])} test questions one question is "
        f"{100 / len(rows[0]['full_correct']):.1f} "
        "points, so it mostly measures noise. Here every "
        "method removes the same number of demonstrations and the target's answers are "
        "compared question by question.",
        "",
        "| prompt | accuracy | 95 % CI | vs proxy: proxy-only / other-only correct | McNemar p |",
        "|---|---|---|---|---|",
    ]
    cols = {"full prompt": [c for r in rows for c in r["full_correct"]]}
    for m in methods:
        cols[f"{m}, half removed"] = [c for r in rows for c in r["methods"][m]["half_correct"]]
    proxy = cols.get("proxy, half removed")
    for name, xs in cols.items():
        lo, hi = wilson(sum(xs), len(xs))
        cmp_ = "–"
        p_s = "–"
        if proxy is not None and name != "proxy, half removed":
            mc = mcnemar([bool(x) for x in proxy], [bool(x) for x in xs])
            cmp_ = f"{mc['a_only']} / {mc['b_only']}"
            p_s = f"{mc['p']:.3g}"
        out.append(f"| {name} | {np.mean(xs):.1%} | [{lo:.0%}, {hi:.0%}] | {cmp_} | {p_s} |")
    out.append("")
    return out


def part_b(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["(b) no finished draws yet."]
    out: list[str] = []
    for here in _by_layout(rows):
        for task in sorted({r["task"] for r in here}):
            out += _part_b_task([r for r in here if r["task"] == task])
        out += _part_b_pooled(here)
    return out


def _layout(r: dict[str, Any]) -> str:
    """How the draw's demonstrations reached the target (records before the option: turn)."""
    return str(r.get("layout", "turn"))


def _by_layout(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """``rows`` grouped by :func:`_layout`, layouts in name order (no rows: no groups)."""
    return [[r for r in rows if _layout(r) == lay] for lay in sorted({_layout(r) for r in rows})]


def _part_b_pooled(rows: list[dict[str, Any]]) -> list[str]:
    """Every draw's test questions pooled (tasks and repeats): McNemar of proxy cleaning, and
    of oracle cleaning, against random deletion of the same count, against no cleaning, and
    against each other."""
    rows = [
        r for r in rows if all(m in r["methods"] for m in ("none", "proxy", "oracle", "random"))
    ]
    if len({r["task"] for r in rows}) < 2:
        return []
    acc = {
        m: [bool(c) for r in rows for c in r["methods"][m]["correct"]]
        for m in ("none", "proxy", "oracle", "random")
    }
    n = len(acc["none"])
    out = [
        f"### (b) pooled: {len(rows)} draws, {len({r['task'] for r in rows})} tasks, "
        f"{n} test questions, layout {_layout(rows[0])}",
        "",
        "| method | accuracy [95 % CI] | proxy vs it: proxy-only / it-only, exact p "
        "| oracle vs it: oracle-only / it-only, exact p |",
        "|---|---|---|---|",
    ]

    def versus(a: str, b: str) -> str:
        if a == b:
            return ""
        mc = mcnemar(acc[a], acc[b])
        return f"{mc['a_only']} / {mc['b_only']}, p {mc['p']:.3g}"

    for m in ("none", "proxy", "oracle", "random"):
        lo, hi = wilson(sum(acc[m]), n)
        out.append(
            f"| {m} | {np.mean(acc[m]):.1%} [{lo:.0%}, {hi:.0%}] | {versus('proxy', m)} "
            f"| {versus('oracle', m)} |"
        )
    out.append("")
    return out


def _part_b_task(rows: list[dict[str, Any]]) -> list[str]:
    r0 = rows[0]
    task = r0["task"]
    out = [
        f"### (b) Poisoned demonstrations ({len(rows)} draws of {task}: {r0['n_demos']} "
        f"demonstrations, {len(r0['flipped'])} flipped labels, {r0['n_test']} test questions "
        f"per draw; target {r0['target']}; layout {_layout(r0)}; Kernel SHAP, {r0['samples']} "
        f"coalitions; chance {_chance(task):.0%})",
        "",
        "| method | accuracy | 95 % CI | removed (mean) | flipped among removed |",
        "|---|---|---|---|---|",
    ]
    acc: dict[str, list[int]] = {}
    for m in ("none", "proxy", "oracle", "random"):
        if not all(m in r["methods"] for r in rows):
            continue
        correct = [c for r in rows for c in r["methods"][m]["correct"]]
        acc[m] = correct
        lo, hi = wilson(sum(correct), len(correct))
        removed = np.mean([len(r["methods"][m].get("removed", [])) for r in rows])
        fl = sum(r["methods"][m].get("flipped_removed", 0) for r in rows)
        tot = sum(len(r["methods"][m].get("removed", [])) for r in rows)
        out.append(f"| {m} | {np.mean(correct):.1%} | [{lo:.0%}, {hi:.0%}] | {removed:.1f} | "
                   f"{fl}/{tot} |")  # fmt: skip
    out.append("")
    if "none" in acc and _at_chance(task, sum(acc["none"]), len(acc["none"])):
        out += _chance_note([f"{task} (poisoned, uncleaned)"])
    if "proxy" in acc and "oracle" in acc and np.mean(acc["oracle"]) > 0:
        share = np.mean(acc["proxy"]) / np.mean(acc["oracle"])
        out.append(f"Proxy-cleaned / oracle-cleaned accuracy: {share:.1%} (goal ≥ 98 %).")
    for other in ("random", "none"):
        if "proxy" in acc and other in acc:
            mc = mcnemar([bool(x) for x in acc["proxy"]], [bool(x) for x in acc[other]])
            n10, n01, p = mc["a_only"], mc["b_only"], mc["p"]
            out.append(f"- proxy vs {other}: McNemar {n10} vs {n01} discordant, exact p = {p:.3g}")
    out += _b_fidelity(rows)
    out.append("")
    return out


def _b_fidelity(rows: list[dict[str, Any]]) -> list[str]:
    """Proxy vs oracle on the same draws: Spearman of the Shapley values and the overlap
    (Jaccard) of the removed sets, per draw."""
    pairs = [
        (r["methods"]["proxy"], r["methods"]["oracle"])
        for r in rows
        if "values" in r["methods"].get("proxy", {}) and "values" in r["methods"].get("oracle", {})
    ]
    if not pairs:
        return []
    rho = [float(spearmanr(p["values"], o["values"]).statistic) for p, o in pairs]
    jac = [
        len(set(p["removed"]) & set(o["removed"]))
        / max(1, len(set(p["removed"]) | set(o["removed"])))
        for p, o in pairs
    ]
    return [
        f"- proxy vs oracle Shapley values: Spearman {', '.join(f'{x:.2f}' for x in rho)} "
        f"(mean {np.mean(rho):.2f}); removed sets, Jaccard "
        f"{', '.join(f'{x:.2f}' for x in jac)}"
    ]


def part_fidelity(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    r0 = rows[0]
    out = [
        f"### Attribution fidelity: proxy vs oracle Shapley values ({r0['shap']}, "
        f"{r0['samples']} coalitions, {r0['n_val']} validation requests; oracle = "
        f"{r0['target']})",
        "",
        "| task | repeat | demos | Spearman | Kendall | same least useful |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        same = "yes" if r["same_least_useful"] else "no"
        out.append(
            f"| {r['task']} | {r['repeat']} | {r['n_demos']} | {r['spearman']:.2f} | "
            f"{r['kendall']:.2f} | {same} |"
        )
    rho = np.mean([r["spearman"] for r in rows])
    tau = np.mean([r["kendall"] for r in rows])
    out.append(f"| **mean** | | | **{rho:.2f}** | {tau:.2f} | |")
    out.append("")
    return out


def part_c(
    a: list[dict[str, Any]],
    b: list[dict[str, Any]],
    timing: list[dict[str, Any]],
    fid: list[dict[str, Any]] | None = None,
) -> list[str]:
    out = ["### (c) Cost of attribution: proxy vs oracle", ""]
    rows: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    for part, rs in (("a", a), ("b", b), ("fidelity", fid or [])):
        for r in rs:
            p, o = r["methods"].get("proxy"), r["methods"].get("oracle")
            if p and o:
                rows.append((part, r, p, o))
    if rows:
        out += [
            "Seconds are the attribution's own compute time (kept in the demos cache, so a "
            "resumed run reports the original figure); oracle target calls = coalitions × "
            "validation requests (one scored answer each); billed tokens are counted only when "
            "the oracle ran in that process.",
            "",
            "| part | draws | proxy s (mean) | target calls (proxy) | oracle target calls | "
            "oracle billed prompt tokens | oracle s (mean) |",
            "|---|---|---|---|---|---|---|",
        ]
        for part in ("a", "b", "fidelity"):
            sel = [x for x in rows if x[0] == part]
            if not sel:
                continue
            ps = np.mean([x[2]["seconds"] for x in sel])
            oc = np.mean([x[3]["evaluations"] * x[1]["n_val"] for x in sel])
            billed = [x[3]["target"].get("prompt_tokens", 0) for x in sel if not x[3]["cached"]]
            ot = f"{np.mean(billed):.0f}" if billed else "–"
            osec = np.mean([x[3]["seconds"] for x in sel])
            out.append(f"| {part} | {len(sel)} | {ps:.0f} | 0 | {oc:.0f} | {ot} | {osec:.0f} |")
        out.append("")
        out.append(
            "The proxy spends no target call on attribution (0 % of the oracle's); both then "
            "share the screening calls of the ladder."
        )
    else:
        out.append("No draw with both proxy and oracle attributions yet.")
    for t in timing:
        out.append(
            f"- attribution of an 8-demonstration {t['task']} task: {t['seconds']:.0f} s "
            f"({t['coalitions']} coalitions, {t['proxy_tokens']} proxy tokens, "
            f"{t['provider']}, int8={t['int8']}, threads={t['threads']}, {t['time']}; "
            f"loading the proxy {t['load_s']:.0f} s"
            + (f"; CPU {t['cpu_s']:.0f} s" if "cpu_s" in t else "")
            + (f"; {t['note']}" if "note" in t else "")
            + ")"
        )
    out.append("")
    return out


def main(results: Path | None = None) -> None:
    """Write ``report.md`` from the ``*.jsonl`` of ``results`` (default ``results/demos``)."""
    global RESULTS
    RESULTS = results or RESULTS
    a, b, timing = _load("a.jsonl"), _load("b.jsonl"), _load("timing.jsonl")
    fid = _load("fidelity.jsonl")
    lines = ["# Demonstration selection and cleaning (seed paper's protocol)", ""]
    lines += part_probe(_load("probe.jsonl")) + part_poison_probe(_load("poison_probe.jsonl"))
    for here in _by_layout(a) or [[]]:
        lines += part_a(here) + part_a_half(here)
    lines += part_b(b)
    lines += part_fidelity(fid) + part_c(a, b, timing, fid)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
