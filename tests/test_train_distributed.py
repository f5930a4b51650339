"""Two CPU processes (gloo) train one model with DistributedDataParallel and stay in sync."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from gemsearch.samples import build_multiview_set
from gemsearch.trainer.training.config import TrainConfig
from gemsearch.trainer.training.distributed import DistContext
from gemsearch.trainer.training.loop import train
from gemsearch.trainer.training.setup import build_model

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world_size: int, port: int, config_json: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    result = train(TrainConfig.model_validate_json(config_json))
    torch.save(result.model.net.state_dict(), Path(out) / f"rank{rank}.pt")


def test_two_gloo_processes_keep_identical_parameters(tmp_path: Path) -> None:
    data = tmp_path / "data"
    build_multiview_set(data, views_per_image=4, holdout=2, max_side=96)
    config = TrainConfig(
        directory=tmp_path / "run", train_data=data / "train", backbone="efficientnet_lite0",
        image_size=64, epochs=2, query_size=6, pool_size=16, neg_num=2, batch_size=1,
        lr=1e-3, workers=0, progress=False, device="cpu",
    )  # fmt: skip
    mp.spawn(_worker, args=(2, _free_port(), config.model_dump_json(), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    start = build_model(config).net.state_dict()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "the replicas diverged"
    assert any(not torch.equal(rank0[k], start[k]) for k in start), "no step was taken"
    # rank 0 alone wrote the run's files, the same weights as it holds
    saved = torch.load(tmp_path / "run" / "model_last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)


def test_shards_cover_every_index_once() -> None:
    shards = [list(DistContext(rank=r, world_size=3).shard(10)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_device_choice_falls_back_to_cpu_without_a_gpu() -> None:
    from gemsearch.errors import ConfigError
    from gemsearch.trainer.training.distributed import init_distributed, pick_device

    if torch.cuda.is_available():
        assert pick_device("auto", local_rank=0) == torch.device("cuda", 0)
        assert pick_device("cuda", local_rank=0) == torch.device("cuda", 0)
    else:
        assert pick_device("auto", local_rank=1) == torch.device("cpu")
        with pytest.raises(ConfigError, match="CUDA"):
            pick_device("cuda")
    ctx = init_distributed("cpu")  # no torchrun environment: one process, nothing initialised
    assert (ctx.rank, ctx.world_size, ctx.distributed, ctx.is_main) == (0, 1, False, True)
