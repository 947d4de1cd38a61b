"""The encoder proxy on a GPU: the request path's CUDA provider (IO binding; float32 and float16
graphs) checked against the CPU provider, and timed.

The encoder (all-MiniLM-L6-v2) scores every compressed request. Its CUDA path (IO binding,
the optional float16 export) had run on the CPU only. ``pack`` (here) builds the encoder
artifacts as ``promptsieve export --out`` does, float32 and float16, and writes a few
multi-document prompts of the benchmark's test articles (about 2k tokens each) into a folder
(default ``.gpu-proxy``, git-ignored; about 130 MB, so it travels in parts where a call is
capped). ``run`` (on the GPU machine, with onnxruntime-gpu) loads each artifact through
``ProxyConfig(proxy_dir=...)``, the way a torch-free fleet does, and reports per graph:

- the largest difference of the sentence embeddings from the CPU's (float32, CPU provider);
- whether the default compressor (``Compressor()`` at ratio 0.5) keeps the same text as with
  the CPU proxy, prompt by prompt;
- the compressor's wall time per 1,000 prompt tokens (median over the prompts, after one
  warm-up), the figure the README gives for the CPU.

Commands::

    python -m benchmarks.proxy_gpu pack            # here
    python -m benchmarks.proxy_gpu run --out DIR   # there: DIR/proxy_gpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

PACK = Path(".gpu-proxy")
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


def pack(out: Path, n: int) -> None:
    """Build the float32 and float16 encoder artifacts and write ``n`` test prompts."""
    from promptsieve.proxy import ProxyConfig
    from promptsieve.proxy._artifacts import export_all

    from .bigbench.multidoc import multidoc_items

    for name, fp16 in (("fp32", False), ("fp16", True)):
        export_all(out / name, ProxyConfig(fp16=fp16), only=["encoder"])
    items = multidoc_items("test", 2000, n)
    prompts = [{"id": it.id, "prompt": it.prompt, "question": it.question} for it in items]
    (out / "prompts.json").write_text(json.dumps(prompts))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packed the encoder (fp32, fp16) and {len(prompts)} prompts into {out} "
          f"({size / 1e6:.1f} MB)")  # fmt: skip


def _load(folder: Path, providers: tuple[str, ...], fp16: bool) -> Any:
    from promptsieve.proxy import Proxy, ProxyConfig

    return Proxy.load(ProxyConfig(proxy_dir=folder, providers=providers, fp16=fp16))


def _compressions(proxy: Any, prompts: list[dict[str, str]]) -> tuple[list[str], list[float]]:
    """Kept text and wall ms per 1k proxy tokens of the default compressor, per prompt."""
    from promptsieve import Compressor

    comp = Compressor(proxy=proxy)
    comp.compress(prompts[0]["prompt"], ratio=0.5)  # warm-up: kernels, allocator
    texts, ms_per_1k = [], []
    for p in prompts:
        tokens = len(proxy.tokenize(p["prompt"])[0])
        t0 = time.perf_counter()
        c = comp.compress(p["prompt"], ratio=0.5)
        ms_per_1k.append((time.perf_counter() - t0) * 1e3 / (tokens / 1e3))
        texts.append(c.text)
    return texts, ms_per_1k


def run(pack_dir: Path, out: Path) -> None:
    import onnxruntime as ort

    prompts = json.loads((pack_dir / "prompts.json").read_text())
    texts = [p["prompt"] for p in prompts]
    record: dict[str, Any] = {
        "onnxruntime": ort.__version__, "available_providers": ort.get_available_providers(),
        "prompts": len(prompts), "time": time.strftime("%Y-%m-%d %H:%M"), "graphs": {},
    }  # fmt: skip

    def save() -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "proxy_gpu.json").write_text(json.dumps(record, indent=1))

    cpu = _load(pack_dir / "fp32", (CPU,), False)
    ref_emb = cpu.embed(texts)
    ref_texts, cpu_ms = _compressions(cpu, prompts)
    record["cpu"] = {"provider": cpu.provider, "ms_per_1k_tokens_median": statistics.median(cpu_ms)}
    save()
    for name in ("fp32", "fp16"):
        gpu = _load(pack_dir / name, (CUDA, CPU), name == "fp16")
        emb = gpu.embed(texts)
        kept, ms = _compressions(gpu, prompts)
        record["graphs"][name] = {
            "provider": gpu.provider,
            "io_binding": gpu.config.io_binding in (None, True) and gpu.provider == CUDA,
            "embedding_max_abs_diff": float(np.max(np.abs(emb - ref_emb))),
            "embedding_min_cosine": float(np.min(np.sum(emb * ref_emb, axis=1))),
            "same_kept_text": sum(a == b for a, b in zip(kept, ref_texts, strict=True)),
            "ms_per_1k_tokens_median": statistics.median(ms),
            "ms_per_1k_tokens": [round(x, 1) for x in ms],
        }
        save()
        print(json.dumps({name: record["graphs"][name]}), flush=True)
    print(json.dumps({"cpu": record["cpu"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="build the encoder artifacts and the prompts (here)")
    p.add_argument("--out", type=Path, default=PACK)
    p.add_argument("--n", type=int, default=8, help="test prompts (about 2k tokens each)")
    r = sub.add_parser("run", help="check and time the encoder on CUDA (on the GPU)")
    r.add_argument("--pack", type=Path, default=PACK)
    r.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args.out, args.n)
    else:
        run(args.pack, args.out)


if __name__ == "__main__":
    main()
