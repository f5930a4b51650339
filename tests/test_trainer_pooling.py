"""Pooling layers against their formulas, computed independently in numpy (float64)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gemsearch.trainer.models.network import RetrievalNet
from gemsearch.trainer.models.pooling import GeM, create_pooling, gem, l2n, mac, rmac, spoc
from gemsearch.trainer.models.rmac_regions import rmac_regions


def _features(
    n: int = 2, d: int = 5, h: int = 4, w: int = 3, seed: int = 0, positive: bool = False
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d, h, w))
    return np.abs(x) + 0.05 if positive else x


def _gem_by_hand(x: np.ndarray, p: float, eps: float = 1e-6) -> np.ndarray:
    out = np.empty(x.shape[:2])
    for i in range(x.shape[0]):
        for k in range(x.shape[1]):
            values = [max(v, eps) ** p for v in x[i, k].ravel()]
            out[i, k] = (sum(values) / len(values)) ** (1 / p)
    return out


@pytest.mark.parametrize("p", [3.0, 1.5, 6.0])
def test_gem_matches_the_formula(p: float) -> None:
    x = _features()  # with negative values: the clamp at eps matters
    out = gem(torch.from_numpy(x).float(), p)
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out.numpy(), _gem_by_hand(x, p), rtol=1e-5)


def test_gem_module_has_a_learnable_p_initialised_at_3() -> None:
    pool = GeM()
    assert pool.p.shape == (1,) and pool.p.item() == 3.0 and pool.p.requires_grad
    x = torch.from_numpy(_features(positive=True)).float()
    np.testing.assert_allclose(pool(x).detach().numpy(), _gem_by_hand(x.double().numpy(), 3.0), rtol=1e-5)
    pool(x).sum().backward()
    assert pool.p.grad is not None and torch.isfinite(pool.p.grad).all() and pool.p.grad.abs().item() > 0


def test_gem_with_p_1_is_spoc_and_spoc_is_the_mean() -> None:
    x = torch.from_numpy(_features(positive=True))
    np.testing.assert_allclose(gem(x, 1.0).numpy(), spoc(x).numpy(), rtol=1e-12)
    np.testing.assert_allclose(spoc(x).numpy(), x.numpy().mean(axis=(2, 3)), rtol=1e-12)


def test_gem_tends_to_mac_as_p_grows() -> None:
    x = torch.from_numpy(_features(positive=True, h=5, w=5))
    target = x.numpy().max(axis=(2, 3))
    np.testing.assert_array_equal(mac(x).numpy(), target)
    errors = [np.abs(gem(x, p).numpy() - target).max() for p in (2.0, 10.0, 50.0, 500.0)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.01 * target.max()


def test_pooling_works_for_any_feature_map_size() -> None:
    pool = GeM()
    for h, w in [(1, 1), (3, 7), (8, 2)]:
        x = torch.from_numpy(_features(h=h, w=w, positive=True)).float()
        np.testing.assert_allclose(pool(x).detach().numpy(), _gem_by_hand(x.double().numpy(), 3.0), rtol=1e-5)


def test_l2n_normalises_rows_with_eps() -> None:
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    np.testing.assert_allclose(l2n(x).numpy(), [[3 / (5 + 1e-6), 4 / (5 + 1e-6)], [0, 0]], rtol=1e-12)


# R-MAC regions worked out by hand from the rule: level l has side floor(2 min(h, w) / (l + 1)) and
# l (+ extra along the long axis) regions spread evenly; starts are floor(c + i * step) - c with
# c = floor(side / 2 - 1), step = (length - side) / (count - 1).
SQUARE_6x6 = (
    [(0, 0, 6)]
    + [(t, left, 4) for t in (0, 2) for left in (0, 2)]
    + [(t, left, 3) for t in (0, 1, 3) for left in (0, 1, 3)]
)
# 5x9: the overlap criterion |1 - b/5 - 0.4| for b = 4/(steps - 1) ties exactly between 2 and 3
# regions (0.2 and 0.2); in cirtorch's float32 arithmetic the first wins -> 1 extra region along w.
WIDE_5x9 = (
    [(0, 0, 5), (0, 4, 5)]
    + [(t, left, 3) for t in (0, 2) for left in (0, 3, 6)]
    + [(t, left, 2) for t in (0, 1, 3) for left in (0, 2, 4, 7)]
)


def test_rmac_regions_square() -> None:
    assert list(rmac_regions(6, 6)) == SQUARE_6x6


def test_rmac_regions_wide_with_the_float32_tie() -> None:
    assert list(rmac_regions(5, 9)) == WIDE_5x9


def test_rmac_regions_tall_is_the_transpose_of_wide() -> None:
    tall = sorted((left, top, size) for top, left, size in rmac_regions(9, 5))
    assert tall == sorted(WIDE_5x9)


def _rmac_by_hand(x: np.ndarray, regions: list[tuple[int, int, int]], eps: float = 1e-6) -> np.ndarray:
    def normalised_max(block: np.ndarray) -> np.ndarray:
        v = block.max(axis=(2, 3))
        return v / (np.linalg.norm(v, axis=1, keepdims=True) + eps)

    out = normalised_max(x)
    for top, left, size in regions:
        out = out + normalised_max(x[:, :, top : top + size, left : left + size])
    return out


@pytest.mark.parametrize(("h", "w", "regions"), [(6, 6, SQUARE_6x6), (5, 9, WIDE_5x9)])
def test_rmac_sums_normalised_region_maxima(h: int, w: int, regions: list[tuple[int, int, int]]) -> None:
    x = _features(h=h, w=w, seed=4)
    out = rmac(torch.from_numpy(x))
    np.testing.assert_allclose(out.numpy(), _rmac_by_hand(x, regions), rtol=1e-10)
    np.testing.assert_allclose(create_pooling("rmac")(torch.from_numpy(x)).numpy(), out.numpy())


def test_create_pooling_knows_the_four_poolings() -> None:
    assert isinstance(create_pooling("gem", p=4.0), GeM)
    assert create_pooling("gem", p=4.0).p.item() == 4.0  # type: ignore[union-attr, operator]
    x = torch.from_numpy(_features(positive=True))
    np.testing.assert_array_equal(create_pooling("mac")(x).numpy(), x.numpy().max(axis=(2, 3)))
    np.testing.assert_allclose(create_pooling("spoc")(x).numpy(), x.numpy().mean(axis=(2, 3)))
    with pytest.raises(ValueError, match="unknown pooling"):
        create_pooling("max")  # type: ignore[arg-type]


def test_gem_network_exports_to_onnx_with_dynamic_height_and_width(tmp_path: Path) -> None:
    """A pooling kernel sized from the traced input would be frozen into the graph; a mean is not."""
    import onnx  # noqa: F401  # torch.onnx.export needs it; the test environment has it
    import onnxruntime as ort

    torch.manual_seed(0)
    features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU())
    net = RetrievalNet(features, GeM(2.5), torch.nn.Linear(8, 4), feature_dim=8).eval()
    path = tmp_path / "gem.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(
            net, (torch.randn(1, 3, 32, 24),), str(path), input_names=["x"], dynamo=False,
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
        )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 32, 24), (2, 3, 45, 71), (1, 3, 9, 13)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = net(x).numpy()
        np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], expected, atol=1e-5)
