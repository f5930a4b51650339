"""The Lite0-GeM ONNX graph built from the weights with ``onnx`` and numpy alone (no torch).

It computes what the torch export of ``efficientnet_lite0-gem`` computes, step for step:
``images`` uint8 ``(n, 3, h, w)`` -> float, /255, (x - mean) / std -> stem conv (TF "SAME" padding,
stride 2) -> 16 MBConv blocks (1x1 expand, depthwise kxk, 1x1 project, identity skip where shapes
agree; ReLU6 after expand and depthwise) -> 1x1 head conv to 1280 -> ReLU6 -> GeM
``(mean clamp(x, eps)^p)^(1/p)`` over the spatial axes -> ``x / (||x|| + eps)`` -> ``descriptors``.
Batch normalisation is folded into the convolutions, as torch's exporter folds it. TF's "SAME"
padding of the stride-2 convolutions (the extra row and column at the bottom and right) is ONNX's
``auto_pad=SAME_UPPER``, so height and width stay dynamic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gemsearch.errors import ModelError

from .lite0 import BN_EPS, HEAD, HEAD_CHANNELS, STEM_CHANNELS, Block, lite0_blocks

F32 = npt.NDArray[np.float32]
INPUT_NAME, OUTPUT_NAME = "images", "descriptors"
IR_VERSION = 8  # the oldest that opset 18 allows: onnxruntime releases back to 1.18 load it
POOL_EPS = L2N_EPS = 1e-6  # GeM's clamp and L2N's eps, as the trainer's pooling


class _Graph:
    """Nodes and initializers under unique names, in the order they are added."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, name: str, value: npt.ArrayLike, dtype: Any = np.float32) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: Sequence[str], output: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        self._count += 1
        out = output or f"{op_type.lower()}_{self._count}"
        self.nodes.append(
            helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self._count}", **attrs)
        )
        return out


def lite0_gem_graph(
    weights: Mapping[str, npt.NDArray[Any]],
    *,
    p: float,
    mean: Sequence[float],
    std: Sequence[float],
    name: str = "lite0-gem",
) -> Any:
    """The ``onnx.GraphProto`` of Lite0 + GeM(``p``) + L2N on uint8 images, from the trunk's weights
    in our names (``features.N...``, see ``lite0.lukemelas_name``)."""
    from onnx import TensorProto, helper

    g = _Graph()
    g.const("relu6_min", 0.0)
    g.const("relu6_max", 6.0)
    x = g.op("Cast", [INPUT_NAME], to=TensorProto.FLOAT)
    x = g.op("Div", [x, g.const("pixel_scale", 255.0)])
    x = g.op("Sub", [x, g.const("mean", np.reshape(mean, (1, 3, 1, 1)))])
    x = g.op("Div", [x, g.const("std", np.reshape(std, (1, 3, 1, 1)))])
    x = _relu6(g, _conv_bn(g, weights, "features.0.0", x, (STEM_CHANNELS, 3, 3, 3), stride=2))
    for block in lite0_blocks():
        x = _mbconv(g, weights, block, x)
    cin = lite0_blocks()[-1].cout
    x = _relu6(g, _conv_bn(g, weights, HEAD, x, (HEAD_CHANNELS, cin, 1, 1)))
    x = _gem(g, x, p)
    _l2n(g, x, OUTPUT_NAME)
    return helper.make_graph(
        g.nodes,
        name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", HEAD_CHANNELS])],
        g.initializers,
    )


def _mbconv(g: _Graph, weights: Mapping[str, npt.NDArray[Any]], b: Block, x: str) -> str:
    prefix, mid = f"features.{b.position}", b.cin * b.expand
    out = x
    if b.expand != 1:
        out = _relu6(g, _conv_bn(g, weights, f"{prefix}.expand", out, (mid, b.cin, 1, 1)))
    depthwise = (mid, 1, b.kernel, b.kernel)
    out = _relu6(g, _conv_bn(g, weights, f"{prefix}.depthwise", out, depthwise, b.stride, groups=mid))
    out = _conv_bn(g, weights, f"{prefix}.project", out, (b.cout, mid, 1, 1))
    return g.op("Add", [out, x]) if b.skip else out


def _conv_bn(
    g: _Graph,
    weights: Mapping[str, npt.NDArray[Any]],
    prefix: str,
    x: str,
    shape: tuple[int, int, int, int],
    stride: int = 1,
    groups: int = 1,
) -> str:
    """A bias-free conv followed by BN (eval mode), as one Conv with the BN folded in."""
    gamma, beta, mean, var = (_weight(weights, f"{prefix}.bn.{part}", shape[:1]) for part in _BN_PARTS)
    kernel, bias = fold_batch_norm(
        _weight(weights, f"{prefix}.conv.weight", shape), gamma, beta, mean, var, eps=BN_EPS
    )
    k = shape[-1]
    padding: dict[str, Any] = (
        {"pads": [k // 2] * 4} if stride == 1 else {"auto_pad": "SAME_UPPER"}  # TF SAME: extra at the end
    )
    return g.op(
        "Conv",
        [x, g.const(f"{prefix}.weight", kernel), g.const(f"{prefix}.bias", bias)],
        kernel_shape=[k, k],
        strides=[stride, stride],
        group=groups,
        **padding,
    )


_BN_PARTS = ("weight", "bias", "running_mean", "running_var")


def fold_batch_norm(
    kernel: npt.ArrayLike,
    gamma: npt.ArrayLike,
    beta: npt.ArrayLike,
    mean: npt.ArrayLike,
    var: npt.ArrayLike,
    eps: float,
) -> tuple[F32, F32]:
    """``(kernel', bias')`` with ``conv(x, kernel') + bias' == BN(conv(x, kernel))`` in eval mode:
    ``scale = gamma / sqrt(var + eps)``, ``kernel' = kernel * scale`` per output channel,
    ``bias' = beta - mean * scale`` (computed in float64, stored as float32)."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    folded = np.asarray(kernel, np.float64) * scale.reshape(-1, 1, 1, 1)
    bias = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
    return folded.astype(np.float32), bias.astype(np.float32)


def _weight(weights: Mapping[str, npt.NDArray[Any]], key: str, shape: tuple[int, ...]) -> npt.NDArray[Any]:
    try:
        value = weights[key]
    except KeyError:
        raise ModelError(f"the Lite0 weights have no {key!r}") from None
    if tuple(value.shape) != shape:
        raise ModelError(f"the Lite0 weight {key!r} has shape {tuple(value.shape)}, expected {shape}")
    return value


def _relu6(g: _Graph, x: str) -> str:
    return g.op("Clip", [x, "relu6_min", "relu6_max"])


def _gem(g: _Graph, x: str, p: float) -> str:
    """``(mean over h, w of clamp(x, eps)^p)^(1/p)``: ``(n, c, h, w) -> (n, c)``."""
    p32 = np.float32(p)
    x = g.op("Clip", [x, g.const("gem_eps", POOL_EPS)])
    x = g.op("Pow", [x, g.const("gem_p", [p32])])
    x = g.op("ReduceMean", [x, g.const("spatial_axes", [-2, -1], np.int64)], keepdims=0)
    return g.op("Pow", [x, g.const("gem_inverse_p", [np.float32(1) / p32])])


def _l2n(g: _Graph, x: str, output: str) -> str:
    norm = g.op("ReduceL2", [x, g.const("channel_axis", [1], np.int64)], keepdims=1)
    norm = g.op("Add", [norm, g.const("l2n_eps", L2N_EPS)])
    return g.op("Div", [x, norm], output)
