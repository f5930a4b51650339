"""Training tuples, re-mined every epoch: (query, positive, ``neg_num`` hard negatives).

Each epoch (cirtorch's ``TuplesDataset.create_epoch_tuples``): draw ``query_size`` matching pairs
and a random pool of ``pool_size`` images, describe the queries and the pool with the current
network (eval mode, no gradients), and give each query the nearest pool images of other clusters,
at most one per cluster. The draws come from a generator seeded by (seed, epoch, split), so every
rank of a distributed run and every resumed run draws the same tuples; the descriptors are computed
a shard per rank and gathered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from gemsearch.errors import ConfigError
from gemsearch.preprocess import Preprocessing, prepare_file

from ..models.network import RetrievalNet
from .data import TrainingSet
from .distributed import DistContext, gather_rows
from .mining import mine_hard_negatives

log = logging.getLogger(__name__)
Tuple = tuple[int, ...]
"""Image indices of one tuple: query, positive, negatives."""


class ImageList(Dataset[Tensor]):
    """``(3, h, w)`` tensors of image files, preprocessed (shrunk to ``max_side``, normalised)."""

    def __init__(self, paths: Sequence[object], preprocessing: Preprocessing) -> None:
        self.paths = list(paths)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return torch.from_numpy(prepare_file(str(self.paths[i]), self.preprocessing))


class TupleImages(Dataset[list[Tensor]]):
    """The images of each tuple, as a list of ``(3, h, w)`` tensors (sizes differ)."""

    def __init__(self, data: TrainingSet, tuples: Sequence[Tuple], preprocessing: Preprocessing) -> None:
        self.images = ImageList(data.images, preprocessing)
        self.tuples = list(tuples)

    def __len__(self) -> int:
        return len(self.tuples)

    def __getitem__(self, i: int) -> list[Tensor]:
        return [self.images[j] for j in self.tuples[i]]


def keep_lists(batch: list[list[Tensor]]) -> list[list[Tensor]]:
    """Collate tuples as they are: images of different sizes cannot be stacked."""
    return batch


def _single(batch: list[Tensor]) -> Tensor:
    return batch[0]


@dataclass(frozen=True)
class TupleSizes:
    """``neg_num``, ``query_size``, ``pool_size`` as used, after fitting them to the data."""

    neg_num: int
    query_size: int
    pool_size: int


def fit_sizes(data: TrainingSet, neg_num: int, query_size: int, pool_size: int) -> TupleSizes:
    """Scale the cirtorch defaults down (with a warning) when the data is smaller than they assume."""
    fitted = TupleSizes(
        neg_num=min(neg_num, len(set(data.clusters)) - 1),
        query_size=min(query_size, len(data.qidxs)),
        pool_size=min(pool_size, len(data.images)),
    )
    for name, asked in (("neg_num", neg_num), ("query_size", query_size), ("pool_size", pool_size)):
        used = getattr(fitted, name)
        if used < asked:
            log.warning("%s: %s %d is more than the data allows; using %d", data.name, name, asked, used)
    return fitted


class TupleMiner:
    """Draws and mines the tuples of one epoch for one ``TrainingSet``."""

    def __init__(
        self,
        data: TrainingSet,
        preprocessing: Preprocessing,
        sizes: TupleSizes,
        *,
        seed: int = 0,
        stream: int = 0,
        workers: int = 0,
        amp: bool = False,
    ) -> None:
        self.data = data
        self.preprocessing = preprocessing
        self.sizes = sizes
        self.seed = seed
        self.stream = stream  # tells the training and validation draws apart
        self.workers = workers
        self.amp = amp
        self.clusters = np.asarray(data.clusters)

    def draw(self, epoch: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """``(queries, positives, pool)`` image indices of ``epoch``, the same on every rank."""
        rng = np.random.default_rng([self.seed, epoch, self.stream])
        pairs = rng.choice(len(self.data.qidxs), self.sizes.query_size, replace=False)
        queries = np.asarray(self.data.qidxs, dtype=np.int64)[pairs]
        positives = np.asarray(self.data.pidxs, dtype=np.int64)[pairs]
        pool = rng.choice(len(self.data.images), self.sizes.pool_size, replace=False).astype(np.int64)
        return queries, positives, pool

    def epoch_tuples(
        self, net: RetrievalNet, epoch: int, ctx: DistContext, progress: bool = False
    ) -> list[Tuple]:
        """Mine the tuples of ``epoch`` with ``net`` (its train/eval mode is restored)."""
        queries, positives, pool = self.draw(epoch)
        wanted = np.unique(np.concatenate([queries, pool]))
        vecs = self.describe(net, wanted, ctx, progress)
        where = {int(img): row for row, img in enumerate(wanted)}
        qv = torch.from_numpy(vecs[[where[int(i)] for i in queries]])
        pv = torch.from_numpy(vecs[[where[int(i)] for i in pool]])
        try:
            picked = mine_hard_negatives(
                qv, pv, torch.from_numpy(self.clusters[queries]), torch.from_numpy(self.clusters[pool]),
                self.sizes.neg_num,
            )  # fmt: skip
        except ValueError as exc:  # a small pool may miss clusters: ask for a larger one
            raise ConfigError(f"{self.data.name}: {exc}; raise pool_size or lower neg_num") from exc
        negatives = pool[picked.numpy()]
        return [(int(q), int(p), *map(int, n)) for q, p, n in zip(queries, positives, negatives, strict=True)]

    def describe(
        self, net: RetrievalNet, images: npt.NDArray[np.int64], ctx: DistContext, progress: bool = False
    ) -> npt.NDArray[np.float32]:
        """Single-scale descriptors ``(n, D)`` of ``images``: each rank its shard, then gathered."""
        mine = images[list(ctx.shard(len(images)))]
        loader = DataLoader(
            ImageList([self.data.images[i] for i in mine], self.preprocessing),
            batch_size=1, num_workers=self.workers, collate_fn=_single,
        )  # fmt: skip
        out = np.zeros((len(mine), net.output_dim), dtype=np.float32)
        was_training = net.training
        net.eval()
        try:
            with torch.inference_mode(), autocast(ctx.device, self.amp):
                bar = tqdm(loader, desc="mining", unit="img", disable=not (progress and ctx.is_main))
                for i, x in enumerate(bar):
                    out[i] = net(x.unsqueeze(0).to(ctx.device)).float().cpu().numpy()[0]
        finally:
            net.train(was_training)
        return gather_rows(ctx, out)


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    """float16 autocast on CUDA when ``amp``; a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")
