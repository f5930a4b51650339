"""Reproducible multi-view image sets from real photos, for tests and benchmarks.

Each source photo is one object (a "cluster"; the stereo pair motorcycle_left/right is one cluster
seen from two cameras). ``build_multiview_set`` writes ``views_per_image`` random views of each
(crops, rotations, perspective, scale, flips, colour, JPEG; see ``_views``) as
``<out_dir>/<split>/<cluster>/<view>.<jpg|png>``, so ``<out_dir>/train`` is a folder-per-object
training set, plus ``manifest.json``. Whole clusters are held out for testing: there, view 0 of each
cluster is its query and the other views form the database; ground truth is in the ``ok``/``junk``
form that ``gemsearch.metrics.compute_map`` takes.

Photos come from scikit-image (extra ``samples``), scikit-learn's two sample images when it is
installed, and any photo files the caller adds. Each view has its own generator, seeded by
(seed, cluster name, view number), so the same parameters give the same bytes with the same Pillow
and adding photos or views leaves the existing views unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import PIL
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from ._sample_photos import SourcePhoto, available_clusters, cluster_sources, load_photos
from ._views import random_view
from .errors import ConfigError
from .metrics import QueryGroundTruth

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_MARKER = ".gemsearch-samples"  # marks a folder as ours, so an interrupted build may be cleared
_SPLITS = ("train", "test")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SampleParams(_Frozen):
    """Everything that determines the set; a cached set is reused only when these are equal."""

    views_per_image: int = Field(ge=2)
    seed: int
    max_side: int = Field(gt=0)
    clusters: dict[str, tuple[str, ...]] = Field(description="cluster name -> source photos")
    extra_sha256: dict[str, str] = Field(default_factory=dict, description="added photo files")
    test_clusters: tuple[str, ...]
    generator: Literal[1] = 1  # bump when the view recipe changes


class SampleImage(_Frozen):
    path: str = Field(description="relative to the set's root, '/'-separated")
    cluster: int
    source: str = Field(description="the photo the view was made from")
    view: int
    split: Literal["train", "test"]
    transform: str
    width: int
    height: int
    sha256: str


class SampleSet(_Frozen):
    """A built set. Indices in ``queries``/``database`` point into ``images``; ``ground_truth[i]``
    holds positions in ``database`` (the order to embed it in) for ``queries[i]``."""

    params: SampleParams
    clusters: tuple[str, ...] = Field(description="cluster id -> name")
    images: tuple[SampleImage, ...]
    queries: tuple[int, ...]
    database: tuple[int, ...]
    ground_truth: tuple[QueryGroundTruth, ...]
    versions: dict[str, str] = Field(default_factory=dict, description="libraries that made the bytes")
    _root: Path = PrivateAttr(default=Path("."))

    @property
    def root(self) -> Path:
        return self._root

    def path(self, index: int) -> Path:
        return self._root / self.images[index].path

    def split(self, split: Literal["train", "test"]) -> list[int]:
        return [i for i, im in enumerate(self.images) if im.split == split]

    def query_paths(self) -> list[Path]:
        return [self.path(i) for i in self.queries]

    def database_paths(self) -> list[Path]:
        return [self.path(i) for i in self.database]

    @classmethod
    def load(cls, root: str | Path) -> SampleSet:
        root = Path(root)
        try:
            sample_set = cls.model_validate_json((root / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: pydantic's ValidationError, bad UTF-8
            raise ConfigError(f"no readable sample set manifest in {root}: {exc}") from exc
        sample_set._root = root
        return sample_set


def build_multiview_set(
    out_dir: str | Path,
    views_per_image: int = 8,
    seed: int = 0,
    holdout: int | Sequence[str] = 2,
    max_side: int = 512,
    sources: Sequence[str] | None = None,
    extra_photos: Sequence[str | Path] = (),
) -> SampleSet:
    """Build (or reuse) a multi-view set in ``out_dir``.

    ``holdout``: how many clusters to hold out for testing (picked with ``seed``), or their names.
    ``max_side``: source photos are first shrunk (never enlarged) to this longer side.
    ``sources``: cluster names (``available_clusters()``); None: all available.
    ``extra_photos``: more photo files, one cluster each, named by the file stem.
    An ``out_dir`` holding a set built with the same parameters is returned as is.
    """
    out = Path(out_dir)
    clusters = cluster_sources(list(sources) if sources is not None else available_clusters())
    extra = _extra_photos([Path(p) for p in extra_photos], set(clusters))
    clusters.update({name: (name,) for name in extra})
    if not clusters:
        raise ConfigError("no photos to build a sample set from")
    try:
        params = SampleParams(
            views_per_image=views_per_image,
            seed=seed,
            max_side=max_side,
            clusters=dict(sorted(clusters.items())),
            extra_sha256=extra,
            test_clusters=_held_out(sorted(clusters), holdout, seed),
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid sample set parameters: {exc}") from exc
    cached = _cached(out, params)
    if cached is not None:
        log.info("reusing the sample set in %s (%d images)", out, len(cached.images))
        return cached
    _prepare(out)
    photos = load_photos(params.clusters, max_side, [Path(p) for p in extra_photos])
    sample_set = _write(out, params, photos)
    log.info("built %d views of %d photos in %s", len(sample_set.images), len(photos), out)
    return sample_set


def _extra_photos(paths: list[Path], taken: set[str]) -> dict[str, str]:
    """Cluster name (the file stem) -> sha256 of the file, so a changed photo invalidates the cache."""
    extra: dict[str, str] = {}
    for path in paths:
        if path.stem in taken or path.stem in extra:
            raise ConfigError(f"photo {path}: a cluster named {path.stem!r} already exists; rename the file")
        try:
            extra[path.stem] = _sha256(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read the photo {path}: {exc}") from exc
    return extra


def _held_out(names: list[str], holdout: int | Sequence[str], seed: int) -> tuple[str, ...]:
    if isinstance(holdout, str):
        holdout = [holdout]
    if isinstance(holdout, int):
        if not 0 <= holdout <= len(names):
            raise ConfigError(f"holdout must be between 0 and {len(names)} clusters, got {holdout}")
        picked = np.random.default_rng(seed).permutation(len(names))[:holdout]
        return tuple(sorted(names[i] for i in picked))
    unknown = sorted(set(holdout) - set(names))
    if unknown:
        raise ConfigError(f"held-out clusters {unknown} are not among the sources {names}")
    return tuple(sorted(set(holdout)))


def _cached(out: Path, params: SampleParams) -> SampleSet | None:
    try:
        sample_set = SampleSet.load(out)
    except ConfigError:  # no manifest yet, or not one of ours
        return None
    if sample_set.params != params:
        log.info("sample set in %s was built with other parameters: rebuilding", out)
        return None
    for image in sample_set.images:
        path = out / image.path
        if not path.is_file() or _sha256(path.read_bytes()) != image.sha256:
            log.warning("%s is missing or changed: rebuilding the sample set", path)
            return None
    return sample_set


def _prepare(out: Path) -> None:
    """Empty ``out`` of a previous set; refuse a folder that holds anything else."""
    if out.exists() and any(out.iterdir()) and not (out / _MARKER).exists():
        raise ConfigError(f"{out} is not empty and holds no gemsearch sample set; choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARKER).touch()
    (out / MANIFEST).unlink(missing_ok=True)  # first, so a half-rebuilt folder never looks complete
    for split in _SPLITS:
        shutil.rmtree(out / split, ignore_errors=True)


def _write(out: Path, params: SampleParams, photos: list[SourcePhoto]) -> SampleSet:
    images: list[SampleImage] = []
    for cid, name in enumerate(params.clusters):
        split: Literal["train", "test"] = "test" if name in params.test_clusters else "train"
        sources = [p for p in photos if p.cluster == name]
        for view in range(params.views_per_image):
            photo = sources[view % len(sources)]  # a stereo pair alternates between its cameras
            images.append(_write_view(out, params.seed, photo, cid, view, split))
    sample_set = _with_ground_truth(params, tuple(params.clusters), images)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(sample_set.model_dump_json(indent=1), encoding="utf-8")
    tmp.replace(out / MANIFEST)  # written last and atomically: a set with a manifest is complete
    sample_set._root = out
    return sample_set


def _write_view(
    out: Path, seed: int, photo: SourcePhoto, cid: int, view: int, split: Literal["train", "test"]
) -> SampleImage:
    # one generator per view: other clusters and view counts do not shift its random numbers
    made = random_view(photo.image, np.random.default_rng([seed, zlib.crc32(photo.cluster.encode()), view]))
    data = made.encode()
    rel = f"{split}/{photo.cluster}/{view:03d}.{'jpg' if made.format == 'jpeg' else 'png'}"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / rel).write_bytes(data)
    return SampleImage(
        path=rel,
        cluster=cid,
        source=photo.source,
        view=view,
        split=split,
        transform=made.description,
        width=made.image.width,
        height=made.image.height,
        sha256=_sha256(data),
    )


def _with_ground_truth(
    params: SampleParams, clusters: tuple[str, ...], images: list[SampleImage]
) -> SampleSet:
    test = [i for i, im in enumerate(images) if im.split == "test"]
    queries = [i for i in test if images[i].view == 0]
    database = [i for i in test if images[i].view != 0]
    ground_truth = [
        QueryGroundTruth(
            ok=tuple(j for j, d in enumerate(database) if images[d].cluster == images[q].cluster)
        )
        for q in queries
    ]
    return SampleSet(
        params=params,
        clusters=clusters,
        images=tuple(images),
        queries=tuple(queries),
        database=tuple(database),
        ground_truth=tuple(ground_truth),
        versions={"pillow": PIL.__version__, "numpy": np.__version__},
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["SampleImage", "SampleParams", "SampleSet", "available_clusters", "build_multiview_set"]
