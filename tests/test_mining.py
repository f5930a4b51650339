"""Hard-negative mining: nearest non-matching images, at most one per cluster, never the query's own."""

from __future__ import annotations

import pytest
import torch

from gemsearch.trainer.training.mining import mine_hard_negatives


def test_worked_example() -> None:
    # 1-D "directions" on the unit circle, similarity = cos(angle difference)
    angles = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 1.5])
    pool = torch.stack([angles.cos(), angles.sin()], dim=1)
    pool_clusters = torch.tensor([0, 1, 1, 2, 3, 4])
    query = pool[:1]  # the query is pool image 0, cluster 0
    negatives = mine_hard_negatives(query, pool, torch.tensor([0]), pool_clusters, neg_num=3)
    # pass over 0 (own group), take 1 (group 1), pass over 2 (group 1 used), take 3, take 4
    assert negatives.tolist() == [[1, 3, 4]]


def test_against_brute_force_with_small_window() -> None:
    gen = torch.Generator().manual_seed(0)
    pool = torch.nn.functional.normalize(torch.randn(300, 16, generator=gen), dim=1)
    pool_clusters = torch.randint(0, 40, (300,), generator=gen)
    queries = torch.nn.functional.normalize(torch.randn(20, 16, generator=gen), dim=1)
    query_clusters = torch.randint(0, 40, (20,), generator=gen)
    got = mine_hard_negatives(queries, pool, query_clusters, pool_clusters, neg_num=5, window=1)
    for i in range(20):
        order = torch.argsort(queries[i] @ pool.T, descending=True).tolist()
        used, expected = {int(query_clusters[i])}, []
        for j in order:
            if int(pool_clusters[j]) not in used and len(expected) < 5:
                expected.append(j)
                used.add(int(pool_clusters[j]))
        assert got[i].tolist() == expected


def test_not_enough_clusters_is_an_error() -> None:
    pool = torch.eye(3)
    with pytest.raises(ValueError, match="only 1 pool clusters"):
        mine_hard_negatives(pool[:1], pool, torch.tensor([0]), torch.tensor([0, 1, 1]), neg_num=2)
