"""Small, real ONNX retrieval models for fast plugin tests, built with ``onnx.helper`` (no torch).

uint8 RGB NCHW -> normalise -> Conv(3x3, stride 2) -> ReLU -> GeM (p=3) -> L2N -> (N, dim), with a
gemsearch manifest embedded exactly as the exporter does. Random conv weights make descriptors that
differ between images (unlike a randomly initialised deep net), which is all ingest tests need.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from gemsearch.manifest import METADATA_KEY, InputSpec, ModelManifest, MultiScaleSpec, PoolingSpec


def make_tiny_model(
    path: str | Path,
    *,
    name: str = "tiny",
    dim: int = 16,
    seed: int = 0,
    max_side: int = 256,
    input_dtype: str = "uint8",
) -> ModelManifest:
    """Write a tiny retrieval model to ``path`` and return its manifest."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(dim, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(scale=0.1, size=(dim,)).astype(np.float32)
    spec = InputSpec(dtype=input_dtype, max_side=max_side)  # type: ignore[arg-type]
    mean = (np.asarray(spec.mean, np.float32) * 255).reshape(1, 3, 1, 1)
    std = (np.asarray(spec.std, np.float32) * 255).reshape(1, 3, 1, 1)
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(bias, "b"),
        numpy_helper.from_array(mean, "mean"),
        numpy_helper.from_array(std, "std"),
        numpy_helper.from_array(np.array(1e-6, np.float32), "eps"),
        numpy_helper.from_array(np.array(3.0, np.float32), "p"),
        numpy_helper.from_array(np.array(1 / 3.0, np.float32), "inv_p"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "hw"),
        numpy_helper.from_array(np.array([1], np.int64), "feat"),
    ]
    nodes = []
    if input_dtype == "uint8":
        nodes += [
            helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
            helper.make_node("Sub", ["x", "mean"], ["centred"]),
            helper.make_node("Div", ["centred", "std"], ["normed"]),
        ]
        start = "normed"
    else:
        start = "images"
    nodes += [
        helper.make_node("Conv", [start, "w", "b"], ["conv"], kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Relu", ["conv"], ["act"]),
        helper.make_node("Max", ["act", "eps"], ["clamped"]),
        helper.make_node("Pow", ["clamped", "p"], ["powered"]),
        helper.make_node("ReduceMean", ["powered", "hw"], ["pooled"], keepdims=0),
        helper.make_node("Pow", ["pooled", "inv_p"], ["gem"]),
        helper.make_node("ReduceL2", ["gem", "feat"], ["norm"], keepdims=1),
        helper.make_node("Div", ["gem", "norm"], ["descriptors"]),
    ]
    elem = TensorProto.UINT8 if input_dtype == "uint8" else TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        f"{name}-graph",
        [helper.make_tensor_value_info("images", elem, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["batch", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    manifest = ModelManifest(
        name=name,
        version=hashlib.sha256(weight.tobytes() + bias.tobytes()).hexdigest(),
        backbone="tinyconv",
        pooling=PoolingSpec(kind="gem", p=3.0),
        output_dim=dim,
        input=spec,
        multiscale=MultiScaleSpec(),
        opset=18,
    )
    helper.set_model_props(model, {METADATA_KEY: manifest.to_json()})
    onnx.checker.check_model(model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return manifest
