"""Our checkpoint format round-trips, and ``load_model`` tells every kind of model spec apart."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from gemsearch.errors import ModelError
from gemsearch.preprocess import Preprocessing
from gemsearch.trainer.models.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from gemsearch.trainer.models.embedder import TorchEmbedder
from gemsearch.trainer.models.extraction import MULTISCALE
from gemsearch.trainer.models.loading import load_model, off_the_shelf_config
from gemsearch.trainer.models.model import RetrievalModel
from gemsearch.trainer.models.network import NetworkConfig, build_network
from gemsearch.trainer.models.whitening import learn_pca_whitening


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    config = NetworkConfig(
        backbone="efficientnet_lite0",
        pooling="gem",
        whitening_dim=32,
        preprocessing=Preprocessing(max_side=64),
    )
    torch.manual_seed(0)
    net = build_network(config, pretrained=True)
    with torch.no_grad():
        net.pool.p.fill_(2.5)  # type: ignore[union-attr, operator]
    pca = learn_pca_whitening(np.random.default_rng(0).standard_normal((100, 32)), learned_from="noise")
    return RetrievalModel(net, config, {"ss": pca.reduced(16)}, origin="test")


def test_round_trip_rebuilds_the_same_network(model: RetrievalModel, tmp_path: Path) -> None:
    path = save_checkpoint(model, tmp_path / "models" / "net.pt")
    assert [p.name for p in path.parent.iterdir()] == ["net.pt"]  # no temporary file left behind
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    original = model.net.state_dict()
    assert loaded.net.state_dict().keys() == original.keys()
    assert all(torch.equal(v, original[k]) for k, v in loaded.net.state_dict().items())
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        assert torch.equal(loaded.net.eval()(x), model.net.eval()(x))
    w, w0 = loaded.whitening["ss"], model.whitening["ss"]
    assert (w.kind, w.learned_from, w.dims, w.output_dim) == ("pca", "noise", 16, 16)
    np.testing.assert_array_equal(w.P, w0.P)
    np.testing.assert_array_equal(w.m, w0.m)


def test_load_model_reads_our_format(model: RetrievalModel, tmp_path: Path) -> None:
    path = save_checkpoint(model, tmp_path / "net.pt")
    loaded = load_model(path)
    assert loaded.origin == str(path) and loaded.net.output_dim == 32


def test_broken_checkpoints_are_model_errors(model: RetrievalModel, tmp_path: Path) -> None:
    path = save_checkpoint(model, tmp_path / "net.pt")
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(ModelError, match="version 99"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({**payload, "config": '{"backbone": "resnet50", "pooling": "max"}'}, tmp_path / "config.pt")
    with pytest.raises(ModelError, match="invalid checkpoint config"):
        load_checkpoint(tmp_path / "config.pt")
    torch.save(model.net.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ModelError, match=f"no format {FORMAT!r}"):
        load_checkpoint(tmp_path / "bare.pt")
    with pytest.raises(ModelError, match="neither a gemsearch nor a cirtorch"):
        load_model(tmp_path / "bare.pt")
    with pytest.raises(ModelError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a readable"):
        load_model(tmp_path / "junk.pt")


def test_off_the_shelf_specs() -> None:
    config = off_the_shelf_config("resnet101-gem")
    assert config is not None and (config.backbone, config.pooling) == ("resnet101", "gem")
    assert off_the_shelf_config("resnet101-max") is None
    assert off_the_shelf_config("alexnet-gem") is None
    model = load_model("efficientnet_lite0-spoc")
    assert model.config.pooling == "spoc" and model.origin == "off-the-shelf efficientnet_lite0-spoc"
    with pytest.raises(ModelError, match="BACKBONE-POOLING"):
        load_model("no-such-model")


def test_whitening_follows_the_kind_of_extraction(
    model: RetrievalModel, caplog: pytest.LogCaptureFixture
) -> None:
    assert TorchEmbedder(model).output_dim == 16  # the "ss" whitening keeps 16 dims
    with caplog.at_level(logging.WARNING):
        multiscale = TorchEmbedder(model, scales=MULTISCALE)
    assert multiscale.output_dim == 32 and multiscale.whitening is None
    assert "whitening learned for ss only" in caplog.text


def test_checkpoints_are_written_with_the_umask_permissions(tmp_path: Path) -> None:
    import os
    import stat

    from gemsearch.trainer.models.checkpoint import atomic_torch_save

    old = os.umask(0o022)
    try:
        path = atomic_torch_save({"x": 1}, tmp_path / "sub" / "c.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the service that loads it
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]  # no temporary file left behind
