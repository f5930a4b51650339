"""``gemsearch evaluate``: tiny Oxford-style datasets built here, scored against an independent oracle."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage.data
from click.testing import CliRunner
from PIL import Image, ImageOps

from gemsearch.cli import main
from gemsearch.errors import EvaluationError
from gemsearch.metrics import RetrievalScore, RevisitedScore, compute_map, compute_map_revisited
from gemsearch.preprocess import prepare_file
from gemsearch.trainer.evaluation.benchmarks import (
    EvalDataset,
    describe_dataset,
    evaluate_dataset,
    load_dataset,
)
from gemsearch.trainer.models.embedder import TorchEmbedder
from gemsearch.trainer.models.extraction import extract_descriptors
from gemsearch.trainer.models.loading import load_model
from gemsearch.trainer.models.model import RetrievalModel

MODEL = "efficientnet_lite0-gem"
MAX_SIDE = 96
PHOTOS = ("astronaut", "chelsea", "coffee")
# query i: photo i, boxed around its middle; its copies are database images 3i..3i+2
BOXES = [(20.0, 10.0, 110.0, 90.0), (30.0, 15.0, 120.0, 80.0), (10.0, 20.0, 100.0, 85.0)]


def _copies(photo: Image.Image) -> list[Image.Image]:
    w, h = photo.size
    return [photo, ImageOps.mirror(photo), photo.crop((w // 8, h // 8, w, h))]


def _write_images(jpg: Path) -> tuple[list[str], list[str]]:
    jpg.mkdir(parents=True)
    imlist, qimlist = [], []
    for name in PHOTOS:
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        photo.thumbnail((128, 128))
        photo.save(jpg / f"q_{name}.jpg")
        qimlist.append(f"q_{name}")
        for j, copy in enumerate(_copies(photo)):
            copy.save(jpg / f"{name}_{j}.jpg")
            imlist.append(f"{name}_{j}")
    return imlist, qimlist


def _classic_gnd() -> list[dict[str, Any]]:
    # the cropped copy is junk for the first query (junk removal); each query also lists another
    # photo's image as positive, so scores fall below 1 and depend on the exact ranking
    gnd = [
        {"ok": [3 * i, 3 * i + 1, 3 * i + 2, (3 * i + 4) % 9], "junk": [], "bbx": BOXES[i]} for i in range(3)
    ]
    gnd[0] = {"ok": [0, 1, 4], "junk": [2], "bbx": BOXES[0]}
    return gnd


def _revisited_gnd() -> list[dict[str, Any]]:
    return [
        {
            "easy": np.array([3 * i]),
            "hard": np.array([3 * i + 1, (3 * i + 4) % 9]),
            "junk": np.array([3 * i + 2]),
            "bbx": BOXES[i],
        }
        for i in range(3)
    ]


def _make_dataset(root: Path, name: str, gnd: list[dict[str, Any]]) -> Path:
    imlist, qimlist = _write_images(root / name / "jpg")
    with (root / name / f"gnd_{name}.pkl").open("wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return root / name


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    return {
        "classic": _make_dataset(root, "oxford5k", _classic_gnd()),
        "revisited": _make_dataset(root, "roxford5k", _revisited_gnd()),
    }


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    return load_model(MODEL)


@pytest.fixture(scope="module")
def embedder(model: RetrievalModel) -> TorchEmbedder:
    return TorchEmbedder(model, max_side=MAX_SIDE)


def _oracle(model: RetrievalModel, dataset: EvalDataset) -> tuple[np.ndarray, np.ndarray]:
    cfg = model.config.preprocessing.model_copy(update={"max_side": MAX_SIDE})
    queries = [prepare_file(p, cfg, box) for p, box in zip(dataset.queries, dataset.boxes, strict=True)]
    database = [prepare_file(p, cfg) for p in dataset.database]
    return extract_descriptors(model.net, queries), extract_descriptors(model.net, database)


def test_loads_the_layout(roots: dict[str, Path]) -> None:
    classic, revisited = load_dataset(roots["classic"]), load_dataset(roots["revisited"])
    assert (classic.name, classic.revisited, revisited.name, revisited.revisited) == (
        "oxford5k", False, "roxford5k", True,
    )  # fmt: skip
    assert len(classic.database) == 9 and len(classic.queries) == 3
    assert classic.database[4] == roots["classic"] / "jpg" / "chelsea_1.jpg"
    assert revisited.boxes == tuple(BOXES) and revisited.short_name == "ROxf"


@pytest.mark.parametrize("kind", ["classic", "revisited"])
def test_scores_equal_an_oracle(
    roots: dict[str, Path], model: RetrievalModel, embedder: TorchEmbedder, kind: str
) -> None:
    dataset = load_dataset(roots[kind])
    result = evaluate_dataset(embedder, dataset)
    q, db = _oracle(model, dataset)
    ranks = np.argsort(-(q @ db.T), axis=1, kind="stable")
    assert (result.n_queries, result.n_database) == (3, 9)
    if kind == "classic":
        assert result.protocol == "standard" and isinstance(result.score, RetrievalScore)
        expected: RetrievalScore | RevisitedScore = compute_map(ranks, _classic_gnd())
    else:
        assert result.protocol == "revisited" and isinstance(result.score, RevisitedScore)
        expected = compute_map_revisited(ranks, _revisited_gnd())
    got, want = _flat(result.score), _flat(expected)
    assert got.keys() == want.keys() and got == pytest.approx(want, abs=1e-6)
    assert min(got.values()) < 0.99  # not a trivially perfect score


def _flat(score: RetrievalScore | RevisitedScore) -> dict[str, float]:
    parts = (
        [("", score)]
        if isinstance(score, RetrievalScore)
        else [(p, score[p]) for p in ("easy", "medium", "hard")]
    )
    out = {}
    for name, s in parts:
        out[f"{name}mAP"] = s.mean_ap
        out.update({f"{name}mP@{k}": v for k, v in s.mp_at.items()})
    return out


def test_queries_use_their_box(
    roots: dict[str, Path], model: RetrievalModel, embedder: TorchEmbedder
) -> None:
    dataset = load_dataset(roots["classic"])
    q, db = describe_dataset(embedder, dataset)
    oracle_q, oracle_db = _oracle(model, dataset)
    np.testing.assert_allclose(q, oracle_q, atol=1e-5)
    np.testing.assert_allclose(db, oracle_db, atol=1e-5)
    moved = dataset.model_copy(update={"boxes": ((0.0, 0.0, 60.0, 60.0), *dataset.boxes[1:])})
    q2, _ = describe_dataset(embedder, moved)
    assert not np.allclose(q2[0], q[0], atol=1e-3)  # another box, another descriptor
    np.testing.assert_allclose(q2[1:], q[1:], atol=1e-6)
    unboxed = dataset.model_copy(update={"boxes": (None, None, None)})
    assert not np.allclose(describe_dataset(embedder, unboxed)[0], q, atol=1e-3)


def test_cli_prints_the_table_and_writes_json(roots: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    args = [
        "evaluate",
        "--model",
        MODEL,
        "--dataset",
        str(roots["classic"]),
        "--dataset",
        str(roots["revisited"]),
    ]
    result = CliRunner().invoke(main, [*args, "--max-side", str(MAX_SIDE), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "Oxford5k: mAP " in result.stdout and "ROxf: mAP E " in result.stdout
    assert "ROxf: mP@1,5,10 E " in result.stdout
    assert "| Oxford5k | ROxf E | ROxf M | ROxf H |" in result.stdout
    report = json.loads(out.read_text())
    assert report["model"] == f"off-the-shelf {MODEL}" and report["max_side"] == MAX_SIDE
    assert report["scales"] == [1.0] and report["whiten"] is False
    classic, revisited = report["results"]
    assert (classic["dataset"], classic["protocol"]) == ("oxford5k", "standard")
    assert set(revisited["score"]) == {"easy", "medium", "hard"}
    assert 0 <= classic["score"]["mean_ap"] <= 1 and len(classic["score"]["ap"]) == 3
    assert set(revisited["score"]["hard"]["mp_at"]) == {"1", "5", "10"}


def test_missing_gnd_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "jpg").mkdir()
    with pytest.raises(EvaluationError, match=r"no gnd_<name>\.pkl"):
        load_dataset(tmp_path)
    result = CliRunner().invoke(main, ["evaluate", "--model", MODEL, "--dataset", str(tmp_path)])
    assert result.exit_code != 0 and "no gnd_<name>.pkl" in result.output


def test_missing_image_is_a_clear_error(roots: dict[str, Path], tmp_path: Path) -> None:
    broken = shutil.copytree(roots["classic"], tmp_path / "oxford5k")
    (broken / "jpg" / "chelsea_2.jpg").unlink()
    with pytest.raises(EvaluationError, match=r"1 image\(s\) missing, e.g. .*chelsea_2.jpg"):
        load_dataset(broken)
