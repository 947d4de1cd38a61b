"""Demonstration attribution on a GPU: the LM proxy's own ONNX graph under onnxruntime's
CUDA provider (issue: "state the GPU figure when a GPU is available").

A GPU machine lent for a few minutes reaches no network, and what travels to it is capped
(64 MiB a call), so neither the 2.5 GB float32 export nor the 491 MB GGUF it is built from can
go there. Two steps therefore:

- ``pack`` (here, where the export is cached) writes the exported graph *without its
  weights*: the graph file itself (``model.onnx``, which names its weights as external data),
  a manifest of every external tensor (name, element type, shape, file, offset, length), the
  tokenizer, and the draws of the task that the timing runs on (demonstrations, validation
  requests, layout), into a folder (default ``.gpu``, git-ignored).
- ``run`` (on the GPU machine) fills every external weight matrix with seeded random values
  (normal, standard deviation 0.02) at its recorded offset (tensors of up to 64 KiB, such as
  norms and rotary frequencies, travel with their real values), opens the graph through
  :class:`promptsieve.proxy.lm.LMProxy` (the product's provider selection, CUDA first), and
  times :func:`promptsieve.demos.attribute_demos` as ``demos_bench timing`` does on the CPU.

The work of a forward pass does not depend on the weights' values (same graph, same shapes,
same tokens, same batches and KV-cache reuse), so the wall time stands for the real proxy's;
the Shapley values themselves are meaningless and are not reported. ``run`` also checks the
CUDA provider against the CPU provider on the same graph and weights (answer
log-probabilities of a few coalitions; the largest difference in nats is reported).

Commands::

    python -m benchmarks.demos_gpu pack            # here: writes .gpu/
    python -m benchmarks.demos_gpu run --out DIR   # there: DIR/gpu_timing.json
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

PACK = Path(".gpu")
#: onnx TensorProto element types that ``run`` can fill (float32, float16).
_DTYPES = {1: np.float32, 10: np.float16}
_SEED = 0
_STD = 0.02
#: Tensors up to this size keep their real values (RMSNorm weights, rotary frequencies,
#: biases), so activations keep their real scale; the weight matrices are random.
_KEEP_BYTES = 64 * 1024


# ----------------------------------------------------------------------------------- pack


def pack(out: Path, task: str, layout: str, val: int, draws: list[int]) -> None:
    """Write the weightless graph, its manifest, the tokenizer and the draws into ``out``."""
    from promptsieve.proxy._lm_export import ensure_lm_export
    from promptsieve.proxy.lm import LMProxyConfig

    from .demos_tasks import TASKS, draw, fmt_for

    cfg = LMProxyConfig()
    folder, fp, _ = ensure_lm_export(None, cfg.resolved_cache_dir(), cfg.export_settings())
    tensors = manifest(folder / "model.onnx")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copyfile(folder / "model.onnx", out / "model.onnx")
    for name in ("tokenizer.json", "config.json"):
        shutil.copyfile(folder / name, out / name)
    spec = TASKS[task]
    fmt = fmt_for(spec, layout)
    packed = []
    for n_demos in draws:
        d = draw(task, 0, n_demos, val, 1)
        packed.append({
            "task": task, "n_demos": n_demos,
            "demos": [[x.input, x.output] for x in d.demos],
            "validation": [[v.input, v.answer] for v in d.validation],
        })  # fmt: skip
    meta = {
        "proxy": fp, "layout": layout, "fmt": asdict(fmt), "draws": packed, "tensors": tensors,
        "bytes": sum(t["length"] for t in tensors),
    }  # fmt: skip
    (out / "pack.json").write_text(json.dumps(meta))
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"packed {len(tensors)} weight tensors ({meta['bytes'] / 1e9:.2f} GB left behind) "
          f"and {len(packed)} draws of {task} into {out} ({size / 1e6:.1f} MB)")  # fmt: skip


def manifest(graph_file: Path) -> list[dict[str, Any]]:
    """One entry per tensor that ``graph_file`` keeps as external data (name, element type,
    dims, file, offset, length); tensors of up to :data:`_KEEP_BYTES` carry their real
    bytes (``real``, base64). Raises SystemExit for an element type ``run`` cannot fill."""
    import onnx

    model = onnx.load(str(graph_file), load_external_data=False)
    tensors = []
    for t in _external_tensors(onnx, model.graph):
        ext = {e.key: e.value for e in t.external_data}
        if t.data_type not in _DTYPES:
            raise SystemExit(f"external tensor {t.name} has element type {t.data_type}")
        entry = {
            "name": t.name, "type": t.data_type, "dims": list(t.dims),
            "file": ext["location"], "offset": int(ext.get("offset", 0)),
            "length": int(ext["length"]),
        }  # fmt: skip
        if entry["length"] <= _KEEP_BYTES:  # norms, rotary frequencies: their real values
            with (graph_file.parent / entry["file"]).open("rb") as f:
                f.seek(entry["offset"])
                entry["real"] = base64.b64encode(f.read(entry["length"])).decode()
        tensors.append(entry)
    return tensors


def _external_tensors(onnx: Any, graph: Any) -> Iterator[Any]:
    """Every tensor of ``graph`` stored as external data: initializers and the values of
    Constant nodes (subgraphs included)."""
    external = onnx.TensorProto.EXTERNAL
    for t in graph.initializer:
        if t.data_location == external:
            yield t
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_location == external:
                yield a.t
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                yield from _external_tensors(onnx, g)


# ------------------------------------------------------------------------------------ run


def materialise(pack_dir: Path, tensors: list[dict[str, Any]], dest: Path) -> None:
    """The export folder ``dest``: the packed graph (and tokenizer and config, where packed)
    plus its external data, ``tensors`` (a :func:`manifest`) filled with seeded random
    values or, where carried, their real bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.onnx", "tokenizer.json", "config.json"):
        if (pack_dir / name).is_file():
            shutil.copyfile(pack_dir / name, dest / name)
    rng = np.random.default_rng(_SEED)
    handles: dict[str, Any] = {}
    try:
        for t in sorted(tensors, key=lambda t: (t["file"], t["offset"])):
            if t["file"] not in handles:
                handles[t["file"]] = (dest / t["file"]).open("wb")
            f = handles[t["file"]]
            dtype = _DTYPES[t["type"]]
            n = t["length"] // np.dtype(dtype).itemsize
            f.seek(t["offset"])
            if "real" in t:
                f.write(base64.b64decode(t["real"]))
            else:
                f.write((rng.standard_normal(n, dtype=np.float32) * _STD).astype(dtype).tobytes())
    finally:
        for f in handles.values():
            f.close()


def _proxy(cache: Path, stand_in: Path, providers: tuple[str, ...], threads: int | None) -> Any:
    from promptsieve.proxy.lm import LMProxy, LMProxyConfig

    cfg = LMProxyConfig(
        gguf=stand_in, cache_dir=cache, providers=providers, intra_op_threads=threads,
        batch_size=4, allow_export=False,
    )  # fmt: skip
    return LMProxy.load(cfg)


def _timed(scorer: Any, d: dict[str, Any], fmt: Any, method: str, samples: int) -> dict[str, Any]:
    from promptsieve.demos import (
        DemoAttributionConfig,
        Demonstration,
        ValidationExample,
        attribute_demos,
    )

    demos = [Demonstration(q, a) for q, a in d["demos"]]
    val = [ValidationExample(q, a) for q, a in d["validation"]]
    cfg = DemoAttributionConfig(
        cache=False,
        max_validation=len(val),
        method=method,
        samples=samples,  # type: ignore[arg-type]
    )
    lm = scorer.lm
    runs0, tokens0 = lm.runs, lm.tokens_run
    attr = attribute_demos(demos, val, fmt=fmt, config=cfg, scorer=scorer)
    return {
        "task": d["task"], "n_demos": len(demos), "n_val": len(val), "method": attr.method,
        "coalitions": attr.evaluations, "seconds": round(attr.seconds, 2),
        "proxy_tokens": attr.tokens, "graph_runs": lm.runs - runs0,
        "tokens_run": lm.tokens_run - tokens0, "provider": lm.provider,
    }  # fmt: skip


def run(
    pack_dir: Path, out: Path, cpu_threads: int | None, budget_s: float, cpu_timing: bool
) -> None:
    """Materialise the random-weight export, check CUDA against the CPU, time attribution."""
    import onnxruntime as ort

    from promptsieve._demo_scorers import LMDemoScorer
    from promptsieve.demos import DemoFormat
    from promptsieve.proxy._lm_export import lm_fingerprint, resolve_gguf
    from promptsieve.proxy.lm import LMProxyConfig

    t_start = time.perf_counter()
    meta = json.loads((pack_dir / "pack.json").read_text())
    fmt = DemoFormat(**meta["fmt"])
    work = Path(tempfile.mkdtemp(prefix="promptsieve-gpu-"))
    stand_in = work / "random-weights.gguf"  # names the weights for the fingerprint only
    stand_in.write_text(json.dumps({"random_normal_std": _STD, "seed": _SEED,
                                    "graph_of": meta["proxy"]}))  # fmt: skip
    _, digest = resolve_gguf(stand_in)
    cfg = LMProxyConfig(gguf=stand_in, cache_dir=work / "cache")
    fp = lm_fingerprint(digest, cfg.export_settings())
    folder = work / "cache" / f"lm-{fp}"
    t0 = time.perf_counter()
    materialise(pack_dir, meta["tensors"], folder)
    (folder / "export.json").write_text(json.dumps({"fingerprint": fp, "random_weights": True}))
    record: dict[str, Any] = {
        "onnxruntime": ort.__version__, "available_providers": ort.get_available_providers(),
        "materialise_s": round(time.perf_counter() - t0, 1), "graph_of": meta["proxy"],
        "weights": f"random normal, std {_STD}, seed {_SEED} (timing only)",
        "time": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
    results: list[dict[str, Any]] = []
    record["runs"] = results

    def save() -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_timing.json").write_text(json.dumps(record, indent=1))

    t0 = time.perf_counter()
    both = ("CUDAExecutionProvider", "CPUExecutionProvider")
    gpu = LMDemoScorer(lm=_proxy(work / "cache", stand_in, both, None))
    record["gpu_load_s"] = round(time.perf_counter() - t0, 1)
    record["gpu_provider"] = gpu.lm.provider
    record["gpu_options"] = gpu.lm._session.get_provider_options().get(gpu.lm.provider, {})
    cpu = LMDemoScorer(lm=_proxy(work / "cache", stand_in, ("CPUExecutionProvider",), cpu_threads))
    record["cpu_threads"] = cpu_threads or os.cpu_count()
    save()
    # CUDA vs CPU on the same graph and weights: answer log-probs of a few coalitions
    from promptsieve.demos import Demonstration, ValidationExample

    d8 = meta["draws"][0]
    demos = [Demonstration(q, a) for q, a in d8["demos"]]
    val = [ValidationExample(q, a) for q, a in d8["validation"]]
    coalitions = [(), (0,), (1, 3, 5), tuple(range(len(demos)))]
    a = gpu.matrix(demos, val, fmt, coalitions)
    b = cpu.matrix(demos, val, fmt, coalitions)
    record["cuda_vs_cpu_max_abs_nats"] = float(np.max(np.abs(a - b)))
    record["answer_logprob_range_nats"] = [float(b.min()), float(b.max())]
    save()
    print(json.dumps({k: v for k, v in record.items() if k != "runs"}), flush=True)
    plan = [(gpu, d8, "exact", 1000)] + ([(cpu, d8, "exact", 1000)] if cpu_timing else [])
    plan += [(gpu, d, "kernel", 1000) for d in meta["draws"][1:]]
    for scorer, d, method, samples in plan:
        left = budget_s - (time.perf_counter() - t_start)
        if results and left < 3 * max(r["seconds"] for r in results):
            record.setdefault("skipped", []).append([d["n_demos"], method, scorer.lm.provider])
            continue
        r = _timed(scorer, d, fmt, method, samples)
        if scorer is cpu:
            r["threads"] = record["cpu_threads"]
        results.append(r)
        save()
        print(json.dumps(r), flush=True)


def probe() -> None:
    """Print which provider a CUDA-first session of a tiny graph runs on, through the
    product's :func:`promptsieve.proxy._runtime.inference_session` (which preloads the CUDA
    libraries with onnxruntime's ``preload_dlls``)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from promptsieve.proxy._runtime import inference_session

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(model, str(path))
        both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        session = inference_session(ort, path, ort.SessionOptions(), both)
        out = session.run(None, {"x": np.eye(4, dtype=np.float32)})[0]
    print(json.dumps({
        "onnxruntime": ort.__version__, "available": ort.get_available_providers(),
        "session": session.get_providers(), "ok": bool(np.allclose(out, np.eye(4))),
        "cuda_use_tf32": session.get_provider_options().get(both[0], {}).get("use_tf32"),
        "ld_library_path": bool(os.environ.get("LD_LIBRARY_PATH")),
    }))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="write the weightless graph and the draws (here)")
    p.add_argument("--out", type=Path, default=PACK)
    p.add_argument("--task", default="sports_understanding")
    p.add_argument("--layout", default="turn")
    p.add_argument("--val", type=int, default=3)
    p.add_argument("--draws", default="8,16", help="demonstrations per draw (the first: exact)")
    sub.add_parser("probe", help="which provider a CUDA-first session runs on")
    r = sub.add_parser("run", help="fill random weights and time attribution (on the GPU)")
    r.add_argument("--pack", type=Path, default=PACK)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--cpu-threads", type=int, default=None)
    r.add_argument("--budget-s", type=float, default=400.0, help="skip runs that would overrun")
    r.add_argument("--no-cpu-timing", action="store_true", help="time the GPU only")
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args.out, args.task, args.layout, args.val, [int(x) for x in args.draws.split(",")])
    elif args.cmd == "probe":
        probe()
    else:
        run(args.pack, args.out, args.cpu_threads, args.budget_s, not args.no_cpu_timing)


if __name__ == "__main__":
    main()
