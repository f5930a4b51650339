"""Learned (Lw) and PCA whitening against their defining properties."""

from __future__ import annotations

import numpy as np
import pytest

from gemsearch.trainer.models.whitening import cholesky_with_jitter, learn_pca_whitening, learn_whitening


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


def _known_spectrum(n: int = 2000, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows with variances 64, 16, 4, 1, 0.25, 0.0625 along the columns of a random rotation ``q``,
    listed in shuffled order so that no ordering can come from the input."""
    rng = np.random.default_rng(seed)
    variances = np.array([4.0, 0.25, 64.0, 0.0625, 16.0, 1.0])
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    z = rng.standard_normal((n, 6))
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z.T, bias=True))).T  # exactly unit covariance
    return 5.0 + (z * np.sqrt(variances)) @ q.T, variances, q


def _principal_angles_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between the row spaces of ``a`` and ``b`` (all 1: the same)."""
    qa, _ = np.linalg.qr(a.T)
    qb, _ = np.linalg.qr(b.T)
    return np.linalg.svd(qa.T @ qb, compute_uv=False)


def test_pca_rows_come_in_decreasing_eigenvalue_order() -> None:
    x, variances, q = _known_spectrum()
    w = learn_pca_whitening(x)
    order = np.argsort(variances)[::-1]
    # row i of P is the i-th eigenvector scaled by 1 / sqrt(its eigenvalue)
    np.testing.assert_allclose(np.linalg.norm(w.P, axis=1), 1 / np.sqrt(variances[order]), rtol=1e-9)
    for row, k in zip(w.P, order, strict=True):
        assert abs(row @ q[:, k]) == pytest.approx(np.linalg.norm(row), rel=1e-9)


@pytest.mark.parametrize("dims", [1, 2, 3, 5])
def test_pca_reduced_keeps_the_top_variance_directions(dims: int) -> None:
    x, variances, q = _known_spectrum()
    w = learn_pca_whitening(x).reduced(dims)
    top = q[:, np.argsort(variances)[::-1][:dims]].T
    np.testing.assert_allclose(_principal_angles_cos(w.P[:dims], top), 1.0, atol=1e-9)
    # what apply() keeps: a step along the weakest direction does not move the output at all
    base = x[:3]
    weakest = q[:, np.argmin(variances)]
    np.testing.assert_allclose(w.apply(base + 0.5 * weakest), w.apply(base), atol=1e-6)
    # and the kept outputs have the variances of the whitened top directions: 1 each
    y = (x - w.m) @ w.P[: w.output_dim].T
    np.testing.assert_allclose(np.cov(y.T, bias=True).reshape(dims, dims), np.eye(dims), atol=1e-9)
    assert w.apply(x[:4]).shape == (4, dims)


def _scatter(x: np.ndarray, m: np.ndarray, rows: np.ndarray) -> np.ndarray:
    y = (x - m) @ rows.T
    return y.T @ y


@pytest.mark.parametrize("dims", [1, 2, 4])
def test_learned_reduced_keeps_the_top_variance_directions_of_the_whitened_scatter(dims: int) -> None:
    x, q, p = _pairs(seed=3)
    full = learn_whitening(x, q, p)
    w = full.reduced(dims)
    eigvals = np.linalg.eigvalsh(_scatter(x, w.m, full.P))  # the whitened scatter's spectrum, ascending
    kept = _scatter(x, w.m, w.P[: w.output_dim])
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(kept)), eigvals[-dims:], rtol=1e-8)
    np.testing.assert_allclose(np.diag(kept), eigvals[::-1][:dims], rtol=1e-8)  # largest first
    by_hand = (x[:4] - w.m) @ full.P[:dims].T  # apply() projects on those top rows
    np.testing.assert_allclose(
        w.apply(x[:4]), by_hand / np.linalg.norm(by_hand, axis=1, keepdims=True), atol=1e-6
    )
    assert w.output_dim == dims
    with pytest.raises(ValueError, match=r"dims must be in 1\.\.6"):
        full.reduced(7)
    with pytest.raises(ValueError, match=r"dims must be in 1\.\.6"):
        full.reduced(0)


def test_cholesky_adds_jitter_for_singular_covariance() -> None:
    s = np.ones((3, 3))  # rank 1
    lower = cholesky_with_jitter(s)
    assert np.allclose(lower @ lower.T, s, atol=1e-3)
    with pytest.raises(ValueError, match="equal length"):
        learn_whitening(np.zeros((3, 2)), [0, 1], [2])
