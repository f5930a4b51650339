"""Multi-process training with PyTorch's own DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc-per-node N -m gemsearch train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``
and the rendezvous address; ``init_distributed`` reads them and joins the process group (NCCL on
GPUs, gloo on CPU). Without them it returns a single-process context and nothing is initialised, so
the training loop has one code path for both cases.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.distributed as dist

from gemsearch.errors import ConfigError

from ..models.extraction import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> range:
        """This rank's share of ``range(n)``: contiguous, sizes differ by at most one."""
        return range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)


def pick_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's CUDA GPU when there is one, else the CPU; otherwise ``device`` itself
    (a plain ``"cuda"`` meaning this process's GPU, ``cuda:<LOCAL_RANK>``)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", local_rank)
    return resolved


def init_distributed(device: str = "auto", backend: str | None = None) -> DistContext:
    """Join the process group ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = pick_device(device, local_rank)
    if world_size <= 1:
        return DistContext(device=resolved)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if resolved.type == "cuda" else "gloo"))
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, resolved)
    log.info("rank %d of %d on %s (%s)", ctx.rank, ctx.world_size, resolved, dist.get_backend())
    return ctx


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def gather_rows(ctx: DistContext, part: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Concatenate every rank's ``(n_r, d)`` rows in rank order (each rank gets the whole)."""
    if not ctx.distributed:
        return part
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, part)
    return np.concatenate(parts, axis=0).astype(np.float32, copy=False)


def mean_over_ranks(ctx: DistContext, values: Sequence[float]) -> list[float]:
    """Average of ``values`` over the ranks (e.g. each rank's loss), identical everywhere."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=ctx.device)  # NCCL reduces CUDA tensors
    dist.all_reduce(t)
    return (t / ctx.world_size).tolist()
