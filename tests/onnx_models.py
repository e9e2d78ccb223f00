"""Small ONNX speaker-embedding models built with onnx.helper, for tests.

``stats_model``: features [batch, frames, bins] → a fixed seeded projection of each
frame through tanh → mean and standard deviation over time → a fixed seeded matrix
→ [batch, dim]: an x-vector's shape with random weights, for the plumbing.
``pooled_model``: the mean and deviation of the features themselves, centred on
other voices' average: crude, but it tells two very different recordings apart.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by any onnxruntime from 1.14 on (opset 18: 1.14 too)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def pooled_model(
    path: Path,
    centre: np.ndarray,
    *,
    dim: int = 128,
    seed: int = 0,
    input_name: str = "feats",
    output_name: str = "embs",
    std_weight: float = 1.0,
) -> Path:
    """features [batch, frames, bins] → mean and standard deviation over time,
    concatenated → less ``centre`` (the same statistics averaged over other voices)
    → a fixed seeded Gaussian matrix (which keeps angles roughly) → [batch, dim]."""
    bins = centre.size // 2
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((2 * bins, dim)) / np.sqrt(dim)).astype(np.float32)
    w[bins:] *= std_weight
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["B", "T", bins])
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["B", dim])
    nodes = [
        helper.make_node("ReduceMean", [input_name, "time"], ["mean"], keepdims=0),
        helper.make_node("ReduceMean", [input_name, "time"], ["mean_k"], keepdims=1),
        helper.make_node("Sub", [input_name, "mean_k"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["square"]),
        helper.make_node("ReduceMean", ["square", "time"], ["var"], keepdims=0),
        helper.make_node("Sqrt", ["var"], ["std"]),
        helper.make_node("Concat", ["mean", "std"], ["pooled"], axis=1),
        helper.make_node("Sub", ["pooled", "centre"], ["shifted"]),
        helper.make_node("MatMul", ["shifted", "w"], [output_name]),
    ]
    init = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(centre.astype(np.float32), "centre"),
        numpy_helper.from_array(np.array([1], np.int64), "time"),
    ]
    return _save(helper.make_graph(nodes, "pooled", [x], [y], init), path)


def stats_model(
    path: Path,
    *,
    bins: int | None = 80,
    dim: int = 64,
    hidden: int = 128,
    seed: int = 0,
    input_name: str = "feats",
    output_name: str = "embs",
    frames: int | str = "T",
    batch: int | str = "B",
) -> Path:
    """The model above; ``bins=None`` makes a ``wave`` model ([batch, samples] input,
    cut into frames of 160 samples by a strided convolution)."""
    rng = np.random.default_rng(seed)
    width = bins if bins is not None else 160
    w1 = (rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(hidden)).astype(np.float32)
    w2 = (rng.standard_normal((2 * hidden, dim)) / np.sqrt(2 * hidden)).astype(np.float32)
    shape: list[int | str] = [batch, frames, bins] if bins is not None else [batch, frames]
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, dim])
    if bins is None:  # [B, S] → frames of 160 samples, each projected: [B, hidden, S / 160]
        nodes = [
            helper.make_node("Unsqueeze", [input_name, "channel"], ["signal"]),
            helper.make_node("Conv", ["signal", "w1"], ["h0"], kernel_shape=[160], strides=[160]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
        ]
        w1 = w1.T[:, None, :]  # (hidden, 1, 160)
        b1 = b1[:, None]
        time = 2
    else:  # [B, T, bins] → [B, T, hidden]
        nodes = [
            helper.make_node("MatMul", [input_name, "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
        ]
        time = 1
    nodes += [
        helper.make_node("Tanh", ["h1"], ["h"]),
        helper.make_node("ReduceMean", ["h", "time"], ["mean"], keepdims=0),
        helper.make_node("ReduceMean", ["h", "time"], ["mean_k"], keepdims=1),
        helper.make_node("Sub", ["h", "mean_k"], ["centred"]),
        helper.make_node("Mul", ["centred", "centred"], ["square"]),
        helper.make_node("ReduceMean", ["square", "time"], ["var"], keepdims=0),
        helper.make_node("Sqrt", ["var"], ["std"]),
        helper.make_node("Concat", ["mean", "std"], ["pooled"], axis=1),
        helper.make_node("MatMul", ["pooled", "w2"], [output_name]),
    ]
    init = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.array([time], np.int64), "time"),
        numpy_helper.from_array(np.array([1], np.int64), "channel"),
    ]
    graph = helper.make_graph(nodes, "speaker", [x], [y], init)
    return _save(graph, path)


def two_input_model(path: Path) -> Path:
    """A model with two inputs (feats and a length): not one postcall can feed."""
    x = helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["B", "T", 80])
    n = helper.make_tensor_value_info("lengths", TensorProto.FLOAT, ["B", 1])
    y = helper.make_tensor_value_info("embs", TensorProto.FLOAT, ["B", 80])
    nodes = [
        helper.make_node("ReduceMean", ["feats", "time"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "lengths"], ["embs"]),
    ]
    init = [numpy_helper.from_array(np.array([1], np.int64), "time")]
    return _save(helper.make_graph(nodes, "two", [x, n], [y], init), path)


def frame_model(path: Path) -> Path:
    """A model whose output keeps the time axis ([batch, frames, 80]): no embeddings."""
    x = helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["B", "T", 80])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", "T", 80])
    graph = helper.make_graph([helper.make_node("Tanh", ["feats"], ["out"])], "frames", [x], [y])
    return _save(graph, path)
