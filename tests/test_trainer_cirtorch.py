"""cirtorch checkpoints, written here in cirtorch's format, import into the same network as built directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gemsearch.errors import ModelError
from gemsearch.trainer.models.backbones import create_classifier
from gemsearch.trainer.models.cirtorch import load_cirtorch, model_from_cirtorch, read_cirtorch
from gemsearch.trainer.models.embedder import TorchEmbedder
from gemsearch.trainer.models.loading import load_model
from gemsearch.trainer.models.network import NetworkConfig, build_network

# cirtorch's ResNet trunk is nn.Sequential(*list(resnet.children())[:-2]): the children by position
RESNET_CHILDREN = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
DIM = 2048


def _to_cirtorch_names(torchvision_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in torchvision_state.items():
        child, _, rest = key.partition(".")
        if child in RESNET_CHILDREN:
            out[f"features.{RESNET_CHILDREN.index(child)}.{rest}"] = value
    return out


def _meta(**overrides: Any) -> dict[str, Any]:
    meta = {
        "architecture": "resnet50",
        "local_whitening": False,
        "pooling": "gem",
        "regional": False,
        "whitening": True,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
        "outputdim": DIM,
    }
    return {**meta, **overrides}


class Parts:
    """Random weights of a cirtorch resnet50-gem-w network and its learned whitening."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        full = create_classifier("resnet50").state_dict()
        self.torchvision = {
            k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in full.items()
        }
        self.p = torch.tensor([2.87])
        self.whiten_w = torch.eye(DIM) + 0.01 * torch.randn(DIM, DIM)
        self.whiten_b = 0.01 * torch.randn(DIM)
        self.lw = {
            kind: {"m": rng.standard_normal((DIM, 1)) * 0.01, "P": rng.standard_normal((DIM, DIM))}
            for kind in ("ss", "ms")
        }

    def checkpoint(self, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        state_dict = {
            **_to_cirtorch_names(self.torchvision),
            "pool.p": self.p,
            "whiten.weight": self.whiten_w,
            "whiten.bias": self.whiten_b,
        }
        meta = {**(meta or _meta()), "Lw": {"retrieval-SfM-120k": self.lw}}
        optimizer = {"state": {}, "param_groups": [{"lr": 1e-6, "momentum": 0.9, "params": [0, 1]}]}
        return {"epoch": 30, "meta": meta, "state_dict": state_dict, "min_loss": 0.31, "optimizer": optimizer}


def write_cirtorch(payload: dict[str, Any], path: Path) -> Path:
    """As the 2018-2019 releases were written: legacy serialization, numpy 1 module names."""
    torch.save(payload, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    assert b"numpy._core.multiarray" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    return path


@pytest.fixture(scope="module")
def parts() -> Parts:
    return Parts()


@pytest.fixture(scope="module")
def checkpoint(parts: Parts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cirtorch(parts.checkpoint(), tmp_path_factory.mktemp("cirtorch") / "net.pth")


def test_imported_network_equals_the_directly_built_one(
    parts: Parts, checkpoint: Path, tmp_path: Path
) -> None:
    imported = load_cirtorch(checkpoint)
    torch.save(parts.torchvision, tmp_path / "resnet50-imagenet.pth")  # a torchvision-named weights file
    config = NetworkConfig(backbone="resnet50", pooling="gem", whitening_dim=DIM)
    direct = build_network(config, weights=tmp_path / "resnet50-imagenet.pth")
    with torch.no_grad():
        direct.pool.p.copy_(parts.p)  # type: ignore[union-attr, operator]
        direct.whiten.weight.copy_(parts.whiten_w)  # type: ignore[union-attr]
        direct.whiten.bias.copy_(parts.whiten_b)  # type: ignore[union-attr]
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        a, b = imported.net.eval()(x), direct.eval()(x)
    assert a.shape == (2, DIM)
    assert float((a[0] - a[1]).abs().max()) > 1e-3  # descriptors that depend on the image
    assert float((a - b).abs().max()) < 1e-6
    assert imported.config == config
    assert imported.net.pool.p.item() == pytest.approx(2.87)  # type: ignore[union-attr, operator]


def test_learned_whitening_comes_along_and_is_applied_after_extraction(
    parts: Parts, checkpoint: Path
) -> None:
    model = load_model(checkpoint)
    assert set(model.whitening) == {"ss", "ms"}
    lw = model.whitening["ss"]
    assert lw.learned_from == "retrieval-SfM-120k" and lw.m.shape == (DIM,)
    np.testing.assert_array_equal(lw.P, parts.lw["ss"]["P"])
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    raw = TorchEmbedder(model, whiten=False).embed([image])[0].astype(np.float64)
    whitened = TorchEmbedder(model).embed([image])[0]
    expected = parts.lw["ss"]["P"] @ (raw - parts.lw["ss"]["m"][:, 0])
    np.testing.assert_allclose(whitened, expected / np.linalg.norm(expected), atol=1e-5)
    assert model.whitening_for([1.0, 0.5]) is model.whitening["ms"]


def test_numpy_arrays_are_the_only_extra_globals_allowed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[str]]:
            return (Path.touch, (str(marker),))

    torch.save(
        {"meta": {"architecture": "resnet50"}, "state_dict": {}, "evil": Payload()}, tmp_path / "evil.pth"
    )
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        read_cirtorch(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        (_meta(regional=True), "regional"),
        (_meta(local_whitening=True), "local whitening"),
        (_meta(architecture="alexnet"), "unsupported cirtorch meta"),
        (_meta(pooling="gemmp"), "unsupported cirtorch meta"),
        (_meta(outputdim=512), "outputdim 512"),
    ],
)
def test_unsupported_networks_are_model_errors(parts: Parts, meta: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        model_from_cirtorch(parts.checkpoint(meta), origin="x.pth")


def test_weights_that_do_not_fit_are_model_errors(parts: Parts) -> None:
    payload = parts.checkpoint(_meta(whitening=False))  # the state dict still has whiten.*
    with pytest.raises(ModelError, match="do not fit"):
        model_from_cirtorch(payload, origin="x.pth")


def test_whitening_dataset_is_chosen_by_name(parts: Parts) -> None:
    payload = parts.checkpoint()
    payload["meta"]["Lw"]["retrieval-SfM-30k"] = parts.lw
    assert (
        model_from_cirtorch(payload, lw="retrieval-SfM-30k").whitening["ss"].learned_from
        == "retrieval-SfM-30k"
    )
    assert model_from_cirtorch(payload).whitening["ss"].learned_from == "retrieval-SfM-120k"
    with pytest.raises(ModelError, match="no whitening learned on 'gl18'"):
        model_from_cirtorch(payload, lw="gl18")
