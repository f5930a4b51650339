"""Open the training data a ``DataSource`` names, in whichever of the three layouts it is."""

from __future__ import annotations

import logging

from .train_config import DataSource
from .training_data import TrainingSet, load_folders, load_pairs, load_sfm_database

log = logging.getLogger(__name__)


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
