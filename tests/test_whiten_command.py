"""gemsearch whiten end to end: checkpoint in, checkpoint out with whitening that changes descriptors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gemsearch.cli import main
from gemsearch.errors import ConfigError
from gemsearch.samples import build_multiview_set
from gemsearch.trainer.checkpoint import load_checkpoint, save_checkpoint
from gemsearch.trainer.embedder import TorchEmbedder
from gemsearch.trainer.extraction import MULTISCALE
from gemsearch.trainer.learned_whitening import learn_whitening
from gemsearch.trainer.loading import load_model
from gemsearch.trainer.train_config import DataSource
from gemsearch.trainer.train_data import load_source
from gemsearch.trainer.whitening_fit import fit_whitening

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
