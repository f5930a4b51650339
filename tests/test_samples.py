"""Multi-view sample sets: reproducible, split by object, ground truth that metrics can score, cached."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skimage  # noqa: F401  # the sample photos are scikit-image's: a missing package must fail
from PIL import Image

from gemsearch import samples
from gemsearch._sample_photos import load_photos
from gemsearch._views import random_view
from gemsearch.errors import ConfigError, MissingDependencyError
from gemsearch.metrics import compute_map
from gemsearch.samples import SampleSet, build_multiview_set

SMALL: dict[str, Any] = {"views_per_image": 4, "max_side": 128, "seed": 0, "holdout": 3}


def _build(root: Path, **overrides: Any) -> SampleSet:
    return build_multiview_set(root, **{**SMALL, **overrides})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> SampleSet:
    return _build(tmp_path_factory.mktemp("set") / "a")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_views(built: SampleSet, tmp_path: Path) -> None:
    again = _build(tmp_path / "b")
    assert _files(again.root) == _files(built.root)  # manifest.json included
    other = _build(tmp_path / "c", seed=1)
    assert {im.sha256 for im in other.images}.isdisjoint(im.sha256 for im in built.images)


def test_views_differ_from_their_source_and_from_each_other(built: SampleSet) -> None:
    photos = {p.source: p.image for p in load_photos(built.params.clusters, built.params.max_side)}
    for i, image in enumerate(built.images):
        with Image.open(built.path(i)) as f:
            view = np.asarray(f.convert("RGB"), dtype=np.float64)
        assert view.shape == (image.height, image.width, 3)
        source = photos[image.source].resize((image.width, image.height), Image.Resampling.BILINEAR)
        assert np.abs(view - np.asarray(source, dtype=np.float64)).mean() > 2, image.transform
    assert len({im.sha256 for im in built.images}) == len(built.images)
    described = " ".join(im.transform for im in built.images)
    for op in ("crop", "rotate", "scale", "colour", "jpeg"):
        assert op in described


@pytest.mark.parametrize("size", [(128, 96), (40, 200), (33, 33)])
def test_views_have_no_black_borders(size: tuple[int, int]) -> None:
    # rotations are cropped to the inner rectangle and warps sample inside the photo, so a white
    # photo stays light everywhere: at worst brightness 0.75 (191) plus JPEG noise
    white = Image.new("RGB", size, (255, 255, 255))
    for i in range(40):
        view = random_view(white, np.random.default_rng([*size, i]))
        with Image.open(io.BytesIO(view.encode())) as f:
            assert np.asarray(f.convert("RGB")).min() > 150, view.description
        assert max(view.image.size) <= max(size)  # never enlarged


def test_split_holds_out_whole_clusters(built: SampleSet) -> None:
    train = {built.images[i].cluster for i in built.split("train")}
    test = {built.images[i].cluster for i in built.split("test")}
    assert train.isdisjoint(test) and len(test) == 3 and train | test == set(range(len(built.clusters)))
    assert {built.clusters[c] for c in test} == set(built.params.test_clusters)
    # <root>/train is a folder-per-object training set of the train clusters only
    assert {p.name for p in (built.root / "train").iterdir()} == {built.clusters[c] for c in train}


def test_stereo_pair_is_one_cluster(built: SampleSet) -> None:
    moto = built.clusters.index("motorcycle")
    assert {im.source for im in built.images if im.cluster == moto} == {"motorcycle_left", "motorcycle_right"}


def test_ground_truth_is_the_other_views_of_the_query_cluster(built: SampleSet) -> None:
    images, db = built.images, built.database
    assert len(built.queries) == len(built.ground_truth) == 3
    assert sorted(built.queries + db) == built.split("test") and set(built.queries).isdisjoint(db)
    for q, gnd in zip(built.queries, built.ground_truth, strict=True):
        same = [j for j, d in enumerate(db) if images[d].cluster == images[q].cluster]
        assert list(gnd.ok) == same and len(same) == SMALL["views_per_image"] - 1 and gnd.junk == ()
    # a ranking that puts each query's cluster first scores mAP 1 with metrics.compute_map
    clusters = np.array([images[d].cluster for d in db])
    rankings = [np.argsort(clusters != images[q].cluster, kind="stable") for q in built.queries]
    assert compute_map(rankings, list(built.ground_truth)).mean_ap == 1.0
    assert [p.parent.name for p in built.query_paths()] == [
        built.clusters[images[q].cluster] for q in built.queries
    ]


def test_existing_set_is_reused_and_changes_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params: dict[str, Any] = {"sources": ["chelsea", "coffee"], "holdout": ["coffee"]}
    first = _build(tmp_path, **params)
    loaded = SampleSet.load(tmp_path)
    assert loaded == first and loaded.root == tmp_path
    with monkeypatch.context() as m:  # a cache hit makes no view at all
        m.setattr(samples, "random_view", lambda *a: pytest.fail("rebuilt a cached set"))
        assert _build(tmp_path, **params) == first
    fewer = _build(tmp_path, **params, views_per_image=3)
    assert len(fewer.images) == 6 and not list(tmp_path.rglob("003.*"))  # the old 4th views are gone
    victim = fewer.path(0)
    victim.write_bytes(b"changed")
    rebuilt = _build(tmp_path, **params, views_per_image=3)
    assert rebuilt == fewer and victim.read_bytes() != b"changed"


def test_refuses_a_folder_that_is_not_a_sample_set(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        _build(tmp_path)
    with pytest.raises(ConfigError, match="no readable sample set"):
        SampleSet.load(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_extra_photos_become_clusters(tmp_path: Path) -> None:
    photo = tmp_path / "photos" / "stripes.png"
    photo.parent.mkdir()
    stripes = (np.indices((90, 120)).sum(axis=0) % 16 < 8)[..., None] * np.array([200, 60, 20], np.uint8)
    Image.fromarray(stripes.astype(np.uint8)).save(photo)
    s = _build(tmp_path / "set", sources=["rocket"], holdout=0, extra_photos=[photo])
    assert s.clusters == ("rocket", "stripes") and s.params.extra_sha256["stripes"]
    assert s.queries == () and len(s.split("train")) == 8
    clash = tmp_path / "rocket.png"
    clash.write_bytes(photo.read_bytes())
    with pytest.raises(ConfigError, match="already exists"):
        _build(tmp_path / "set2", sources=["rocket"], extra_photos=[clash])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"holdout": 99}, "holdout must be"),
        ({"holdout": ["atlantis"]}, "not among the sources"),
        ({"sources": ["camera"]}, "unknown or unavailable"),
        ({"views_per_image": 1}, "views_per_image"),
    ],
)
def test_bad_parameters_are_config_errors(tmp_path: Path, overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _build(tmp_path, **overrides)


def test_missing_scikit_image_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage.data", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=r"gemsearch\[samples\]"):
        _build(tmp_path)
