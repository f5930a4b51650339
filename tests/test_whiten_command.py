"""gemsearch whiten end to end: checkpoint in, checkpoint out with whitening that changes descriptors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gemsearch.cli import main
from gemsearch.errors import ConfigError
from gemsearch.samples import build_multiview_set
from gemsearch.trainer.models.checkpoint import load_checkpoint, save_checkpoint
from gemsearch.trainer.models.embedder import TorchEmbedder
from gemsearch.trainer.models.extraction import MULTISCALE
from gemsearch.trainer.models.loading import load_model
from gemsearch.trainer.models.whitening import learn_whitening
from gemsearch.trainer.training import whitening_fit
from gemsearch.trainer.training.config import DataSource
from gemsearch.trainer.training.data import TrainingSet, load_source
from gemsearch.trainer.training.whitening_fit import fit_whitening

pytestmark = pytest.mark.slow
SIDE = 64


@pytest.fixture(scope="session")
def train_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("whiten-multiview")
    build_multiview_set(root, views_per_image=4, holdout=0, max_side=96)
    return root / "train"


@pytest.fixture(scope="session")
def lite0_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_checkpoint(load_model("efficientnet_lite0-gem"), tmp_path_factory.mktemp("ckpt") / "lite0.pt")


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, ["whiten", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_learned_whitening_is_stored_and_applied(
    train_folder: Path, lite0_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "lw.pt"
    text = _run("--model", str(lite0_checkpoint), "--data", str(train_folder), "--max-side", str(SIDE),
                "--dims", "16", "--out", str(out))  # fmt: skip
    assert "'ss'" in text and "1280 -> 16" in text
    model = load_checkpoint(out)
    assert set(model.whitening) == {"ss"}
    w = model.whitening["ss"]
    assert (w.kind, w.output_dim, w.learned_from) == ("learned", 16, str(train_folder))
    # the network itself is unchanged; descriptors are the raw ones, whitened and L2-normalised
    before = load_checkpoint(lite0_checkpoint)
    images = sorted(train_folder.rglob("*.*"))[:6]
    raw = TorchEmbedder(before, max_side=SIDE).embed(images)
    whitened = TorchEmbedder(model, max_side=SIDE).embed(images)
    assert raw.shape == (6, 1280) and whitened.shape == (6, 16)
    np.testing.assert_allclose(whitened, w.apply(raw), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(whitened, axis=1), 1.0, atol=1e-5)
    # the same as learning it through the Python API
    data = load_source(DataSource(path=train_folder))
    direct = fit_whitening(before, data, dims=16, max_side=SIDE)
    np.testing.assert_allclose(direct.P, w.P, rtol=1e-6, atol=1e-8)


def test_pca_whitening_for_multiscale_goes_under_ms(train_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "pca.pt"
    _run("--model", "efficientnet_lite0-gem", "--data", str(train_folder), "--method", "pca",
         "--scales", "ms", "--max-side", str(SIDE), "--dims", "8", "--out", str(out))  # fmt: skip
    model = load_checkpoint(out)
    assert set(model.whitening) == {"ms"} and model.whitening["ms"].kind == "pca"
    images = sorted(train_folder.rglob("*.*"))[:3]
    assert TorchEmbedder(model, scales=MULTISCALE, max_side=SIDE).embed(images).shape == (3, 8)
    assert TorchEmbedder(model, max_side=SIDE).embed(images).shape == (3, 1280)  # single-scale: none


def test_learned_whitening_of_real_pairs_whitens_their_differences(train_folder: Path) -> None:
    """On a subspace small enough for the pairs to span it, whitened differences have unit covariance."""
    data = load_source(DataSource(path=train_folder))
    model = load_model("efficientnet_lite0-gem")
    vecs = TorchEmbedder(model, max_side=SIDE).embed(list(data.images))
    centred = vecs - vecs.mean(axis=0)
    reduced = centred @ np.linalg.svd(centred, full_matrices=False)[2][:12].T  # 12 dims, ~100 pairs
    w = learn_whitening(reduced, data.qidxs, data.pidxs)
    diff = (reduced[data.qidxs] - reduced[data.pidxs]) @ w.P.T
    np.testing.assert_allclose(diff.T @ diff / len(diff), np.eye(12), atol=1e-6)


def test_pca_needs_more_images_than_dimensions(train_folder: Path) -> None:
    data = load_source(DataSource(path=train_folder))
    with pytest.raises(ConfigError, match="pca whitening"):
        fit_whitening(load_model("efficientnet_lite0-gem"), data, method="pca", max_side=SIDE)


class _FixedDescriptors:
    """Stands in for TorchEmbedder in fit_whitening: the descriptors are given, not extracted."""

    vecs: np.ndarray = np.zeros((0, 0))

    def __init__(self, model: object, **_: object) -> None:
        pass

    def embed(self, images: list[Path]) -> np.ndarray:
        assert len(images) == len(self.vecs)
        return self.vecs


def _known_set(
    n_clusters: int, per_cluster: int, seed: int = 0
) -> tuple[TrainingSet, np.ndarray, np.ndarray]:
    """Descriptors in 8 dimensions with distinct variances along a random rotation ``q``, per cluster."""
    rng = np.random.default_rng(seed)
    n = n_clusters * per_cluster
    variances = rng.permutation(4.0 ** np.arange(4, -4, -1))
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    vecs = (rng.standard_normal((n, 8)) * np.sqrt(variances)) @ q.T
    clusters = [i // per_cluster for i in range(n)]
    qidxs = [i for i in range(n) if i % per_cluster == 0]
    data = TrainingSet(
        images=[Path(f"img{i}.jpg") for i in range(n)],
        clusters=clusters,
        qidxs=qidxs,
        pidxs=[i + 1 for i in qidxs],
    )
    return data, vecs.astype(np.float32), q[:, np.argsort(variances)[::-1]]


@pytest.fixture
def fixed_descriptors(monkeypatch: pytest.MonkeyPatch) -> type[_FixedDescriptors]:
    monkeypatch.setattr(whitening_fit, "TorchEmbedder", _FixedDescriptors)
    return _FixedDescriptors


@pytest.mark.parametrize("dims", [1, 3, 7])
def test_fit_pca_whitening_with_dims_keeps_the_top_variance_directions(
    fixed_descriptors: type[_FixedDescriptors], dims: int
) -> None:
    data, fixed_descriptors.vecs, q = _known_set(100, 2)
    w = fit_whitening(None, data, method="pca", dims=dims)  # type: ignore[arg-type]
    assert (w.kind, w.output_dim) == ("pca", dims)
    # the kept rows span the same subspace as the sample covariance's top eigenvectors
    cov = np.cov(fixed_descriptors.vecs.astype(np.float64).T, bias=True)
    top = np.linalg.eigh(cov)[1][:, ::-1][:, :dims]
    kept, _ = np.linalg.qr(w.P[:dims].T)
    np.testing.assert_allclose(np.linalg.svd(kept.T @ top, compute_uv=False), 1.0, atol=1e-6)
    assert np.abs(top.T @ q[:, :dims]).max(axis=1).min() > 0.9  # which are the generating ones here
    assert w.apply(fixed_descriptors.vecs[:5]).shape == (5, dims)


@pytest.mark.parametrize("dims", [1, 3, 8])
def test_fit_learned_whitening_with_dims_keeps_the_top_rows(
    fixed_descriptors: type[_FixedDescriptors], dims: int
) -> None:
    data, fixed_descriptors.vecs, _ = _known_set(100, 2)
    w = fit_whitening(None, data, dims=dims)  # type: ignore[arg-type]
    full = learn_whitening(fixed_descriptors.vecs, data.qidxs, data.pidxs)
    assert (w.kind, w.output_dim) == ("learned", dims)
    np.testing.assert_allclose(w.P, full.P, rtol=1e-9)
    y = (fixed_descriptors.vecs.astype(np.float64) - w.m) @ full.P.T
    spread = np.diag(y.T @ y)
    np.testing.assert_allclose(
        spread[:dims], np.sort(spread)[::-1][:dims], rtol=1e-9
    )  # the largest ones kept
    by_hand = y[:3, :dims] / (np.linalg.norm(y[:3, :dims], axis=1, keepdims=True) + 1e-6)  # as apply()
    np.testing.assert_allclose(w.apply(fixed_descriptors.vecs[:3]), by_hand, atol=1e-6)


def test_pca_with_fewer_images_than_dimensions_needs_dims_within_their_span(
    fixed_descriptors: type[_FixedDescriptors],
) -> None:
    """6 images span 5 dimensions of 8: PCA keeps up to 5 (the null directions dropped), no more."""
    data, fixed_descriptors.vecs, _ = _known_set(3, 2)
    centred = fixed_descriptors.vecs.astype(np.float64) - fixed_descriptors.vecs.mean(axis=0)
    span = np.linalg.svd(centred, full_matrices=False)[2][:5]  # the 5 directions with variance
    for dims in (1, 4, 5):
        w = fit_whitening(None, data, method="pca", dims=dims)  # type: ignore[arg-type]
        kept, _ = np.linalg.qr(w.P[:dims].T)
        np.testing.assert_allclose(np.linalg.svd(kept.T @ span[:dims].T, compute_uv=False), 1.0, atol=1e-6)
        assert np.all(np.isfinite(w.apply(fixed_descriptors.vecs)))
    for dims in (6, 8, None):
        with pytest.raises(ConfigError, match="singular"):
            fit_whitening(None, data, method="pca", dims=dims)  # type: ignore[arg-type]
