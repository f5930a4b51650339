"""Training data: images, a cluster id per image and matching (query, positive) pairs.

Three layouts load into one ``TrainingSet``:
- cirtorch's retrieval-SfM database (``retrieval-SfM-120k.pkl``: ``train``/``val`` with ``cids``,
  ``cluster``, ``qidxs``, ``pidxs``; image files at ``ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>``);
- a folder per object or landmark (positives: same folder; negatives: other folders);
- a JSONL or CSV list of matching pairs with the cluster id of each pair.
``load_source`` opens the data a ``DataSource`` names, in whichever layout it is.

The ``.pkl`` database is a Python pickle: it is only ever read from a path the user names, since
unpickling a file runs code it contains.
"""

from __future__ import annotations

import csv
import json
import logging
import pickle
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, model_validator

from gemsearch.errors import ConfigError

from .config import DataSource

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class TrainingSet(BaseModel):
    """``images[i]`` belongs to ``clusters[i]``; ``(qidxs[k], pidxs[k])`` is a matching pair."""

    images: list[Path]
    clusters: list[int]
    qidxs: list[int]
    pidxs: list[int]
    name: str = "training"

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSet:
        n = len(self.images)
        if len(self.clusters) != n:
            raise ValueError(f"{len(self.clusters)} cluster ids for {n} images")
        if len(self.qidxs) != len(self.pidxs):
            raise ValueError("qidxs and pidxs differ in length")
        if not self.qidxs:
            raise ValueError("no matching pairs: every query needs a positive")
        for q, p in zip(self.qidxs, self.pidxs, strict=True):
            if not (0 <= q < n and 0 <= p < n):
                raise ValueError(f"pair ({q}, {p}) points outside the {n} images")
            if q == p or self.clusters[q] != self.clusters[p]:
                raise ValueError(f"pair ({q}, {p}) is not two images of one cluster")
        if len(set(self.clusters)) < 2:
            raise ValueError("at least two clusters are needed, or there are no negatives")
        return self

    def check_files(self, limit: int = 5) -> None:
        """Raise ConfigError naming the first missing image files, if any."""
        missing = [p for p in self.images if not p.is_file()]
        if missing:
            shown = ", ".join(str(p) for p in missing[:limit])
            raise ConfigError(
                f"{self.name}: {len(missing)} of {len(self.images)} images are missing: {shown}"
            )


def _validated(**fields: Any) -> TrainingSet:
    try:
        return TrainingSet(**fields)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"{fields.get('name', 'training data')}: {exc}") from exc


def cid_to_path(cid: str, ims_root: Path) -> Path:
    """cirtorch's image path for a retrieval-SfM id: three 2-character folders from the id's end."""
    return ims_root / cid[-2:] / cid[-4:-2] / cid[-6:-4] / cid


def load_sfm_database(pkl: Path, ims_root: Path, split: str = "train") -> TrainingSet:
    """Read one split of a cirtorch retrieval-SfM ``.pkl`` database (a pickle: trusted paths only)."""
    with Path(pkl).open("rb") as fh:
        db = pickle.load(fh)  # the user named this file; see the module docstring
    if split not in db:
        raise ConfigError(f"{pkl}: no split {split!r} (has {sorted(db)})")
    part = db[split]
    missing = {"cids", "cluster", "qidxs", "pidxs"} - set(part)
    if missing:
        raise ConfigError(f"{pkl}[{split!r}] lacks {sorted(missing)}")
    return _validated(
        images=[cid_to_path(c, Path(ims_root)) for c in part["cids"]],
        clusters=[int(c) for c in part["cluster"]],
        qidxs=[int(i) for i in part["qidxs"]],
        pidxs=[int(i) for i in part["pidxs"]],
        name=f"{Path(pkl).name}:{split}",
    )


def load_folders(root: Path, max_pairs_per_cluster: int = 100, seed: int = 0) -> TrainingSet:
    """One sub-folder per object; every ordered pair inside a folder matches (sampled if many)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    rng = random.Random(seed)
    images: list[Path] = []
    clusters: list[int] = []
    qidxs: list[int] = []
    pidxs: list[int] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        if not files:
            log.warning("%s has no images: skipped", folder)
            continue
        if len(files) == 1:
            log.warning("%s has one image: used as a negative only", folder)
        start, cid = len(images), len(set(clusters))
        images += files
        clusters += [cid] * len(files)
        pairs = [(start + i, start + j) for i in range(len(files)) for j in range(len(files)) if i != j]
        for q, p in rng.sample(pairs, min(len(pairs), max_pairs_per_cluster)):
            qidxs.append(q)
            pidxs.append(p)
    return _validated(images=images, clusters=clusters, qidxs=qidxs, pidxs=pidxs, name=str(root))


def _pair_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        return list(csv.DictReader(text.splitlines()))
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{lineno}: not JSON ({exc.msg})") from exc
    return rows


def load_pairs(path: Path, images_root: Path | None = None) -> TrainingSet:
    """Rows ``query, positive, cluster`` (JSONL or CSV); an empty ``positive`` adds a pool-only image.

    Relative image paths resolve against ``images_root`` (default: the list's folder).
    """
    path = Path(path)
    base = Path(images_root) if images_root else path.parent
    index: dict[Path, int] = {}
    clusters: list[int] = []
    cluster_ids: dict[str, int] = defaultdict(lambda: len(cluster_ids))
    qidxs: list[int] = []
    pidxs: list[int] = []

    def add(name: str, cluster: int, where: str) -> int:
        image = base / name
        if image in index:
            if clusters[index[image]] != cluster:
                raise ConfigError(f"{where}: {name} appears in two clusters")
            return index[image]
        index[image] = len(clusters)
        clusters.append(cluster)
        return index[image]

    for lineno, row in enumerate(_pair_rows(path), 2 if path.suffix.lower() == ".csv" else 1):
        where = f"{path}:{lineno}"
        if not row.get("query") or row.get("cluster") in (None, ""):
            raise ConfigError(f"{where}: a row needs 'query' and 'cluster'")
        cluster = cluster_ids[str(row["cluster"])]
        q = add(str(row["query"]), cluster, where)
        if row.get("positive"):
            qidxs.append(q)
            pidxs.append(add(str(row["positive"]), cluster, where))
    return _validated(images=list(index), clusters=clusters, qidxs=qidxs, pidxs=pidxs, name=str(path))


def load_source(source: DataSource, check_files: bool = True) -> TrainingSet:
    """The ``TrainingSet`` of ``source``; ``ConfigError`` on bad data or (``check_files``) missing images."""
    kind = source.resolved_format()
    if kind == "sfm":
        root = source.images_root or source.path.parent / "ims"
        data = load_sfm_database(source.path, root, source.split)
    elif kind == "pairs":
        data = load_pairs(source.path, source.images_root)
    else:
        data = load_folders(source.path)
    if check_files:
        data.check_files()
    log.info(
        "%s: %d images, %d clusters, %d pairs",
        data.name, len(data.images), len(set(data.clusters)), len(data.qidxs),
    )  # fmt: skip
    return data
