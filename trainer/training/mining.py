"""Hard-negative mining for tuple training (cirtorch's rule).

For each query, the pool images are ranked by similarity to the query with the current network;
negatives are taken from the top, skipping the query's own cluster and any cluster already used
for this query, so each tuple gets ``neg_num`` hard negatives from distinct clusters.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mine_hard_negatives(
    queries: Tensor,
    pool: Tensor,
    query_clusters: Tensor,
    pool_clusters: Tensor,
    neg_num: int,
    window: int = 64,
) -> Tensor:
    """Indices into ``pool`` of the hard negatives of each query, ``(nq, neg_num)`` int64.

    queries: ``(nq, d)`` and pool: ``(npool, d)`` L2-normalised descriptors on one device;
    clusters are integer ids per row. Only the ``window * neg_num`` nearest pool images are
    scanned first; a query that needs more falls back to its full ranking.
    """
    if queries.shape[1] != pool.shape[1]:
        raise ValueError(f"descriptor sizes differ: queries {queries.shape[1]}, pool {pool.shape[1]}")
    scores = queries @ pool.T  # (nq, npool)
    top = min(pool.shape[0], window * neg_num)
    ranked = torch.topk(scores, top, dim=1).indices.cpu()
    pool_c = pool_clusters.cpu().tolist()
    out = torch.empty((queries.shape[0], neg_num), dtype=torch.int64)
    for i, qc in enumerate(query_clusters.cpu().tolist()):
        picked = _pick(ranked[i].tolist(), pool_c, qc, neg_num)
        if len(picked) < neg_num and top < pool.shape[0]:
            full = torch.argsort(scores[i], descending=True).cpu().tolist()
            picked = _pick(full, pool_c, qc, neg_num)
        if len(picked) < neg_num:
            raise ValueError(
                f"query {i}: only {len(picked)} pool clusters differ from its own, {neg_num} negatives asked"
            )
        out[i] = torch.tensor(picked)
    return out


def _pick(ranking: list[int], clusters: list[int], query_cluster: int, n: int) -> list[int]:
    used = {query_cluster}
    picked: list[int] = []
    for idx in ranking:
        if clusters[idx] not in used:
            picked.append(idx)
            used.add(clusters[idx])
            if len(picked) == n:
                break
    return picked
