"""The training loop on real photos: it learns, writes its files, and resuming equals not stopping."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from gemsearch.errors import ConfigError
from gemsearch.samples import build_multiview_set
from gemsearch.trainer.models.checkpoint import load_checkpoint
from gemsearch.trainer.training.config import TrainConfig
from gemsearch.trainer.training.loop import train
from gemsearch.trainer.training.setup import build_model, freeze_batchnorm, make_optimizer, set_epoch_lr

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def multiview(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six training objects and two held-out ones, four views each, small images."""
    root = tmp_path_factory.mktemp("train-multiview")
    build_multiview_set(root, views_per_image=4, holdout=2, max_side=96)
    return root


def tiny_config(multiview: Path, directory: Path, **changes: Any) -> TrainConfig:
    """Lite0 (the one real pretrained CNN offline) on 64-pixel images: seconds per epoch."""
    values: dict[str, Any] = {
        "directory": directory,
        "train_data": multiview / "train",
        "val_data": multiview / "test",
        "backbone": "efficientnet_lite0",
        "image_size": 64,
        "test_image_size": 64,
        "epochs": 2,
        "query_size": 4,
        "pool_size": 16,
        "neg_num": 2,
        "batch_size": 2,
        "lr": 1e-3,
        "workers": 0,
        "progress": False,
        "device": "cpu",
    }
    return TrainConfig(**{**values, **changes})


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).net.state_dict()


def test_training_writes_models_metrics_and_learns(multiview: Path, tmp_path: Path) -> None:
    config = tiny_config(multiview, tmp_path / "run")
    start = build_model(config).net.state_dict()
    result = train(config)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"model_last.pt", "model_best.pt", "train_state.pt", "metrics.jsonl", "config.yaml"} <= files
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows == result.metrics
    assert rows[1]["lr"] == pytest.approx(1e-3 * math.exp(-0.01))
    assert all(0 <= r["val_map"] <= 1 and r["val_loss"] >= 0 for r in rows)
    best = min(rows, key=lambda r: r["val_loss"])
    assert best["best"] and result.best_epoch == best["epoch"]
    last = _weights(tmp_path / "run" / "model_last.pt")
    assert any(not torch.equal(last[k], start[k]) for k in start), "training changed no weight"
    # batch-norm statistics are frozen: running means are those of the pretrained network
    assert all(torch.equal(last[k], start[k]) for k in start if k.endswith("running_mean"))
    assert rows[-1]["p"] != pytest.approx(3.0, abs=1e-7)


def test_resume_gives_the_same_weights_as_not_stopping(multiview: Path, tmp_path: Path) -> None:
    straight = train(tiny_config(multiview, tmp_path / "straight", epochs=2))
    train(tiny_config(multiview, tmp_path / "stopped", epochs=1))
    resumed = train(tiny_config(multiview, tmp_path / "stopped", epochs=2, resume=True))
    a = _weights(tmp_path / "straight" / "model_last.pt")
    b = _weights(tmp_path / "stopped" / "model_last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.metrics == straight.metrics
    lines = (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


def test_an_existing_run_is_not_overwritten_without_resume(multiview: Path, tmp_path: Path) -> None:
    train(tiny_config(multiview, tmp_path / "run", epochs=1))
    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_config(multiview, tmp_path / "run", epochs=1))


def test_gem_p_learns_ten_times_faster_without_weight_decay(multiview: Path, tmp_path: Path) -> None:
    config = tiny_config(multiview, tmp_path, lr=1e-4, weight_decay=1e-3, pretrained=False)
    net = build_model(config).net
    opt = make_optimizer(net, config)
    pool = next(g for g in opt.param_groups if any(p is net.pool.p for p in g["params"]))
    features = opt.param_groups[0]
    assert (pool["lr"], pool["weight_decay"]) == (pytest.approx(1e-3), 0.0)
    assert (features["lr"], features["weight_decay"]) == (1e-4, 1e-3)
    assert set_epoch_lr(opt, config, 50) == pytest.approx(1e-4 * math.exp(-0.5))
    assert pool["lr"] == pytest.approx(1e-3 * math.exp(-0.5))


def test_freeze_batchnorm_keeps_other_layers_training(multiview: Path, tmp_path: Path) -> None:
    net = build_model(tiny_config(multiview, tmp_path, pretrained=False)).net
    net.train()
    freeze_batchnorm(net)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert net.training and net.features.training


def test_train_command_runs_from_a_yaml_file(multiview: Path, tmp_path: Path) -> None:
    import yaml
    from click.testing import CliRunner

    from gemsearch.cli import main

    config = tiny_config(multiview, tmp_path / "cli", epochs=2)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    result = CliRunner().invoke(
        main, ["train", "--config", str(path), "--epochs", "1"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "best epoch 1" in result.output
    rows = (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1  # the flag's 1 epoch, not the file's 2
    assert load_checkpoint(tmp_path / "cli" / "model_best.pt").config.backbone == "efficientnet_lite0"


def test_test_datasets_are_scored_during_training(multiview: Path, tmp_path: Path) -> None:
    """A cirtorch-layout dataset (gnd_<name>.pkl + jpg/) made of the held-out views."""
    import pickle
    import shutil

    from gemsearch.samples import SampleSet

    sample_set = SampleSet.load(multiview)
    root = tmp_path / "tiny"
    (root / "jpg").mkdir(parents=True)
    names = {}
    for i in [*sample_set.queries, *sample_set.database]:
        names[i] = f"view{i}"
        shutil.copy(sample_set.path(i), root / "jpg" / f"view{i}.jpg")  # PIL reads PNG bytes as well
    gnd = [{"ok": list(g.ok), "junk": [], "bbx": None} for g in sample_set.ground_truth]
    data = {
        "imlist": [names[i] for i in sample_set.database],
        "qimlist": [names[i] for i in sample_set.queries],
    }
    (root / "gnd_tiny.pkl").write_bytes(pickle.dumps({**data, "gnd": gnd}))
    result = train(tiny_config(multiview, tmp_path / "run", epochs=1, test_datasets=[root]))
    assert 0 < result.metrics[0]["map_tiny"] <= 1
