"""Learned whitening folded into the graph: ``L2N(P[:D] (x - m))`` as one MatMul + Add.

cirtorch applies Lw as a numpy step after the network; folding it into the exported graph makes the
whitening travel with the weights, so it cannot drift apart from them in production.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gemsearch.errors import ConfigError
from gemsearch.trainer.models.whitening import Whitening

F32 = npt.NDArray[np.float32]


def fold_whitening(whitening: Whitening, dims: int | None = None) -> tuple[F32, F32]:
    """``(weight (D, d), bias (D,))`` with ``x @ weight.T + bias == P[:D] (x - m)``, i.e. bias = -P[:D] m.

    ``dims`` keeps the first ``dims`` rows (largest eigenvalues); None keeps the whitening's own.
    Computed in float64, stored as float32 (the graph's precision).
    """
    out_dim = whitening.output_dim if dims is None else dims
    if not 0 < out_dim <= whitening.P.shape[0]:
        raise ConfigError(f"whitening dims must be in 1..{whitening.P.shape[0]}, got {out_dim}")
    projection = np.asarray(whitening.P, dtype=np.float64)[:out_dim]
    bias = -projection @ np.asarray(whitening.m, dtype=np.float64).reshape(-1)
    return projection.astype(np.float32), bias.astype(np.float32)


def apply_folded(x: npt.ArrayLike, weight: F32, bias: F32, eps: float = 1e-6) -> F32:
    """What the graph computes from ``(n, d)`` descriptors: ``L2N(x W^T + b)`` in float32."""
    rows = np.atleast_2d(np.asarray(x, dtype=np.float32))
    out = rows @ weight.T + bias
    return np.asarray(out / (np.linalg.norm(out, axis=1, keepdims=True) + np.float32(eps)), dtype=np.float32)
