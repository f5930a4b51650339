"""Global pooling of a feature map ``(n, d, h, w)`` into descriptors ``(n, d)``, and L2N.

The math is in pure functions with cirtorch's definitions; the modules are thin wrappers. Pooling is
a reduction over the spatial axes (not a pooling kernel the size of the map), so a graph exported
to ONNX accepts any input height and width.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .rmac_regions import rmac_regions

PoolingName = Literal["gem", "mac", "spoc", "rmac"]


def l2n(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Rows of ``(n, d)`` divided by their L2 norm + ``eps`` (cirtorch's ``l2n``)."""
    norm: Tensor = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return x / (norm + eps)


def mac(x: Tensor) -> Tensor:
    """Max over the spatial positions: ``(n, d, h, w) -> (n, d)``."""
    return x.amax(dim=(-2, -1))


def spoc(x: Tensor) -> Tensor:
    """Mean over the spatial positions (sum pooling up to a constant): ``(n, d, h, w) -> (n, d)``."""
    return x.mean(dim=(-2, -1))


def gem(x: Tensor, p: Tensor | float = 3.0, eps: float = 1e-6) -> Tensor:
    """Generalised mean ``(mean_{x in X_k} clamp(x, eps)^p)^(1/p)``: ``(n, d, h, w) -> (n, d)``.

    ``p = 1`` is SPoC, ``p -> inf`` tends to MAC; the clamp keeps the power of non-positive values defined.
    """
    return x.clamp(min=eps).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)


def rmac(x: Tensor, levels: int = 3, eps: float = 1e-6) -> Tensor:
    """R-MAC: the sum of L2-normalised MACs of the whole map and of square regions on ``levels``
    scales (cirtorch's region grid, see ``rmac_regions``): ``(n, d, h, w) -> (n, d)``."""
    out = l2n(mac(x), eps)
    for top, left, size in rmac_regions(x.shape[-2], x.shape[-1], levels):
        out = out + l2n(mac(x[..., top : top + size, left : left + size]), eps)
    return out


class L2N(nn.Module):
    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return l2n(x, self.eps)


class MAC(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return mac(x)


class SPoC(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return spoc(x)


class GeM(nn.Module):
    """GeM with a learnable power ``p`` (a ``(1,)`` parameter, cirtorch's ``pool.p``)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return gem(x, self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class RMAC(nn.Module):
    def __init__(self, levels: int = 3, eps: float = 1e-6) -> None:
        super().__init__()
        self.levels = levels
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return rmac(x, self.levels, self.eps)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"


def create_pooling(name: PoolingName, p: float = 3.0, eps: float = 1e-6) -> nn.Module:
    """The pooling layer called ``name``; ``p`` is GeM's initial power."""
    if name == "gem":
        return GeM(p, eps)
    if name == "mac":
        return MAC()
    if name == "spoc":
        return SPoC()
    if name == "rmac":
        return RMAC(eps=eps)
    raise ValueError(f"unknown pooling {name!r}; expected one of gem, mac, spoc, rmac")
