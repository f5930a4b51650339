"""Learned (Lw) and PCA whitening against their defining properties."""

from __future__ import annotations

import numpy as np
import pytest

from gemsearch.trainer.learned_whitening import cholesky_with_jitter, learn_pca_whitening, learn_whitening


def _pairs(n: int = 400, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    noisy = base + 0.1 * rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
    x = np.vstack([base, noisy])
    return x, np.arange(n), np.arange(n, 2 * n)


def test_whitened_pair_differences_have_identity_covariance() -> None:
    x, q, p = _pairs()
    w = learn_whitening(x, q, p)
    diff = (x[q] - x[p]) @ w.P.T  # P (x_q - x_p); m cancels
    np.testing.assert_allclose(diff.T @ diff / len(q), np.eye(x.shape[1]), atol=1e-8)


def test_rotation_diagonalises_the_whitened_scatter_in_descending_order() -> None:
    x, q, p = _pairs()
    w = learn_whitening(x, q, p)
    centred = (x - w.m) @ w.P.T
    scatter = centred.T @ centred
    off = scatter - np.diag(np.diag(scatter))
    assert np.abs(off).max() < 1e-6 * np.abs(scatter).max()
    assert np.all(np.diff(np.diag(scatter)) <= 1e-9)
    np.testing.assert_allclose(w.m, x[q].mean(axis=0))


def test_apply_reduces_and_normalises() -> None:
    x, q, p = _pairs()
    w = learn_whitening(x, q, p).reduced(3)
    out = w.apply(x[:5])
    assert out.shape == (5, 3) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    by_hand = (x[:5] - w.m) @ w.P[:3].T
    np.testing.assert_allclose(out, by_hand / np.linalg.norm(by_hand, axis=1, keepdims=True), atol=1e-5)


def test_pca_whitening_gives_identity_covariance() -> None:
    x, _, _ = _pairs()
    w = learn_pca_whitening(x)
    y = (x - w.m) @ w.P.T
    np.testing.assert_allclose(y.T @ y / len(x), np.eye(x.shape[1]), atol=1e-8)


def test_cholesky_adds_jitter_for_singular_covariance() -> None:
    s = np.ones((3, 3))  # rank 1
    lower = cholesky_with_jitter(s)
    assert np.allclose(lower @ lower.T, s, atol=1e-3)
    with pytest.raises(ValueError, match="equal length"):
        learn_whitening(np.zeros((3, 2)), [0, 1], [2])
