"""Whitening learned from descriptors: supervised Lw (from matching pairs) and PCA whitening.

Same definitions as cirtorch's ``whitenlearn`` / ``pcawhitenlearn`` / ``whitenapply``, on ``(n, d)``
rows instead of ``d x n`` columns. The result ``(m, P)`` is applied as ``L2N(P[:D] (x - m))`` and the
exporter folds it into the ONNX graph as a MatMul + Add (bias ``-P m``).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)
Array = npt.NDArray[np.float64]


class Whitening(BaseModel):
    """``m``: (d,) mean; ``P``: (d, d) projection, rows ordered by decreasing eigenvalue."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    kind: Literal["learned", "pca"]
    m: Array
    P: Array
    learned_from: str | None = None
    dims: int | None = Field(None, description="keep the first `dims` rows of P (None: all)")

    @property
    def output_dim(self) -> int:
        return self.dims or self.P.shape[0]

    def apply(self, x: npt.ArrayLike, eps: float = 1e-6) -> npt.NDArray[np.float32]:
        """``(n, d)`` descriptors -> ``(n, D)`` whitened, L2-normalised rows."""
        rows = np.atleast_2d(np.asarray(x, dtype=np.float64))
        out = (rows - self.m) @ self.P[: self.output_dim].T
        out /= np.linalg.norm(out, axis=1, keepdims=True) + eps
        return out.astype(np.float32)

    def reduced(self, dims: int) -> Whitening:
        if not 0 < dims <= self.P.shape[0]:
            raise ValueError(f"dims must be in 1..{self.P.shape[0]}, got {dims}")
        return self.model_copy(update={"dims": dims})


def cholesky_with_jitter(s: Array, max_tries: int = 30) -> Array:
    """Lower Cholesky factor of ``s``, adding 1e-10, 1e-9, ... on the diagonal until it factorises."""
    alpha = 0.0
    for _ in range(max_tries):
        try:
            return np.asarray(np.linalg.cholesky(s + alpha * np.eye(s.shape[0])), dtype=np.float64)
        except np.linalg.LinAlgError:
            alpha = 1e-10 if alpha == 0 else alpha * 10
            log.warning("covariance not positive definite: adding %.0e on the diagonal", alpha)
    raise np.linalg.LinAlgError(f"no Cholesky factor even with {alpha:.0e} on the diagonal")


def _descending_eig(sym: Array) -> tuple[Array, Array]:
    values, vectors = np.linalg.eigh((sym + sym.T) / 2)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order]


def learn_whitening(
    x: npt.ArrayLike, qidxs: npt.ArrayLike, pidxs: npt.ArrayLike, learned_from: str | None = None
) -> Whitening:
    """Lw from matching pairs (x[qidxs[i]], x[pidxs[i]]) of the ``(n, d)`` descriptors ``x``.

    m = mean of the query descriptors; S = covariance of the pair differences; P0 = L^-1 with
    S = L L^T; then the scatter of P0 (x - m) over all descriptors is rotated onto its eigenvectors.
    """
    rows = np.asarray(x, dtype=np.float64)
    q, p = np.asarray(qidxs), np.asarray(pidxs)
    if q.shape != p.shape or q.size == 0:
        raise ValueError("qidxs and pidxs must be non-empty and of equal length")
    m = rows[q].mean(axis=0)
    diff = rows[q] - rows[p]
    p0 = np.linalg.inv(cholesky_with_jitter(diff.T @ diff / len(diff)))
    centred = (rows - m) @ p0.T
    _, eigvec = _descending_eig(centred.T @ centred)
    return Whitening(kind="learned", m=m, P=eigvec.T @ p0, learned_from=learned_from)


def learn_pca_whitening(x: npt.ArrayLike, learned_from: str | None = None, eps: float = 0.0) -> Whitening:
    """Unsupervised PCA whitening: project on the covariance eigenvectors, scale by 1/sqrt(eigenvalue)."""
    rows = np.asarray(x, dtype=np.float64)
    m = rows.mean(axis=0)
    centred = rows - m
    eigval, eigvec = _descending_eig(centred.T @ centred / len(rows))
    if np.any(eigval + eps <= 0):
        raise ValueError(
            "covariance is singular (fewer descriptors than dimensions?): reduce dims or pass eps > 0"
        )
    return Whitening(
        kind="pca", m=m, P=np.diag(1 / np.sqrt(eigval + eps)) @ eigvec.T, learned_from=learned_from
    )
