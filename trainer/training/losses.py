"""Metric-learning losses on tuples of L2-normalised descriptors (cirtorch's definitions).

A batch of tuples is a tensor ``(nq, s, d)``: for each of ``nq`` tuples, row 0 is the query,
row 1 its positive and rows 2.. its ``s - 2`` negatives. Losses are summed over pairs, as cirtorch
does, so the learning rate keeps its meaning when the number of negatives changes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _check_tuples(tuples: Tensor, min_size: int) -> None:
    if tuples.dim() != 3 or tuples.shape[1] < min_size:
        raise ValueError(f"expected tuples shaped (nq, s>={min_size}, d), got {tuple(tuples.shape)}")


def contrastive_loss(tuples: Tensor, margin: float = 0.7, eps: float = 1e-6) -> Tensor:
    """``0.5 ||q - p||^2`` per match plus ``0.5 max(0, margin - ||q - n||)^2`` per non-match.

    Distances are ``||q - x + eps||`` as in cirtorch, which keeps the gradient finite at 0.
    """
    _check_tuples(tuples, 2)
    query = tuples[:, :1, :]
    dist = (query - tuples[:, 1:, :] + eps).pow(2).sum(dim=-1).sqrt()  # (nq, s-1)
    positive = 0.5 * dist[:, 0].pow(2)
    negative = 0.5 * torch.clamp(margin - dist[:, 1:], min=0).pow(2)
    return positive.sum() + negative.sum()


def triplet_loss(tuples: Tensor, margin: float = 0.1) -> Tensor:
    """``max(0, ||q - p||^2 - ||q - n||^2 + margin)`` for every negative of every tuple."""
    _check_tuples(tuples, 3)
    query = tuples[:, :1, :]
    dist2 = (query - tuples[:, 1:, :]).pow(2).sum(dim=-1)  # (nq, s-1)
    return torch.clamp(dist2[:, :1] - dist2[:, 1:] + margin, min=0).sum()


class ContrastiveLoss(nn.Module):
    def __init__(self, margin: float = 0.7, eps: float = 1e-6) -> None:
        super().__init__()
        self.margin = margin
        self.eps = eps

    def forward(self, tuples: Tensor) -> Tensor:
        return contrastive_loss(tuples, self.margin, self.eps)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


class TripletLoss(nn.Module):
    def __init__(self, margin: float = 0.1) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, tuples: Tensor) -> Tensor:
        return triplet_loss(tuples, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


def make_loss(name: str, margin: float | None = None) -> nn.Module:
    """``"contrastive"`` (default margin 0.7) or ``"triplet"`` (default margin 0.1)."""
    if name == "contrastive":
        return ContrastiveLoss(0.7 if margin is None else margin)
    if name == "triplet":
        return TripletLoss(0.1 if margin is None else margin)
    raise ValueError(f"unknown loss {name!r}: choose contrastive or triplet")
