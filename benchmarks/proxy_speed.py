"""Proxy speed on this machine: one embedding/encoding pass and the attribution scorer.

Usage::

    python -m benchmarks.proxy_speed [--tokens 1000] [--long 8000] [--repeats 3]
        [--threads N] [--cache-dir DIR] [--lime]
    python -m benchmarks.proxy_speed --scorer-sweep [--tokens 1000] [--repeats 5]

``--scorer-sweep`` times the one-pass scorer graph (``Proxy.keep_probs``) for encoder depths
1/2/3/6, graph optimisation ALL vs EXTENDED, ORT spinning on/off, window overlap 0/32/64,
balanced vs old (tail padded to a full window) windows and int8 dynamic quantisation,
reporting wall and CPU (process) time per call. Heads are untrained stock ``QueryHead``s
(same cost as trained ones); needs ``promptsieve[export]``. Wall time on a shared machine
is inflated by other load: compare CPU time, and re-measure on a quiet machine.

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


def _time2(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``fn`` after one warm-up call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def _scorer_sweep(args: argparse.Namespace) -> None:
    import tempfile

    import numpy as np
    import onnxruntime as ort
    import torch

    from promptsieve.proxy import default_head_path
    from promptsieve.proxy._head import QueryHead, save_head

    tmp = Path(tempfile.mkdtemp(prefix="scorer_sweep_"))
    cache = args.cache_dir or tmp
    rows: list[tuple[str, float, float]] = []
    base = ProxyConfig(cache_dir=cache, intra_op_threads=args.threads)

    def head(depth: int) -> Path:
        path = tmp / f"head-{depth}.safetensors"
        torch.manual_seed(0)
        save_head(QueryHead(layers=depth), path)
        return path

    def cfg(**kw: object) -> ProxyConfig:
        from dataclasses import replace

        return replace(base, **kw)  # type: ignore[arg-type]

    def measure(name: str, proxy: Proxy, text: str) -> None:
        proxy.scorer_session  # noqa: B018 - export outside the timing
        wall, cpu = _time2(lambda: proxy.keep_probs(text), args.repeats)
        rows.append((name, wall, cpu))
        print(f"  {name}: wall {wall * 1000:.0f} ms, cpu {cpu * 1000:.0f} ms", file=sys.stderr)

    full = Proxy.load(base)
    text = _text(full, args.tokens)
    wall, cpu = _time2(lambda: full.encode(text), args.repeats)
    rows.append(("full 6-layer graph, encode()", wall, cpu))
    heads = {d: head(d) for d in (1, 2, 3, 6)}
    for d in (1, 2, 3, 6):
        measure(f"scorer layers={d}", Proxy.load(cfg(scorer_head=heads[d])), text)
    packaged = default_head_path()
    d0 = 2
    if packaged.is_file():
        from promptsieve.proxy._export import scorer_layers

        d0 = scorer_layers(packaged)
    h0 = heads.get(d0) or head(d0)
    measure(
        f"layers={d0} opt=extended",
        Proxy.load(cfg(scorer_head=h0, graph_optimization="extended")),
        text,
    )
    measure(f"layers={d0} spinning on", Proxy.load(cfg(scorer_head=h0, allow_spinning=True)), text)
    for ov in (0, 32):
        measure(f"layers={d0} overlap={ov}", Proxy.load(cfg(scorer_head=h0, overlap=ov)), text)
    # old windowing: the same windows but every one padded to a full 512-token window
    p = Proxy.load(cfg(scorer_head=h0))
    n_win = p.keep_probs(text).n_windows
    sess = p.scorer_session
    for width, label in ((p.keep_probs(text).width, "balanced"), (p.config.window, "padded-512")):
        feeds = {
            "input_ids": np.full((n_win, width), 1000, dtype=np.int64),
            "attention_mask": np.ones((n_win, width), dtype=np.int64),
            "token_type_ids": np.zeros((n_win, width), dtype=np.int64),
        }
        wall, cpu = _time2(lambda f=feeds: sess.run(["keep_probs"], f), args.repeats)
        rows.append((f"layers={d0} raw run {n_win}x{width} ({label})", wall, cpu))
    # int8 dynamic quantisation of the scorer graph
    from onnxruntime.quantization import QuantType, quantize_dynamic

    assert p.scorer_dir is not None
    q8 = tmp / "scorer-int8.onnx"
    quantize_dynamic(str(p.scorer_dir / "model.onnx"), str(q8), weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads or 0
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    p._scorer = ort.InferenceSession(str(q8), so, providers=["CPUExecutionProvider"])
    measure(f"layers={d0} int8 dynamic", p, text)
    print(f"\n{args.tokens} tokens, {n_win} windows, threads {args.threads or 'all'}\n")
    print("| scorer variant | wall ms | CPU ms |")
    print("|---|---:|---:|")
    for name, wall, cpu in rows:
        print(f"| {name} | {wall * 1000:.0f} | {cpu * 1000:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=1000)
    p.add_argument("--long", type=int, default=8000, help="length of the long-text pass")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all)")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--lime", action="store_true", help="also time lime (about 4x loo)")
    p.add_argument("--scorer-sweep", action="store_true", help="time scorer-graph variants")
    args = p.parse_args()
    if args.scorer_sweep:
        _scorer_sweep(args)
        return

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
