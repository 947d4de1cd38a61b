"""Scorer speed: promptsieve's one-pass head scorer vs LLMLingua-2's two encoders.

Usage::

    python -m benchmarks.scorer_speed [--lengths 512,2048,8192,32768] [--threads N]
        [--repeats R] [--out benchmarks/results/scorer_speed.json] [--quick]

Every (method, length) runs in a fresh subprocess so that ``ru_maxrss`` is that method's own
peak resident memory (native allocations included, which tracemalloc cannot see). All
methods get the same thread count (torch ``set_num_threads`` / onnxruntime
``intra_op_num_threads``, plus the OMP/MKL environment) and the same number of prompt tokens.

Methods (why they are comparable):

* ``head`` — promptsieve's request-path scorer, ``HeadScorer(proxy).score(text)``, on CPU,
  on real text (Python's pydoc topics), so tokenisation, windowing (window/overlap/batch size
  from ``ProxyConfig``), the scorer graph (truncated MiniLM + query head) and merging are all
  timed. The head: ``--head-file``, else the committed one (``default_head_path()``), else
  an untrained stock ``QueryHead`` (same cost as a trained one of its depth). Exported once,
  before timing.
* ``llmlingua2-small`` / ``llmlingua2-large`` — LLMLingua-2's architectures
  (multilingual BERT-base / XLM-RoBERTa-large token classifiers) built from their configs
  with random weights (speed only, nothing downloaded), fp32, eval, ``inference_mode``,
  default (SDPA) attention. The same number of tokens is fed in 512-token windows
  (510 content tokens + CLS/SEP, as LLMLingua-2 chunks), no overlap, batched like
  promptsieve (``ProxyConfig.batch_size``, 8; LLMLingua-2's own default is 50) and padded to
  the longest window in the batch. Token ids are random and tokenisation is not timed, so
  the baselines are, if anything, flattered.

Warm-up (one batch of windows, excluded) precedes the timed runs; the median of the repeats
is reported. Timings depend on what else runs on the machine: quote numbers measured on a
quiet one (the load average is recorded next to each result).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HEAD = "head"
RELEVANCE = "relevance"  # the question-aware relevance scorer (issue 16), one question per run
SMALL = "llmlingua2-small"
LARGE = "llmlingua2-large"
METHODS: dict[str, str] = {
    HEAD: "promptsieve head scorer (ONNX MiniLM-L6 + head)",
    RELEVANCE: "promptsieve relevance scorer (ONNX MiniLM-L6 layers + relevance head, question)",
    SMALL: "LLMLingua-2 small (mBERT-base token classifier, torch)",
    LARGE: "LLMLingua-2 large (XLM-R-large token classifier, torch)",
}
DEFAULT_LENGTHS = (512, 2048, 8192, 32768)
QUICK_LENGTHS = (512, 2048)
DEFAULT_OUT = Path("benchmarks/results/scorer_speed.json")
_RESULT_MARK = "SCORER_SPEED_RESULT "
_REPO_ROOT = Path(__file__).resolve().parents[1]
# Targets from issue 3.
TARGET_VS_LARGE = 10.0
TARGET_VS_SMALL = 3.0
TARGET_LOGLOG_SLOPE = 1.1  # exponent of time vs tokens; 1.0 = exactly linear


@dataclass(frozen=True)
class _Arch:
    """An LLMLingua-2 encoder: its config and the special token ids its windows carry."""

    family: str  # "xlmr" | "bert"
    config: dict[str, int]
    cls_id: int
    sep_id: int
    pad_id: int


_ARCHS: dict[str, _Arch] = {
    LARGE: _Arch(
        family="xlmr",
        config={
            "vocab_size": 250002,
            "hidden_size": 1024,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "max_position_embeddings": 514,
            "type_vocab_size": 1,
            "num_labels": 2,
        },
        cls_id=0,
        sep_id=2,
        pad_id=1,
    ),
    SMALL: _Arch(
        family="bert",
        config={
            "vocab_size": 119547,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 512,
            "num_labels": 2,
        },
        cls_id=101,
        sep_id=102,
        pad_id=0,
    ),
}


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run; also what the JSON records as its settings."""

    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    repeats: int = 3
    large_long_repeats: int = 1  # repeats for LLMLingua-2-large at lengths >= 8192
    methods: tuple[str, ...] = (HEAD, SMALL, LARGE)
    head_file: Path | None = None  # None: the packaged head, else an untrained stock one
    window: int = 512
    overlap: int = 64
    batch_size: int = 8
    timeout_s: float = 3600.0
    out: Path = DEFAULT_OUT


@dataclass(frozen=True)
class _Job:
    """What one worker subprocess measures (JSON-serialisable)."""

    method: str
    tokens: int
    threads: int
    repeats: int
    window: int
    overlap: int
    batch_size: int
    head_file: str  # resolved path (the stock head is written by the prepare step)
    cache_dir: str


# --------------------------------------------------------------------------- text


def _corpus() -> str:
    """Real English/Python documentation text shipped with CPython (offline)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def _proxy_tokenizer() -> Any:
    """The proxy's WordPiece tokenizer, without its 128-token truncation/padding."""
    from tokenizers import Tokenizer

    from promptsieve.proxy._export import default_model_dir

    tok = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def _text_of_tokens(n_tokens: int, tokenizer: Any) -> str:
    """A prefix of the corpus that the proxy tokenizer splits into ~``n_tokens`` tokens."""
    corpus = _corpus()
    text = corpus
    enc = tokenizer.encode(text, add_special_tokens=False)
    while len(enc.ids) < n_tokens:  # longer than the corpus: repeat it
        text += "\n\n" + corpus
        enc = tokenizer.encode(text, add_special_tokens=False)
    return text[: enc.offsets[n_tokens - 1][1]]


def _windows(n_tokens: int, content: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` token ranges of ≤``content``-token windows ``stride`` apart."""
    out: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + content, n_tokens)
        out.append((start, end))
        if end >= n_tokens:
            return out
        start += stride


# --------------------------------------------------------------------------- head


def _proxy_defaults() -> dict[str, int]:
    """window/overlap/batch_size defaults of ``ProxyConfig`` (what the scorer runs with)."""
    from promptsieve.proxy import ProxyConfig

    cfg = ProxyConfig()
    return {"window": cfg.window, "overlap": cfg.overlap, "batch_size": cfg.batch_size}


def _packaged_head() -> Path | None:
    """The head the scorer ships with, if the proxy package names one."""
    import promptsieve.proxy as proxy_pkg

    for name in ("default_head_path", "DEFAULT_HEAD"):
        found = getattr(proxy_pkg, name, None)
        path = found() if callable(found) else found
        if path is not None and Path(path).is_file():
            return Path(path)
    return None


def _stock_head(cache_dir: Path) -> Path:
    """An untrained stock ``QueryHead``: the same graph cost as a trained one (needs torch)."""
    path = cache_dir / "stock_head.safetensors"
    if not path.is_file():
        import torch

        from promptsieve.proxy._head import QueryHead, save_head

        torch.manual_seed(0)
        save_head(QueryHead(), path)
    return path


def _head_runner(job: _Job) -> tuple[Callable[[str], int], dict[str, Any]]:
    """The request-path scorer on CPU: ``HeadScorer(proxy).score`` (else ``proxy.encode``).

    Loading with ``job.cache_dir`` finds the export the prepare step made, so the measured
    process never imports torch.
    """
    import promptsieve.proxy as proxy_pkg
    from promptsieve.proxy import Proxy, ProxyConfig

    proxy = Proxy.load(
        ProxyConfig(
            cache_dir=Path(job.cache_dir),
            providers=("CPUExecutionProvider",),
            intra_op_threads=job.threads,
            window=job.window,
            overlap=job.overlap,
            batch_size=job.batch_size,
            scorer_head=Path(job.head_file),
        )
    )
    proxy.scorer_session  # noqa: B018 - load (or export, in the prepare step) the scorer graph
    head_scorer = getattr(proxy_pkg, "HeadScorer", None)
    run: Callable[[str], int]
    if job.method in (RELEVANCE, "prepare-head"):
        from promptsieve.proxy.relevance import RelevanceScorer

        rel = RelevanceScorer(proxy)  # exports its graph in the prepare step
        question = "Which of the documents above says when the language feature was added?"
        if job.method == RELEVANCE:

            def run(text: str) -> int:
                return len(rel.score(text, question=question).scores)

            info = {"impl": "RelevanceScorer.score (+ question)", "provider": proxy.provider}
            return run, {**info, "fingerprint": rel.graph_fingerprint}
    if head_scorer is not None:
        scorer = head_scorer(proxy)

        def run(text: str) -> int:
            return len(scorer.score(text).scores)

        impl = "HeadScorer.score"
    else:

        def run(text: str) -> int:
            return len(proxy.encode(text).keep_logits)

        impl = "Proxy.encode (HeadScorer not found)"
    info = {
        "impl": impl,
        "provider": proxy.provider,
        "fingerprint": proxy.scorer_fingerprint,
        "head_file": job.head_file,
    }
    return run, info


# --------------------------------------------------------------------------- LLMLingua-2


def _llmlingua2_runner(
    job: _Job,
) -> tuple[Callable[[int], list[tuple[Any, Any]]], Callable[[list[tuple[Any, Any]]], int], dict]:
    """Forward pass of an LLMLingua-2 architecture over ``n`` tokens in 512-token windows."""
    import torch
    from transformers import (
        BertConfig,
        BertForTokenClassification,
        XLMRobertaConfig,
        XLMRobertaForTokenClassification,
    )

    arch = _ARCHS[job.method]
    torch.manual_seed(0)
    model: Any
    if arch.family == "xlmr":
        model = XLMRobertaForTokenClassification(XLMRobertaConfig(**arch.config))
    else:
        model = BertForTokenClassification(BertConfig(**arch.config))
    model = model.eval().float()
    content = job.window - 2
    gen = torch.Generator().manual_seed(0)

    def batches(n: int) -> list[tuple[Any, Any]]:
        ids = torch.randint(1000, arch.config["vocab_size"] - 1, (n,), generator=gen)
        spans = _windows(n, content, content)
        out = []
        for b in range(0, len(spans), job.batch_size):
            batch = spans[b : b + job.batch_size]
            width = max(e - s for s, e in batch) + 2
            input_ids = torch.full((len(batch), width), arch.pad_id, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for i, (s, e) in enumerate(batch):
                input_ids[i, 0] = arch.cls_id
                input_ids[i, 1 : e - s + 1] = ids[s:e]
                input_ids[i, e - s + 1] = arch.sep_id
                mask[i, : e - s + 2] = 1
            out.append((input_ids, mask))
        return out

    def run(prepared: list[tuple[Any, Any]]) -> int:
        with torch.inference_mode():
            for input_ids, mask in prepared:
                model(input_ids=input_ids, attention_mask=mask).logits.softmax(-1)
        return int(sum(int(mask.sum()) - 2 * len(mask) for _, mask in prepared))

    info = {
        "impl": "torch-random-weights",
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
    }
    return batches, run, info


# --------------------------------------------------------------------------- worker


def _rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _measure(job: _Job) -> dict[str, Any]:
    """Load the method, warm it up on one batch, then time ``job.repeats`` full runs."""
    if job.method not in (HEAD, RELEVANCE):
        import torch

        torch.set_num_threads(job.threads)
    warm_tokens = min(job.tokens, job.batch_size * (job.window - 2))
    timed: Callable[[], int]
    warm: Callable[[], int]
    if job.method in (HEAD, RELEVANCE):
        run_text, info = _head_runner(job)
        tok = _proxy_tokenizer()
        text, warm_text = _text_of_tokens(job.tokens, tok), _text_of_tokens(warm_tokens, tok)
        info["chars"] = len(text)
        timed, warm = (lambda: run_text(text)), (lambda: run_text(warm_text))
        content, stride = job.window - 2, job.window - 2 - job.overlap
    else:
        make_inputs, forward, info = _llmlingua2_runner(job)
        inputs, warm_inputs = make_inputs(job.tokens), make_inputs(warm_tokens)  # not timed
        timed, warm = (lambda: forward(inputs)), (lambda: forward(warm_inputs))
        content = stride = job.window - 2
    load_rss = _rss_mb()
    warm()
    times_ms: list[float] = []
    cpu_ms: list[float] = []
    scored = 0
    for _ in range(job.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        scored = timed()
        times_ms.append((time.perf_counter() - t0) * 1000.0)
        cpu_ms.append((time.process_time() - c0) * 1000.0)
    median = statistics.median(times_ms)
    cpu = statistics.median(cpu_ms)
    return {
        "method": job.method,
        "tokens": job.tokens,
        "scored_tokens": scored,
        "windows": len(_windows(job.tokens, content, stride)),
        "repeats": job.repeats,
        "times_ms": [round(t, 2) for t in times_ms],
        "median_ms": round(median, 2),
        "ms_per_1k": round(median / job.tokens * 1000.0, 3),
        "cpu_ms_per_1k": round(cpu / job.tokens * 1000.0, 3),
        "load_rss_mb": round(load_rss, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
        **info,
    }


def _worker_main(spec: str) -> int:
    job = _Job(**json.loads(spec))
    if job.method == "prepare-head":
        if not Path(job.head_file).is_file():
            _stock_head(Path(job.cache_dir))
        _head_runner(job)  # Proxy.load exports and caches the graph on first use
        result: dict[str, Any] = {"prepared": True}
    else:
        result = _measure(job)
    print(_RESULT_MARK + json.dumps(result), flush=True)
    return 0


def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[var] = str(threads)
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    return env


def _spawn(job: _Job, timeout_s: float) -> dict[str, Any]:
    """Run one job in a fresh interpreter; its ``ru_maxrss`` is then that job's alone."""
    cmd = [sys.executable, "-m", "benchmarks.scorer_speed", "--worker", json.dumps(asdict(job))]
    load_before = os.getloadavg()[0]
    try:
        proc = subprocess.run(
            cmd,
            cwd=_REPO_ROOT,
            env=_thread_env(job.threads),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"method": job.method, "tokens": job.tokens, "error": f"timeout {timeout_s}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(_RESULT_MARK) :])
            result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            return result
    tail = proc.stderr.strip().splitlines()[-5:]
    return {"method": job.method, "tokens": job.tokens, "error": " | ".join(tail)}


# --------------------------------------------------------------------------- summary


def _loglog_slope(points: Sequence[tuple[int, float]]) -> float | None:
    """Exponent k of ``time ~ tokens**k`` by least squares (1.0 = linear)."""
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(ms) for _, ms in points]
    return round(statistics.linear_regression(xs, ys).slope, 3)


def _summarise(cfg: BenchConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    ok = {(r["method"], r["tokens"]): r for r in results if "error" not in r}
    ratios: dict[str, dict[str, float | None]] = {}
    for n in cfg.lengths:
        head = ok.get((HEAD, n))
        row: dict[str, float | None] = {}
        for name, method in (("small_over_head", SMALL), ("large_over_head", LARGE)):
            other = ok.get((method, n))
            row[name] = round(other["ms_per_1k"] / head["ms_per_1k"], 2) if head and other else None
            row[name + "_cpu"] = (
                round(other["cpu_ms_per_1k"] / head["cpu_ms_per_1k"], 2) if head and other else None
            )
        ratios[str(n)] = row
    growth: dict[str, dict[str, float | None]] = {}
    for method in cfg.methods:
        pts = [(n, ok[(method, n)]["median_ms"]) for n in cfg.lengths if (method, n) in ok]
        per_1k = [ok[(method, n)]["ms_per_1k"] for n, _ in pts]
        growth[method] = {
            "per_1k_last_over_first": round(per_1k[-1] / per_1k[0], 3) if len(pts) > 1 else None,
            "loglog_slope": _loglog_slope(pts),
        }

    def _all_at_least(key: str, target: float) -> bool | None:
        vals = [v for r in ratios.values() if (v := r[key]) is not None]
        return all(v >= target for v in vals) if vals else None

    slope = growth.get(HEAD, {}).get("loglog_slope")
    targets = {
        f"head_>={TARGET_VS_LARGE:g}x_large": _all_at_least("large_over_head", TARGET_VS_LARGE),
        f"head_>={TARGET_VS_SMALL:g}x_small": _all_at_least("small_over_head", TARGET_VS_SMALL),
        f"head_linear(loglog_slope<={TARGET_LOGLOG_SLOPE})": (
            None if slope is None else slope <= TARGET_LOGLOG_SLOPE
        ),
    }
    return {"ratios": ratios, "growth": growth, "targets": targets}


def _fmt(v: Any, spec: str = ".1f", suffix: str = "") -> str:
    return "—" if v is None else format(v, spec) + suffix


def _markdown(cfg: BenchConfig, results: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    ok = {(r["method"], r["tokens"]): r for r in results if "error" not in r}

    def ratio(r: dict[str, Any], key: str) -> str:
        return f"{_fmt(r[key], '.1f', '×')} ({_fmt(r[key + '_cpu'], '.1f', '×')})"

    def both(method: str, n: int) -> str:
        return f"{cell(method, n, 'ms_per_1k')} / {cell(method, n, 'cpu_ms_per_1k')}"

    def cell(method: str, n: int, key: str, spec: str = ".1f") -> str:
        r = ok.get((method, n))
        return _fmt(r[key] if r else None, spec)

    head_label = next((r.get("impl") for r in results if r["method"] == HEAD), None)
    lines = [
        f"Scorer speed — {cfg.threads} thread(s), batch {cfg.batch_size} windows of "
        f"{cfg.window} tokens, median of {cfg.repeats} "
        f"(LLMLingua-2-large ≥8k: {cfg.large_long_repeats}); head impl: {head_label}",
        "",
        "ms per 1k tokens, wall / CPU (CPU = process time of all threads)",
        "",
        "| tokens | head | LL2-small | LL2-large | small/head wall (CPU) | large/head wall (CPU) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for n in cfg.lengths:
        r = summary["ratios"][str(n)]
        lines.append(
            f"| {n} | {both(HEAD, n)} | {both(SMALL, n)} | {both(LARGE, n)} | "
            f"{ratio(r, 'small_over_head')} | {ratio(r, 'large_over_head')} |"
        )
    lines += [
        "",
        "| peak RSS MiB (model loaded → peak) | " + " | ".join(str(n) for n in cfg.lengths) + " |",
        "|---|" + "---:|" * len(cfg.lengths),
    ]
    for method in cfg.methods:
        cells = []
        for n in cfg.lengths:
            r = ok.get((method, n))
            cells.append(f"{r['load_rss_mb']:.0f} → {r['peak_rss_mb']:.0f}" if r else "—")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| method | ms/1k last÷first length | log-log slope (1 = linear) |",
        "|---|---:|---:|",
    ]
    for method, g in summary["growth"].items():
        lines.append(
            f"| {method} | {_fmt(g['per_1k_last_over_first'], '.2f')} | "
            f"{_fmt(g['loglog_slope'], '.2f')} |"
        )
    lines.append("")
    for name, passed in summary["targets"].items():
        lines.append(f"- {name}: {'—' if passed is None else ('PASS' if passed else 'FAIL')}")
    errors = [r for r in results if "error" in r]
    for r in errors:
        lines.append(f"- ERROR {r['method']} @ {r['tokens']}: {r['error']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def run_benchmark(cfg: BenchConfig) -> dict[str, Any]:
    """Run every (method, length) in its own subprocess; return the JSON report."""
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="scorer_speed_") as cache_dir:
        head = cfg.head_file or _packaged_head() or Path(cache_dir) / "stock_head.safetensors"

        def job(method: str, tokens: int, repeats: int) -> _Job:
            return _Job(
                method=method,
                tokens=tokens,
                threads=cfg.threads,
                repeats=repeats,
                window=cfg.window,
                overlap=cfg.overlap,
                batch_size=cfg.batch_size,
                head_file=str(head),
                cache_dir=cache_dir,
            )

        if HEAD in cfg.methods or RELEVANCE in cfg.methods:  # export outside measured runs
            prep = _spawn(job("prepare-head", 0, 0), cfg.timeout_s)
            if "error" in prep:
                raise RuntimeError(f"preparing the head scorer failed: {prep['error']}")
        for method in cfg.methods:
            for n in cfg.lengths:
                repeats = cfg.repeats
                if method == LARGE and n >= 8192:
                    repeats = min(repeats, cfg.large_long_repeats)
                print(f"… {method} @ {n} tokens ({repeats} repeat(s))", file=sys.stderr)
                r = _spawn(job(method, n, max(1, repeats)), cfg.timeout_s)
                print(f"  {json.dumps(r)}", file=sys.stderr)
                results.append(r)
    summary = _summarise(cfg, results)
    import onnxruntime
    import torch
    import transformers

    meta = {
        "settings": {**asdict(cfg), "out": str(cfg.out), "head_file": str(cfg.head_file)},
        "methods": {m: METHODS[m] for m in cfg.methods},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "transformers": transformers.__version__,
        },
        "targets": {
            "head_vs_large": TARGET_VS_LARGE,
            "head_vs_small": TARGET_VS_SMALL,
            "loglog_slope_max": TARGET_LOGLOG_SLOPE,
        },
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return {"meta": meta, "results": results, **summary}


def _parse_ints(s: str) -> tuple[int, ...]:
    vals = tuple(int(x) for x in s.split(",") if x.strip())
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError("expected positive comma-separated integers")
    return vals


def _parse_methods(s: str) -> tuple[str, ...]:
    aliases = {"head": HEAD, "small": SMALL, "large": LARGE, SMALL: SMALL, LARGE: LARGE}
    aliases[RELEVANCE] = RELEVANCE
    try:
        return tuple(aliases[x.strip()] for x in s.split(",") if x.strip())
    except KeyError as exc:
        raise argparse.ArgumentTypeError(f"unknown method {exc}; use head,small,large") from exc


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scorer_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--lengths", type=_parse_ints, default=None, help="prompt lengths in tokens")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=None, help="timed runs per cell (median)")
    p.add_argument(
        "--large-long-repeats",
        type=int,
        default=1,
        help="cap on repeats for LLMLingua-2-large at lengths >= 8192",
    )
    p.add_argument("--methods", type=_parse_methods, default=(HEAD, SMALL, LARGE))
    p.add_argument(
        "--head-file",
        type=Path,
        default=None,
        help="head to fold into the graph (default: packaged head, else untrained stock head)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default: ProxyConfig's")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per subprocess")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--quick", action="store_true", help="lengths 512,2048 and 1 repeat")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    if args.worker:
        return _worker_main(args.worker)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    proxy = _proxy_defaults()
    cfg = BenchConfig(
        lengths=args.lengths or (QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS),
        threads=args.threads,
        repeats=args.repeats or (1 if args.quick else 3),
        large_long_repeats=args.large_long_repeats,
        methods=args.methods,
        head_file=args.head_file,
        window=proxy["window"],
        overlap=proxy["overlap"],
        batch_size=args.batch_size or proxy["batch_size"],
        timeout_s=args.timeout,
        out=args.out,
    )
    report = run_benchmark(cfg)
    print(_markdown(cfg, report["results"], report))
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", cfg.out)
    return 1 if any("error" in r for r in report["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
