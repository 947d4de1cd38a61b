"""Proxy speed on this machine: one embedding/encoding pass and the attribution scorer.

Usage::

    python -m benchmarks.proxy_speed [--tokens 1000] [--long 8000] [--repeats 3]
        [--threads N] [--cache-dir DIR] [--lime]

Text is real English (Python's ``pydoc_data.topics``), cut to exactly ``--tokens`` proxy
tokens. The ONNX export is made (or reused) before timing; a warm-up call precedes each
measurement; the median of ``--repeats`` runs is reported (attribution: one run, since the
passes before it warmed the session). Prints a Markdown table of seconds per call and
milliseconds per 1k tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from promptsieve.proxy import AttributionConfig, AttributionScorer, Proxy, ProxyConfig


def _text(proxy: Proxy, n_tokens: int) -> str:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    while True:
        _, offsets = proxy.tokenize(text)
        if len(offsets) >= n_tokens:
            return text[: int(offsets[n_tokens - 1][1])]
        text = text + "\n\n" + text


def _time(fn: Callable[[], object], repeats: int, warm: bool = True) -> float:
    if warm:
        fn()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--long", type=int, default=8000, help="length of the long-text pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--lime", action="store_true", help="also time lime (about 4x loo)")
    args = p.parse_args()

    proxy = Proxy.load(ProxyConfig(cache_dir=args.cache_dir, intra_op_threads=args.threads))
    short, long = _text(proxy, args.tokens), _text(proxy, args.long)
    question = "How are exceptions raised and handled?"
    rows: list[tuple[str, int, float, str]] = []

    def add(
        name: str, n: int, fn: Callable[[], object], repeats: int, note: str = "", warm: bool = True
    ) -> None:
        rows.append((name, n, _time(fn, repeats, warm), note))
        print(f"  {name} ({n} tokens): {rows[-1][2]:.3f} s", file=sys.stderr, flush=True)

    add("embed (1 pass)", args.tokens, lambda: proxy.embed([short]), args.repeats)
    add("encode keep_logits", args.tokens, lambda: proxy.encode(short), args.repeats)
    add(
        "encode + question",
        args.tokens,
        lambda: proxy.encode(short, question=question),
        args.repeats,
    )
    add("embed (1 pass)", args.long, lambda: proxy.embed([long]), args.repeats)
    n_words = len(short.split())
    for method in ("loo", "lime") if args.lime else ("loo",):
        cfg = AttributionConfig(method=method)  # type: ignore[arg-type]
        scorer = AttributionScorer(proxy, cfg)
        groups = min(n_words, cfg.max_units)
        perturb = groups if method == "loo" else max(4 * groups, 64)
        add(
            f"attribution-{method} + question",
            args.tokens,
            lambda s=scorer: s.score(short, question=question),  # type: ignore[misc]
            1,
            f"{n_words} words -> {groups} units, {perturb} perturbations",
            warm=False,  # the passes above warmed the session; one run costs minutes
        )

    cfg = proxy.config
    print(
        f"provider {proxy.provider}, threads {cfg.intra_op_threads or 'all'}, "
        f"window {cfg.window}, overlap {cfg.overlap}, batch {cfg.batch_size}\n"
    )
    print("| what | tokens | s / call | ms / 1k tokens | note |")
    print("|---|---:|---:|---:|---|")
    for name, n, sec, note in rows:
        print(f"| {name} | {n} | {sec:.3f} | {1000 * sec / (n / 1000):.0f} | {note} |")


if __name__ == "__main__":
    main()
