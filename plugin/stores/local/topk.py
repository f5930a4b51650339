"""Exact inner-product top-k over memory-mapped rows, chunk by chunk so memory stays flat.

Results are best first; equal scores are ordered by row (earlier-written first), so the answer is
the same whatever the chunk size. Scores come from ``einsum`` rather than BLAS: BLAS kernels round
a row's dot product differently depending on where it falls in the block, which would make a
document's score (and tie order) change with its row or the chunk size; einsum's is exact per row.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ....protocols import FloatRows

Rows = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]


def top_k_scan(
    matrix: FloatRows, query: FloatRows, k: int, live: npt.NDArray[np.bool_] | None, chunk_rows: int
) -> tuple[Scores, Rows]:
    """Best ``k`` rows of ``matrix`` ``(n, d)`` for ``query`` ``(d,)``, except where ``live`` is False."""
    best = _empty()
    for start in range(0, matrix.shape[0], chunk_rows):
        stop = min(start + chunk_rows, matrix.shape[0])
        scores = _scores(matrix[start:stop], query)
        rows = np.arange(start, stop, dtype=np.int64)
        if live is not None:
            keep = live[start:stop]
            scores, rows = scores[keep], rows[keep]
        best = _merge(best, (scores, rows), k)
    return best


def top_k_rows(
    matrix: FloatRows, query: FloatRows, k: int, rows: Rows, chunk_rows: int
) -> tuple[Scores, Rows]:
    """Best ``k`` among the given rows (sorted ascending), gathered a chunk at a time."""
    best = _empty()
    for start in range(0, rows.shape[0], chunk_rows):
        chunk = rows[start : start + chunk_rows]
        scores = _scores(matrix[chunk], query)
        best = _merge(best, (scores, chunk), k)
    return best


def _scores(block: FloatRows, query: FloatRows) -> Scores:
    scores: Scores = np.einsum("ij,j->i", block, query, dtype=np.float32)
    return scores


def _merge(best: tuple[Scores, Rows], new: tuple[Scores, Rows], k: int) -> tuple[Scores, Rows]:
    scores = np.concatenate([best[0], new[0]])
    rows = np.concatenate([best[1], new[1]])
    if scores.shape[0] > k:
        # keep everything tied with the k-th best, so the row tie-break below decides, not argpartition
        kth = scores[np.argpartition(scores, scores.shape[0] - k)[scores.shape[0] - k]]
        keep = scores >= kth
        scores, rows = scores[keep], rows[keep]
    order = np.lexsort((rows, -scores))[:k]
    return scores[order], rows[order]


def _empty() -> tuple[Scores, Rows]:
    return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
