"""Siamese fine-tuning with hard-negative mining, as cirtorch's ``train.py``.

Per epoch: lr = base lr x exp(-lr_decay x epoch) (the GeM p at ``pool_lr_factor`` x the backbone's
rate, without weight decay); tuples re-mined with the current network; the network in train mode
with its batch-norm layers frozen in eval mode; each tuple's images go through the network one at
a time (their sizes differ), the loss of each tuple is back-propagated at once and gradients add up
over ``batch_size`` tuples (x ``update_every`` batches) per optimiser step. Then the validation
loss (tuples mined the same way), mAP every ``eval_every`` epochs, one JSON line of metrics, the
model checkpoints ``model_last.pt`` / ``model_best.pt`` (best validation loss) and the resumable
``train_state.pt``.

Under ``torchrun`` every rank mines a shard of the descriptors, trains on its share of the tuples
inside ``DistributedDataParallel`` (gradients averaged per step) and rank 0 writes the files.
"""

from __future__ import annotations

import json
import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from gemsearch.errors import ConfigError

from ..evaluation.during_training import test_maps, validation_map
from ..models.checkpoint import save_checkpoint
from ..models.model import RetrievalModel
from ..models.network import RetrievalNet
from ..models.pooling import GeM
from .config import TrainConfig, dump_config
from .data import load_source
from .distributed import DistContext, barrier, init_distributed, mean_over_ranks, shutdown
from .losses import make_loss
from .setup import build_model, freeze_batchnorm, make_optimizer, set_epoch_lr
from .state import Progress, load_state, restore, save_state, seed_everything
from .tuples import Tuple, TupleImages, TupleMiner, autocast, fit_sizes, keep_lists

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.jsonl"


class TupleForward(nn.Module):
    """One tuple's images, one at a time, -> ``(s, D)``: one forward call per tuple for DDP."""

    def __init__(self, net: RetrievalNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: list[Tensor]) -> Tensor:
        return torch.cat([self.net(x.unsqueeze(0)) for x in images])


@dataclass
class TrainResult:
    """``model``: the network after the last epoch (``model_best.pt`` holds the best one)."""

    model: RetrievalModel
    directory: Path
    best_epoch: int
    best_loss: float
    metrics: list[dict[str, Any]] = field(default_factory=list)


def train(config: TrainConfig, ctx: DistContext | None = None) -> TrainResult:
    """Run (or, with ``config.resume``, continue) the training ``config`` describes."""
    own_ctx = ctx is None
    ctx = ctx or init_distributed(config.device)
    try:
        return _Run(config, ctx).run()
    finally:
        if own_ctx:
            shutdown(ctx)


class _Run:
    """The state of one training run; ``run()`` is the epoch loop."""

    def __init__(self, config: TrainConfig, ctx: DistContext) -> None:
        self.config, self.ctx = config, ctx
        self.directory = Path(config.directory)
        self._check_directory()
        seed_everything(config.seed, -1, 0)  # the same initial weights on every rank
        train_set = load_source(config.train_source())
        val_source = config.val_source()
        val_set = load_source(val_source) if val_source is not None else None
        self.model = build_model(config)
        self.net = self.model.net.to(ctx.device)
        self.amp = config.amp and ctx.device.type == "cuda"
        train_pre = self.model.config.preprocessing.model_copy(update={"max_side": config.image_size})
        sizes = fit_sizes(train_set, config.neg_num, config.query_size, config.pool_size)
        self.miner = TupleMiner(
            train_set, train_pre, sizes, seed=config.seed, workers=config.workers, amp=self.amp
        )
        self.val_miner = None
        if val_set is not None:
            val_sizes = fit_sizes(val_set, sizes.neg_num, config.query_size, config.pool_size)
            self.val_miner = TupleMiner(
                val_set,
                train_pre,
                val_sizes,
                seed=config.seed,
                stream=1,
                workers=config.workers,
                amp=self.amp,
            )
        self.loss_fn = make_loss(config.loss, config.resolved_margin)
        self.optimizer = make_optimizer(self.net, config)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.progress = Progress()
        if config.resume:
            self.progress = restore(load_state(self.directory), self.net, self.optimizer, self.scaler)
            log.info("resuming %s at epoch %d", self.directory, self.progress.next_epoch)
        self.forward: nn.Module = TupleForward(self.net)
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.forward = DistributedDataParallel(self.forward, device_ids=ids)

    def _check_directory(self) -> None:
        state = self.directory / "train_state.pt"
        if state.exists() and not self.config.resume:
            raise ConfigError(
                f"{self.directory} holds a training run: pass --resume, or choose another directory"
            )
        if self.ctx.is_main:
            self.directory.mkdir(parents=True, exist_ok=True)
            dump_config(self.config, self.directory / "config.yaml")

    def run(self) -> TrainResult:
        metrics = _read_metrics(self.directory / METRICS_FILE, self.progress.next_epoch)
        for epoch in range(self.progress.next_epoch, self.config.epochs):
            seed_everything(self.config.seed, epoch, self.ctx.rank)
            lr = set_epoch_lr(self.optimizer, self.config, epoch)
            row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": self._train_epoch(epoch)}
            if self.val_miner is not None:
                row["val_loss"] = self._val_loss(epoch)
            if (epoch + 1) % self.config.eval_every == 0 or epoch + 1 == self.config.epochs:
                row.update(self._evaluate())
            row["p"] = float(self.net.pool.p.item()) if isinstance(self.net.pool, GeM) else None
            metrics.append(row)
            self._end_epoch(epoch, row, metrics)
        p = self.progress
        return TrainResult(self.model, self.directory, p.best_epoch + 1, p.best_loss, metrics)

    def _tuples(self, miner: TupleMiner, epoch: int) -> list[Tuple]:
        """This rank's tuples: every rank mines the same list and takes an equal share."""
        tuples = miner.epoch_tuples(self.net, epoch, self.ctx, self.config.progress)
        share = len(tuples) // self.ctx.world_size
        if share == 0:
            raise ConfigError(f"{len(tuples)} tuples cannot be shared by {self.ctx.world_size} processes")
        return tuples[self.ctx.rank :: self.ctx.world_size][:share]

    def _loader(self, miner: TupleMiner, tuples: list[Tuple]) -> DataLoader[list[Tensor]]:
        return DataLoader(
            TupleImages(miner.data, tuples, miner.preprocessing), batch_size=self.config.batch_size,
            num_workers=self.config.workers, collate_fn=keep_lists,
        )  # fmt: skip

    def _train_epoch(self, epoch: int) -> float:
        loader = self._loader(self.miner, self._tuples(self.miner, epoch))
        self.net.train()
        freeze_batchnorm(self.net)
        self.optimizer.zero_grad(set_to_none=True)
        total, count = 0.0, 0
        steps = len(loader)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}", unit="batch", disable=not self._show())
        for i, batch in enumerate(bar):
            step_now = (i + 1) % self.config.update_every == 0 or i + 1 == steps
            for j, images in enumerate(batch):
                with self._sync(step_now and j == len(batch) - 1):
                    loss = self._tuple_loss(images)
                    scaled: Tensor = self.scaler.scale(loss)
                    scaled.backward()  # type: ignore[no-untyped-call]
                total, count = total + float(loss.item()), count + 1
            if step_now:
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}")
        return mean_over_ranks(self.ctx, [total / max(count, 1)])[0]

    def _tuple_loss(self, images: list[Tensor]) -> Tensor:
        with autocast(self.ctx.device, self.amp):
            desc = self.forward([im.to(self.ctx.device, non_blocking=True) for im in images])
        loss: Tensor = self.loss_fn(desc.float().unsqueeze(0))
        return loss

    def _sync(self, last: bool) -> AbstractContextManager[Any]:
        """DDP averages gradients only on the backward that ends an optimiser step."""
        if isinstance(self.forward, DistributedDataParallel) and not last:
            return self.forward.no_sync()
        return nullcontext()

    def _val_loss(self, epoch: int) -> float:
        assert self.val_miner is not None
        loader = self._loader(self.val_miner, self._tuples(self.val_miner, epoch))
        self.net.eval()
        total, count = 0.0, 0
        with torch.inference_mode():
            for batch in tqdm(loader, desc="validation", unit="batch", disable=not self._show()):
                for images in batch:
                    with autocast(self.ctx.device, self.amp):
                        desc = torch.cat([self.net(im.unsqueeze(0).to(self.ctx.device)) for im in images])
                    total, count = total + float(self.loss_fn(desc.float().unsqueeze(0)).item()), count + 1
        return mean_over_ranks(self.ctx, [total / max(count, 1)])[0]

    def _evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.val_miner is not None:
            data = self.val_miner.data
            images = np.arange(len(data.images), dtype=np.int64)
            vecs = self.val_miner.describe(self.model.net, images, self.ctx, self._show())
            out["val_map"] = validation_map(vecs, data.qidxs, data.clusters)
        if self.config.test_datasets and self.ctx.is_main:
            tests = test_maps(
                self.model, self.config.test_datasets, self.config.test_image_size, str(self.ctx.device)
            )
            out.update({f"map_{name}": value for name, value in tests.items()})
        return out

    def _end_epoch(self, epoch: int, row: dict[str, Any], metrics: list[dict[str, Any]]) -> None:
        p = self.progress
        loss = row.get("val_loss", row["train_loss"])  # without validation data: the training loss
        best = loss < p.best_loss
        if best:
            p.best_loss, p.best_epoch = loss, epoch
        p.next_epoch = epoch + 1
        row["best"] = best
        log.info("epoch %d: %s", epoch + 1, json.dumps(row))
        if self.ctx.is_main:
            self.model.origin = f"{self.directory} epoch {epoch + 1}"
            save_checkpoint(self.model, self.directory / "model_last.pt")
            if best:
                save_checkpoint(self.model, self.directory / "model_best.pt")
            _write_metrics(self.directory / METRICS_FILE, metrics)
            save_state(
                self.directory, self.net, self.optimizer, self.scaler, p, self.config.model_dump_json()
            )
        barrier(self.ctx)

    def _show(self) -> bool:
        return self.config.progress and self.ctx.is_main


def _read_metrics(path: Path, before_epoch: int) -> list[dict[str, Any]]:
    """The metrics of the epochs already done (a resumed run rewrites any later lines)."""
    if before_epoch == 0 or not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if r["epoch"] <= before_epoch]


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
