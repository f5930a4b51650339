"""RetrievalNet and its config: composition, names, dimensions, msp, the Embedder protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from torch import nn

from gemsearch.preprocess import Preprocessing, prepare
from gemsearch.protocols import Embedder
from gemsearch.trainer.models.embedder import TorchEmbedder
from gemsearch.trainer.models.model import RetrievalModel
from gemsearch.trainer.models.network import NetworkConfig, RetrievalNet, build_network
from gemsearch.trainer.models.pooling import MAC, GeM


def _tiny(whiten: int | None = None, pool: nn.Module | None = None) -> RetrievalNet:
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
    linear = nn.Linear(6, whiten) if whiten else None
    return RetrievalNet(features, pool or GeM(), linear, feature_dim=6)


def test_forward_is_pool_l2n_whiten_l2n() -> None:
    net = _tiny(whiten=4).eval()
    x = torch.randn(3, 3, 9, 7)
    with torch.no_grad():
        f = net.features(x).double().numpy()
        pooled = np.mean(np.maximum(f, 1e-6) ** 3, axis=(2, 3)) ** (1 / 3)
        pooled /= np.linalg.norm(pooled, axis=1, keepdims=True) + 1e-6
        w = pooled @ net.whiten.weight.double().numpy().T + net.whiten.bias.double().numpy()  # type: ignore[union-attr]
        expected = w / (np.linalg.norm(w, axis=1, keepdims=True) + 1e-6)
        out = net(x)
    assert out.shape == (3, 4) and net.output_dim == 4
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(torch.linalg.vector_norm(out, dim=1).numpy(), 1.0, atol=1e-5)


def test_multiscale_power_is_the_learned_p_only_for_plain_gem() -> None:
    net = _tiny()
    with torch.no_grad():
        net.pool.p.fill_(2.5)  # type: ignore[union-attr, operator]
    assert net.multiscale_power == 2.5
    assert _tiny(whiten=6).multiscale_power == 1.0
    assert _tiny(pool=MAC()).multiscale_power == 1.0


def test_whitening_must_take_the_backbone_dimension() -> None:
    with pytest.raises(ValueError, match="whitening takes 5"):
        RetrievalNet(nn.Identity(), GeM(), nn.Linear(5, 3), feature_dim=6)


def test_config_defaults_preprocessing_from_the_backbone() -> None:
    lite = NetworkConfig(backbone="efficientnet_lite0")
    assert lite.preprocessing.mean == pytest.approx((127 / 255,) * 3)
    resnet = NetworkConfig(backbone="resnet50", pooling="mac", whitening_dim=512)
    assert resnet.preprocessing == Preprocessing()
    assert (resnet.feature_dim, resnet.output_dim) == (2048, 512)
    explicit = NetworkConfig(backbone="efficientnet_lite0", preprocessing=Preprocessing(max_side=362))
    assert explicit.preprocessing.max_side == 362 and explicit.preprocessing.mean[0] == 0.485
    assert NetworkConfig.model_validate_json(lite.model_dump_json()) == lite
    with pytest.raises(ValidationError, match="unknown backbone"):
        NetworkConfig(backbone="alexnet")
    with pytest.raises(ValidationError):
        NetworkConfig(backbone="resnet50", pooling="max")  # type: ignore[arg-type]


def test_built_network_uses_cirtorch_parameter_names() -> None:
    net = build_network(NetworkConfig(backbone="efficientnet_lite0", whitening_dim=16))
    keys = set(net.state_dict())
    assert {"pool.p", "whiten.weight", "whiten.bias"} <= keys
    assert all(k.startswith(("features.", "pool.", "whiten.")) for k in keys)
    assert net.pool.p.item() == 3.0 and net.output_dim == 16  # type: ignore[union-attr, operator]


def test_torch_embedder_satisfies_the_embedder_protocol() -> None:
    config = NetworkConfig(backbone="efficientnet_lite0", preprocessing=Preprocessing(max_side=48))
    model = RetrievalModel(build_network(config, pretrained=True), config)  # random init pools to ~0
    embedder = TorchEmbedder(model)
    assert isinstance(embedder, Embedder) and embedder.output_dim == 1280
    rng = np.random.default_rng(1)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(60, 80), (50, 40)]
    ]
    out = embedder.embed(images)
    assert out.shape == (2, 1280) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    model.net.eval()
    with torch.no_grad():
        second = model.net(torch.from_numpy(prepare(images[1], config.preprocessing))[None])
    np.testing.assert_allclose(out[1], second[0].numpy(), atol=1e-6)
    assert float(out[0] @ out[1]) < 0.999  # two different images, two different rows
