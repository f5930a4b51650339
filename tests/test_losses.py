"""Contrastive and triplet losses against the formulas worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from gemsearch.trainer.training.losses import (
    ContrastiveLoss,
    TripletLoss,
    contrastive_loss,
    make_loss,
    triplet_loss,
)


def _tuple() -> torch.Tensor:
    # one tuple in 2-D: query, positive, two negatives (unit vectors)
    q = [1.0, 0.0]
    p = [0.6, 0.8]  # ||q-p|| = sqrt(0.16 + 0.64) = sqrt(0.8)
    n1 = [0.0, 1.0]  # ||q-n1|| = sqrt(2)
    n2 = [0.8, 0.6]  # ||q-n2|| = sqrt(0.04 + 0.36) = sqrt(0.4)
    return torch.tensor([[q, p, n1, n2]])


def test_contrastive_by_hand() -> None:
    margin = 0.7
    # positive: 0.5 * 0.8; n1: sqrt(2) > margin -> 0; n2: 0.5 * (0.7 - sqrt(0.4))^2
    expected = 0.5 * 0.8 + 0.5 * (margin - math.sqrt(0.4)) ** 2
    got = contrastive_loss(_tuple(), margin=margin, eps=0.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    assert ContrastiveLoss(margin, eps=0.0)(_tuple()).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_eps_matches_cirtorch_shift() -> None:
    t = _tuple()
    eps = 1e-3
    d = [torch.linalg.vector_norm(t[0, 0] - t[0, i] + eps).item() for i in (1, 2, 3)]
    expected = 0.5 * d[0] ** 2 + sum(0.5 * max(0.0, 0.7 - di) ** 2 for di in d[1:])
    assert contrastive_loss(t, 0.7, eps).item() == pytest.approx(expected, rel=1e-6)


def test_triplet_by_hand() -> None:
    margin = 0.5
    # d(q,p)^2 = 0.8; n1: 0.8 - 2 + 0.5 < 0 -> 0; n2: 0.8 - 0.4 + 0.5 = 0.9
    assert triplet_loss(_tuple(), margin).item() == pytest.approx(0.9, rel=1e-6)
    assert TripletLoss(margin)(_tuple()).item() == pytest.approx(0.9, rel=1e-6)


def test_losses_sum_over_tuples_and_have_gradients() -> None:
    t = torch.nn.functional.normalize(torch.randn(3, 4, 8), dim=-1).requires_grad_()
    total = contrastive_loss(t)
    parts = sum(contrastive_loss(t[i : i + 1]).item() for i in range(3))
    assert total.item() == pytest.approx(parts, rel=1e-6)
    total.backward()
    assert t.grad is not None and torch.isfinite(t.grad).all()


def test_bad_shapes_and_names() -> None:
    with pytest.raises(ValueError, match="tuples shaped"):
        triplet_loss(torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("arcface")
    assert isinstance(make_loss("triplet"), TripletLoss)
