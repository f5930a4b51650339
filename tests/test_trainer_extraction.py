"""Extraction against hand computations: rescaling, the multi-scale power mean, same-size batching."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gemsearch.errors import ConfigError
from gemsearch.trainer.models.extraction import (
    MULTISCALE,
    extract_descriptors,
    power_mean,
    rescale,
    same_size_batches,
)
from gemsearch.trainer.models.network import RetrievalNet
from gemsearch.trainer.models.pooling import GeM


def _net(p: float = 3.0, whiten: bool = False) -> RetrievalNet:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU()
    )
    net = RetrievalNet(features, GeM(p), nn.Linear(8, 8) if whiten else None, feature_dim=8)
    return net.eval()


def _images(*sizes: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, h, w)).astype(np.float32) for h, w in sizes]


def test_rescale_by_half_is_the_mean_of_2x2_blocks_without_antialiasing() -> None:
    x = torch.from_numpy(_images((6, 8))[0])[None]
    out = rescale(x, 0.5)
    blocks = x.numpy().reshape(1, 3, 3, 2, 4, 2).mean(axis=(3, 5))
    np.testing.assert_allclose(out.numpy(), blocks, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("h", "w"), [(37, 50), (64, 45), (11, 11)])
def test_rescaled_sizes_are_floored(h: int, w: int) -> None:
    x = torch.zeros(1, 3, h, w)
    for s in MULTISCALE:
        assert rescale(x, s).shape[-2:] == (math.floor(h * s), math.floor(w * s))
    assert rescale(x, 1.0) is x


def test_single_scale_is_the_network_output() -> None:
    net, images = _net(), _images((20, 24), (17, 31))
    out = extract_descriptors(net, images)
    with torch.no_grad():
        for i, im in enumerate(images):
            np.testing.assert_allclose(out[i], net(torch.from_numpy(im)[None])[0].numpy(), atol=1e-6)


def _power_mean_by_hand(
    net: RetrievalNet, image: np.ndarray, scales: tuple[float, ...], p: float
) -> np.ndarray:
    x = torch.from_numpy(image)[None]
    with torch.no_grad():
        per_scale = [
            net(x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False))[0]
            .double()
            .numpy()
            for s in scales
        ]
    v = np.mean([d**p for d in per_scale], axis=0) ** (1 / p)
    return v / np.linalg.norm(v)


def test_multiscale_is_the_power_mean_with_the_learned_gem_p() -> None:
    net = _net()
    with torch.no_grad():
        net.pool.p.fill_(2.2)  # type: ignore[union-attr, operator]
    images = _images((40, 52), (33, 29))
    out = extract_descriptors(net, images, scales=MULTISCALE)
    for i, im in enumerate(images):
        np.testing.assert_allclose(out[i], _power_mean_by_hand(net, im, MULTISCALE, 2.2), atol=1e-6)
    plain_mean = extract_descriptors(net, images, scales=MULTISCALE, msp=1.0)
    np.testing.assert_allclose(plain_mean[0], _power_mean_by_hand(net, images[0], MULTISCALE, 1.0), atol=1e-6)
    assert np.abs(plain_mean - out).max() > 1e-4  # msp matters


def test_multiscale_power_is_1_with_whitening() -> None:
    net = _net(whiten=True)
    images = _images((40, 52))
    out = extract_descriptors(net, images, scales=MULTISCALE)
    np.testing.assert_allclose(out[0], _power_mean_by_hand(net, images[0], MULTISCALE, 1.0), atol=1e-6)


def test_power_mean_formula() -> None:
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    v = np.array([((1 + 0.6**3) / 2) ** (1 / 3), (0.8**3 / 2) ** (1 / 3)])
    np.testing.assert_allclose(power_mean([a, b], 3.0).numpy()[0], v / np.linalg.norm(v), rtol=1e-12)


def test_batches_hold_one_size_each_in_order_of_first_appearance() -> None:
    sizes = [(3, 20, 16), (3, 24, 16), (3, 20, 16), (3, 24, 16), (3, 20, 16)]
    assert same_size_batches(sizes, 2) == [[0, 2], [4], [1, 3]]
    assert same_size_batches(sizes, 8) == [[0, 2, 4], [1, 3]]


def test_batched_extraction_equals_one_by_one_in_input_order() -> None:
    net = _net()
    images = _images((20, 16), (24, 16), (20, 16), (24, 16), (20, 16), seed=5)
    seen: list[tuple[int, ...]] = []
    net.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    batched = extract_descriptors(net, images, batch_size=3, scales=MULTISCALE)
    # batches [0, 2, 4] and [1, 3], each seen at three scales: real batches, one size each, no padding
    assert [shape[0] for shape in seen] == [3, 3, 3, 2, 2, 2]
    for i, im in enumerate(images):
        alone = extract_descriptors(net, [im], scales=MULTISCALE)[0]
        np.testing.assert_allclose(batched[i], alone, atol=1e-6)


def test_extraction_restores_the_training_mode_and_checks_its_arguments() -> None:
    net = _net().train()
    extract_descriptors(net, _images((12, 12)))
    assert net.training
    with pytest.raises(ConfigError):
        extract_descriptors(net, _images((12, 12)), scales=[1.0, -0.5])
    with pytest.raises(ConfigError):
        extract_descriptors(net, _images((12, 12)), batch_size=0)
    with pytest.raises(ConfigError, match="too small"):
        extract_descriptors(net, _images((3, 12)), scales=[1.0, 0.25])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            extract_descriptors(net, _images((12, 12)), device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_extraction_matches_cpu() -> None:
    images = _images((40, 52), (40, 52), (33, 29))
    cpu = extract_descriptors(_net(), images, scales=MULTISCALE)
    gpu = extract_descriptors(_net(), images, scales=MULTISCALE, device="cuda")
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
