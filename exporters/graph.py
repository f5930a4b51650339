"""The computation that is exported: ``(n, 3, h, w)`` images -> ``(n, D)`` L2-normalised descriptors.

images [uint8 -> /255 -> (x - mean) / std] -> [rescale per scale] -> backbone -> pooling -> L2N
[-> FC whitening -> L2N] [-> power mean over the scales -> L2N] [-> Lw as MatMul + Add -> L2N].

The pieces are the trainer's own (``RetrievalNet``, ``rescale``, ``power_mean``), so the graph
computes what ``extract_descriptors`` computes; the pooling is a reduction over the spatial axes, so
height and width stay dynamic in the exported graph.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from gemsearch.trainer.models.extraction import SINGLE_SCALE, power_mean, rescale
from gemsearch.trainer.models.network import RetrievalNet
from gemsearch.trainer.models.pooling import l2n

from .folding import F32


class DescriptorGraph(nn.Module):
    """``images (n, 3, h, w)`` uint8 RGB (or float32 already normalised) -> ``(n, D)`` float32.

    ``half``: the backbone runs in float16; pooling, whitening and the output stay float32, because
    GeM's ``x^p`` of large activations overflows float16 and the descriptor tail costs nothing.
    The network is copied, so the caller's model is left as it was.
    """

    mean: Tensor
    std: Tensor

    def __init__(
        self,
        net: RetrievalNet,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        uint8_input: bool = True,
        scales: Sequence[float] = SINGLE_SCALE,
        msp: float = 1.0,
        whitening: tuple[F32, F32] | None = None,
        half: bool = False,
    ) -> None:
        super().__init__()
        self.net = copy.deepcopy(net).cpu().eval()
        self.uint8_input = uint8_input
        self.scales = tuple(float(s) for s in scales)
        self.msp = float(msp)
        self.half_backbone = half
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.lw: nn.Linear | None = None
        if whitening is not None:
            weight, bias = whitening
            self.lw = nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                self.lw.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
                self.lw.bias.copy_(torch.from_numpy(np.ascontiguousarray(bias)))
        if half:
            self.net.features.half()
        self.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        x = self.normalise(images)
        if self.scales == SINGLE_SCALE:
            v = self.describe(x)
        else:
            v = power_mean([self.describe(rescale(x, s)) for s in self.scales], self.msp)
        if self.lw is not None:
            v = l2n(self.lw(v))
        return v

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 pixels -> ``(pixel / 255 - mean) / std``, the same float32 steps as ``preprocess``."""
        if not self.uint8_input:
            return images
        return (images.float() / 255.0 - self.mean) / self.std

    def describe(self, x: Tensor) -> Tensor:
        """One scale: the network's own descriptor (its forward, or the same steps on a half backbone)."""
        if not self.half_backbone:
            out: Tensor = self.net(x)
            return out
        net = self.net
        v: Tensor = net.norm(net.pool(net.features(x.half()).float()))
        if net.whiten is not None:
            v = net.norm(net.whiten(v))
        return v
