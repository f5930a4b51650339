"""TrainConfig: YAML and flags, validation with readable errors, and `gemsearch train`'s options."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from gemsearch.cli import main
from gemsearch.errors import ConfigError
from gemsearch.trainer.models import pooling
from gemsearch.trainer.training.config import DataSource, PoolingName, TrainConfig, load_config


def _yaml(tmp_path: Path, **values: object) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_defaults_are_cirtorchs(tmp_path: Path) -> None:
    c = TrainConfig(directory=tmp_path, train_data=tmp_path)
    assert (c.optimizer, c.lr, c.weight_decay, c.lr_decay) == ("adam", 1e-6, 1e-6, 0.01)
    assert (c.neg_num, c.query_size, c.pool_size, c.batch_size, c.image_size) == (5, 2000, 20000, 5, 362)
    assert (c.loss, c.resolved_margin, c.pool_lr_factor) == ("contrastive", 0.7, 10.0)
    assert TrainConfig(directory=tmp_path, train_data=tmp_path, loss="triplet").resolved_margin == 0.1


def test_flags_override_the_file_and_dashes_are_accepted(tmp_path: Path) -> None:
    path = _yaml(tmp_path, directory="out", **{"train-data": "data", "epochs": 3, "lr": 1e-5})
    c = load_config(path, epochs=7, lr=None)
    assert (c.epochs, c.lr, c.train_data) == (7, 1e-5, Path("data"))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "epochs"),
        ({"backbone": "resnet9000"}, "unknown backbone"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_invalid_configs_name_the_option(tmp_path: Path, values: dict[str, object], message: str) -> None:
    path = _yaml(tmp_path, directory="out", train_data="data", **values)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_missing_required_option_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="train_data"):
        load_config(_yaml(tmp_path, directory="out"))


def test_bad_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: [1,\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_data_format_is_told_from_the_path(tmp_path: Path) -> None:
    assert DataSource(path=tmp_path).resolved_format() == "folders"
    assert DataSource(path=tmp_path / "db.pkl").resolved_format() == "sfm"
    assert DataSource(path=tmp_path / "pairs.csv").resolved_format() == "pairs"
    with pytest.raises(ConfigError, match="layout"):
        DataSource(path=tmp_path / "what.txt").resolved_format()
    sfm = TrainConfig(directory=tmp_path, train_data=tmp_path / "db.pkl")
    assert sfm.val_source() == DataSource(path=tmp_path / "db.pkl", format="sfm", split="val")
    assert TrainConfig(directory=tmp_path, train_data=tmp_path).val_source() is None


def test_pooling_names_match_the_layers() -> None:
    assert typing.get_args(PoolingName) == typing.get_args(pooling.PoolingName)


def test_every_option_is_a_flag_and_flags_override_the_file(tmp_path: Path) -> None:
    command = main.get_command(None, "train")  # type: ignore[arg-type]
    assert command is not None
    flags = {o for p in command.params for o in p.opts}
    assert {f"--{name.replace('_', '-')}" for name in TrainConfig.model_fields} <= flags
    path = _yaml(tmp_path, directory="out", train_data="data", epochs=3, amp=True)
    result = CliRunner().invoke(
        main, ["train", "--config", str(path), "--epochs", "9", "--no-amp", "--test-datasets", "a",
               "--test-datasets", "b", "--print-config"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert (printed["epochs"], printed["amp"], printed["test_datasets"]) == (9, False, ["a", "b"])
    assert printed["directory"] == "out"


def test_cli_reports_invalid_values_readably(tmp_path: Path) -> None:
    path = _yaml(tmp_path, directory="out", train_data="data")
    result = CliRunner().invoke(
        main, ["train", "--config", str(path), "--backbone", "nope", "--print-config"]
    )
    assert result.exit_code != 0 and "unknown backbone" in result.output


def test_load_source_reads_each_layout_and_checks_files(tmp_path: Path) -> None:
    import json
    import pickle

    from gemsearch.trainer.training.data import cid_to_path, load_source

    cids = ["aaaaaa000001", "aaaaaa000002", "bbbbbb000003"]
    db = {
        split: {"cids": cids, "cluster": [0, 0, 1], "qidxs": [0], "pidxs": [1]} for split in ("train", "val")
    }
    pkl = tmp_path / "sfm" / "db.pkl"
    pkl.parent.mkdir()
    pkl.write_bytes(pickle.dumps(db))
    with pytest.raises(ConfigError, match="missing"):
        load_source(DataSource(path=pkl))
    for cid in cids:  # the default image root: ims/ next to the database
        path = cid_to_path(cid, pkl.parent / "ims")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    val = load_source(DataSource(path=pkl, split="val"))
    assert (val.name, val.clusters) == ("db.pkl:val", [0, 0, 1])
    rows = [{"query": "a.jpg", "positive": "b.jpg", "cluster": "x"}, {"query": "c.jpg", "cluster": "y"}]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
    data = load_source(DataSource(path=pairs))
    assert (data.qidxs, data.pidxs, len(data.images)) == ([0], [1], 3)
