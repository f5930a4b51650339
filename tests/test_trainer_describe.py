"""``gemsearch describe`` through the real CLI group: rows in input order, .npy output, crops, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gemsearch.cli import main
from gemsearch.preprocess import Preprocessing
from gemsearch.trainer.models.checkpoint import save_checkpoint
from gemsearch.trainer.models.embedder import TorchEmbedder
from gemsearch.trainer.models.extraction import MULTISCALE
from gemsearch.trainer.models.loading import load_model
from gemsearch.trainer.models.model import RetrievalModel
from gemsearch.trainer.models.network import NetworkConfig, build_network

SIZES = [(70, 50), (40, 64), (70, 50)]  # two of the same size: batched together


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("describe")
    config = NetworkConfig(backbone="efficientnet_lite0", preprocessing=Preprocessing(max_side=64))
    torch.manual_seed(0)
    ckpt = save_checkpoint(RetrievalModel(build_network(config, pretrained=True), config), root / "net.pt")
    rng = np.random.default_rng(7)
    images = []
    for i, (w, h) in enumerate(SIZES):
        path = root / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        images.append(path)
    return ckpt, images


def _rows(stdout: str) -> tuple[list[str], np.ndarray]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    return [line["image"] for line in lines], np.array(
        [line["descriptor"] for line in lines], dtype=np.float32
    )


def test_prints_one_row_per_image_in_input_order(files: tuple[Path, list[Path]]) -> None:
    ckpt, images = files
    order = [images[2], images[1], images[0]]
    result = CliRunner().invoke(main, ["describe", *map(str, order), "--model", str(ckpt)])
    assert result.exit_code == 0, result.output
    names, vecs = _rows(result.stdout)
    assert names == [str(p) for p in order]
    assert vecs.shape == (3, 1280)
    expected = TorchEmbedder(load_model(ckpt)).embed(order)
    np.testing.assert_allclose(vecs, expected, atol=1e-6)
    assert "3 x 1280 descriptors" in result.stderr


def test_saves_npy_with_scales_max_side_and_crop(files: tuple[Path, list[Path]], tmp_path: Path) -> None:
    ckpt, images = files
    out = tmp_path / "vecs.bin"
    args = ["describe", *map(str, images), "--model", str(ckpt), "--out", str(out)]
    args += ["--scales", "ms", "--max-side", "48", "--crop", "5,6,30,20"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    saved = np.load(out)
    assert saved.shape == (3, 1280) and saved.dtype == np.float32
    embedder = TorchEmbedder(load_model(ckpt), scales=MULTISCALE, max_side=48)
    expected = embedder.embed(images, boxes=[(5, 6, 35, 26)] * 3)
    np.testing.assert_allclose(saved, expected, atol=1e-6)
    uncropped = TorchEmbedder(load_model(ckpt), scales=MULTISCALE, max_side=48).embed(images)
    assert np.abs(saved - uncropped).max() > 1e-3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--crop", "1,2,3"], "x,y,w,h"),
        (["--crop", "1,2,0,3"], "positive"),
        (["--scales", "1,zero"], "comma-separated"),
        (["--scales", "1,-0.5"], "positive"),
    ],
)
def test_bad_options_are_usage_errors(files: tuple[Path, list[Path]], extra: list[str], message: str) -> None:
    ckpt, images = files
    result = CliRunner().invoke(main, ["describe", str(images[0]), "--model", str(ckpt), *extra])
    assert result.exit_code == 2 and message in result.output


def test_library_errors_become_readable_messages(files: tuple[Path, list[Path]], tmp_path: Path) -> None:
    ckpt, images = files
    missing = CliRunner().invoke(main, ["describe", str(tmp_path / "nope.png"), "--model", str(ckpt)])
    assert missing.exit_code == 1 and "nope.png: no such file" in missing.output
    bad_model = CliRunner().invoke(main, ["describe", str(images[0]), "--model", "no-such-model"])
    assert bad_model.exit_code == 1 and "BACKBONE-POOLING" in bad_model.output
    outside = CliRunner().invoke(
        main, ["describe", str(images[0]), "--model", str(ckpt), "--crop", "500,0,5,5"]
    )
    assert outside.exit_code == 1 and "outside" in outside.output
    assert "Traceback" not in missing.output + bad_model.output + outside.output


def test_help_text() -> None:
    result = CliRunner().invoke(main, ["describe", "--help"])
    assert result.exit_code == 0 and "--crop" in result.output and "input order" in result.output


def test_without_torch_the_command_says_which_extra_to_install(files: tuple[Path, list[Path]]) -> None:
    ckpt, images = files
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
from click.testing import CliRunner
from gemsearch.cli import main
result = CliRunner().invoke(main, ["describe", {str(images[0])!r}, "--model", {str(ckpt)!r}])
print(result.exit_code, result.output)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("1 "), out.stdout + out.stderr
    assert "pip install 'gemsearch[train]'" in out.stdout
