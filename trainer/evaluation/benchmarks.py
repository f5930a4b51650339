"""Retrieval benchmarks in cirtorch's test layout: Oxford5k/Paris6k and their revisited versions.

A dataset is a folder holding ``gnd_<name>.pkl`` and the images as ``jpg/<imname>.jpg``. The pickle
is a dict with ``imlist`` (database), ``qimlist`` (queries) and ``gnd``, one dict per query: ``ok``,
``junk``, ``bbx`` (classic) or ``easy``, ``hard``, ``junk``, ``bbx`` (revisited). Queries are
described from their ``bbx`` box (cut from the full image, then shrunk as the full image would be);
the database from full images. Scores are ``gemsearch.metrics``' (cirtorch's definitions).

Security: ``gnd_*.pkl`` files are Python pickles, and unpickling runs code. ``load_dataset`` only
unpickles the file in the folder its caller names; never point it at a file you do not trust.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from gemsearch.errors import EvaluationError
from gemsearch.metrics import (
    KAPPAS,
    RetrievalScore,
    RevisitedScore,
    Score,
    compute_map,
    compute_map_revisited,
    rank_by_inner_product,
)
from gemsearch.preprocess import Box

log = logging.getLogger(__name__)

SHORT_NAMES = {"roxford5k": "ROxf", "rparis6k": "RPar", "oxford5k": "Oxford5k", "paris6k": "Paris6k"}
"""How the papers' tables name the standard datasets."""


class BoxEmbedder(Protocol):
    """What evaluation needs of an embedder (``TorchEmbedder`` is one)."""

    def embed(
        self, images: Sequence[str | Path], boxes: Sequence[Box | None] | None = None
    ) -> npt.NDArray[np.float32]: ...


class EvalDataset(BaseModel):
    """One benchmark read from its folder: image paths, query boxes and ground truth."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    root: Path
    database: tuple[Path, ...]
    queries: tuple[Path, ...]
    boxes: tuple[Box | None, ...]
    gnd: tuple[dict[str, Any], ...]
    revisited: bool

    @property
    def short_name(self) -> str:
        return SHORT_NAMES.get(self.name, self.name)


class DatasetResult(BaseModel):
    """The score of one dataset; ``protocol`` is ``"revisited"`` (Easy/Medium/Hard) or ``"standard"``."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    protocol: str
    n_queries: int
    n_database: int
    score: RevisitedScore | RetrievalScore


class EvaluationReport(BaseModel):
    """Everything ``gemsearch evaluate --json`` writes."""

    model_config = ConfigDict(frozen=True)

    model: str
    scales: tuple[float, ...]
    whiten: bool
    max_side: int | None
    results: tuple[DatasetResult, ...]

    def scores(self) -> dict[str, Score]:
        """Scores by the datasets' short (table) names, in evaluation order."""
        return {SHORT_NAMES.get(r.dataset, r.dataset): r.score for r in self.results}


def find_gnd_file(root: Path) -> Path:
    """``root/gnd_<folder name>.pkl``, else the folder's only ``gnd_*.pkl``; ``EvaluationError`` if none."""
    if not root.is_dir():
        raise EvaluationError(f"{root}: no such dataset folder")
    preferred = root / f"gnd_{root.name}.pkl"
    if preferred.is_file():
        return preferred
    found = sorted(root.glob("gnd_*.pkl"))
    if len(found) != 1:
        what = (
            "no gnd_<name>.pkl file"
            if not found
            else f"several gnd files ({', '.join(p.name for p in found)})"
        )
        raise EvaluationError(f"{root}: {what}; expected cirtorch's layout gnd_<name>.pkl + jpg/")
    return found[0]


def load_dataset(root: str | Path) -> EvalDataset:
    """Read a dataset folder in cirtorch's layout; checks every image file exists.

    Unpickles ``gnd_<name>.pkl`` from ``root``: only use folders you trust (pickles can run code).
    """
    root = Path(root)
    gnd_file = find_gnd_file(root)
    with gnd_file.open("rb") as f:
        data = pickle.load(f)  # the user names this file; see the module docstring
    if not isinstance(data, dict) or not {"imlist", "qimlist", "gnd"} <= data.keys():
        raise EvaluationError(f"{gnd_file}: expected a dict with imlist, qimlist and gnd")
    gnd = [dict(g) for g in data["gnd"]]
    if len(gnd) != len(data["qimlist"]) or not gnd:
        raise EvaluationError(f"{gnd_file}: {len(gnd)} gnd entries for {len(data['qimlist'])} queries")
    database = tuple(_image_path(root, name) for name in data["imlist"])
    queries = tuple(_image_path(root, name) for name in data["qimlist"])
    _check_exist(root, database + queries)
    return EvalDataset(
        name=gnd_file.stem.removeprefix("gnd_"),
        root=root,
        database=database,
        queries=queries,
        boxes=tuple(_box(g.get("bbx")) for g in gnd),
        gnd=tuple(gnd),
        revisited="easy" in gnd[0],
    )


def score_descriptors(
    dataset: EvalDataset,
    query_vecs: npt.ArrayLike,
    database_vecs: npt.ArrayLike,
    kappas: Sequence[int] = KAPPAS,
) -> RetrievalScore | RevisitedScore:
    """Rank the database by inner product for each query and score it with the dataset's protocol."""
    ranks = rank_by_inner_product(query_vecs, database_vecs)
    if dataset.revisited:
        return compute_map_revisited(ranks, dataset.gnd, kappas)
    return compute_map(ranks, dataset.gnd, kappas)


def describe_dataset(
    embedder: BoxEmbedder, dataset: EvalDataset
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``(query, database)`` descriptors: queries from their boxes, the database from full images."""
    log.info("%s: %d database images, %d queries", dataset.name, len(dataset.database), len(dataset.queries))
    query_vecs = embedder.embed(list(dataset.queries), boxes=list(dataset.boxes))
    return query_vecs, embedder.embed(list(dataset.database))


def evaluate_dataset(embedder: BoxEmbedder, dataset: EvalDataset) -> DatasetResult:
    """Describe the dataset (``describe_dataset``) and score its rankings."""
    query_vecs, database_vecs = describe_dataset(embedder, dataset)
    return DatasetResult(
        dataset=dataset.name,
        protocol="revisited" if dataset.revisited else "standard",
        n_queries=len(dataset.queries),
        n_database=len(dataset.database),
        score=score_descriptors(dataset, query_vecs, database_vecs),
    )


def _image_path(root: Path, name: str) -> Path:
    return root / "jpg" / f"{name}.jpg"


def _check_exist(root: Path, paths: Sequence[Path]) -> None:
    missing = [p for p in dict.fromkeys(paths) if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise EvaluationError(f"{root}: {len(missing)} image(s) missing, e.g. {shown}")


def _box(bbx: Any) -> Box | None:
    if bbx is None:
        return None
    values = [float(v) for v in np.asarray(bbx).ravel()]
    if len(values) != 4:
        raise EvaluationError(f"query box {bbx!r} is not x1, y1, x2, y2")
    return (values[0], values[1], values[2], values[3])
