"""Per-epoch tuples: sizes fitted to the data, seeded draws, hard negatives from other clusters."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from gemsearch.errors import ConfigError
from gemsearch.samples import build_multiview_set
from gemsearch.trainer.models.loading import load_model
from gemsearch.trainer.training.config import DataSource
from gemsearch.trainer.training.data import TrainingSet, load_source
from gemsearch.trainer.training.distributed import DistContext
from gemsearch.trainer.training.tuples import TupleImages, TupleMiner, TupleSizes, fit_sizes


@pytest.fixture(scope="session")
def train_set(tmp_path_factory: pytest.TempPathFactory) -> TrainingSet:
    root = tmp_path_factory.mktemp("tuples-multiview")
    build_multiview_set(root, views_per_image=4, holdout=0, max_side=96)
    return load_source(DataSource(path=root / "train"))


def _miner(data: TrainingSet, sizes: TupleSizes, seed: int = 0) -> TupleMiner:
    pre = load_model("efficientnet_lite0-gem").config.preprocessing.model_copy(update={"max_side": 64})
    return TupleMiner(data, pre, sizes, seed=seed)


def test_cirtorch_defaults_shrink_to_small_data_with_a_warning(
    train_set: TrainingSet, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        sizes = fit_sizes(train_set, neg_num=5, query_size=2000, pool_size=20000)
    n_clusters = len(set(train_set.clusters))
    assert sizes == TupleSizes(min(5, n_clusters - 1), len(train_set.qidxs), len(train_set.images))
    assert "query_size 2000" in caplog.text and "pool_size 20000" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert fit_sizes(train_set, 1, 2, 3) == TupleSizes(1, 2, 3)
    assert not caplog.text


def test_draws_repeat_per_epoch_and_differ_between_epochs(train_set: TrainingSet) -> None:
    miner = _miner(train_set, TupleSizes(2, 5, 12))
    q0, p0, pool0 = miner.draw(0)
    q0b, _, pool0b = miner.draw(0)
    q1, _, pool1 = miner.draw(1)
    assert np.array_equal(q0, q0b) and np.array_equal(pool0, pool0b)
    assert not (np.array_equal(q0, q1) and np.array_equal(pool0, pool1))
    assert len(q0) == 5 and len(set(pool0.tolist())) == 12
    clusters = np.asarray(train_set.clusters)
    assert np.array_equal(clusters[q0], clusters[p0]) and not np.any(q0 == p0)


@pytest.mark.slow
def test_tuples_hold_hard_negatives_of_other_clusters(train_set: TrainingSet) -> None:
    net = load_model("efficientnet_lite0-gem").net
    miner = _miner(train_set, TupleSizes(3, 6, len(train_set.images)))
    tuples = miner.epoch_tuples(net, epoch=0, ctx=DistContext())
    clusters = train_set.clusters
    queries, positives, _ = miner.draw(0)
    assert [t[:2] for t in tuples] == list(zip(queries.tolist(), positives.tolist(), strict=True))
    vecs = miner.describe(net, np.arange(len(train_set.images)), DistContext())
    for q, _p, *negs in tuples:
        assert len(negs) == 3
        neg_clusters = [clusters[n] for n in negs]
        assert clusters[q] not in neg_clusters and len(set(neg_clusters)) == 3
        # the first negative is the nearest image of any other cluster (the pool is every image)
        others = [i for i in range(len(clusters)) if clusters[i] != clusters[q]]
        assert negs[0] == others[int(np.argmax(vecs[others] @ vecs[q]))]
    images = TupleImages(train_set, tuples, miner.preprocessing)[0]
    assert len(images) == 5 and all(im.shape[0] == 3 and max(im.shape[1:]) <= 64 for im in images)


@pytest.mark.slow
def test_a_pool_without_enough_clusters_is_a_config_error(train_set: TrainingSet) -> None:
    miner = _miner(train_set, TupleSizes(len(set(train_set.clusters)) - 1, 2, 3))
    with pytest.raises(ConfigError, match="pool_size"):
        miner.epoch_tuples(load_model("efficientnet_lite0-gem").net, epoch=0, ctx=DistContext())
