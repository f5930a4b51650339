"""Retrieval quality measured during training: mAP on the validation set and on test datasets.

Validation mAP: every image of the validation set that is a query in some pair searches all the
other images; its positives are the other images of its cluster (cirtorch validates by loss only;
this number shows progress in the unit users care about).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from gemsearch.metrics import QueryGroundTruth, RevisitedScore, compute_map, rank_by_similarity

from ..models.model import RetrievalModel

log = logging.getLogger(__name__)


def validation_map(vecs: npt.NDArray[np.float32], qidxs: Sequence[int], clusters: Sequence[int]) -> float:
    """mAP of the queries ``qidxs`` against all other rows of ``vecs``; positives: the same cluster."""
    queries = sorted(set(qidxs))
    cluster_of = np.asarray(clusters)
    ranks = rank_by_similarity(vecs[queries] @ vecs.T)
    gt = [
        QueryGroundTruth(ok=[int(j) for j in np.flatnonzero(cluster_of == cluster_of[q]) if j != q], junk=[q])
        for q in queries
    ]
    return compute_map(ranks, gt).mean_ap


def test_maps(model: RetrievalModel, roots: Sequence[Path], image_size: int, device: str) -> dict[str, float]:
    """mAP per test dataset (cirtorch's layout; revisited: the Medium protocol), single-scale."""
    from ..models.embedder import TorchEmbedder
    from .benchmarks import evaluate_dataset, load_dataset

    embedder = TorchEmbedder(model, max_side=image_size, device=device, whiten=False)
    out: dict[str, float] = {}
    for root in roots:
        result = evaluate_dataset(embedder, load_dataset(root))
        score = result.score
        out[result.dataset] = score.medium.mean_ap if isinstance(score, RevisitedScore) else score.mean_ap
    return out
