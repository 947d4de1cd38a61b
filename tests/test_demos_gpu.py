"""``benchmarks.demos_gpu``: the weightless graph it sends to a GPU machine becomes a graph
that onnxruntime runs, with random weight matrices and the real small tensors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort

from _ci import require_module

onnx = require_module("onnx", "pip install 'promptsieve[export]'")

from benchmarks.demos_gpu import manifest, materialise  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _graph(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """y = x @ W + b, with W (200x200, 160 kB) and b (200 floats) stored as external data."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((200, 200)).astype(np.float32)
    b = rng.standard_normal(200).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 200])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 200])
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(w, "W"),
                                                      numpy_helper.from_array(b, "b")])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True,
              location="model.onnx_data", size_threshold=0)  # fmt: skip
    return w, b


def test_a_packed_graph_runs_with_random_weights_and_real_small_tensors(tmp_path: Path) -> None:
    src, packed, dest = tmp_path / "src", tmp_path / "packed", tmp_path / "dest"
    src.mkdir()
    packed.mkdir()
    w, b = _graph(src)
    tensors = manifest(src / "model.onnx")
    assert {t["name"] for t in tensors} == {"W", "b"}
    assert [t["name"] for t in tensors if "real" in t] == ["b"]  # 800 bytes travel, 160 kB not
    shutil.copyfile(src / "model.onnx", packed / "model.onnx")  # the graph, not its data
    materialise(packed, tensors, dest)
    loaded = onnx.load(str(dest / "model.onnx"))
    weights = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}
    assert np.array_equal(weights["b"], b)
    assert weights["W"].shape == w.shape and not np.allclose(weights["W"], w)
    assert 0.015 < float(weights["W"].std()) < 0.025
    session = ort.InferenceSession(str(dest / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.ones((1, 200), dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    assert np.allclose(y, x @ weights["W"] + b, atol=1e-4)
