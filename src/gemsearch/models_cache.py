"""Where exported models are kept by name, and how a ``--model`` value names one.

Every command that takes an exported model takes a path or a name: ``lite0-gem`` is
``${GEMSEARCH_CACHE:-~/.cache/gemsearch}/models/lite0-gem.onnx`` (where ``gemsearch export default``
and the quickstart put the default model).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelError

CACHE_ENV = "GEMSEARCH_CACHE"


def models_dir() -> Path:
    """``${GEMSEARCH_CACHE:-~/.cache/gemsearch}/models``."""
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/gemsearch").expanduser() / "models"


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """An ONNX file: the path itself, or a model name found as ``models_dir()/<name>.onnx``."""
    path = Path(model)
    if path.is_file():
        return path
    named = models_dir() / f"{model}.onnx"
    if path.suffix != ".onnx" and os.sep not in str(model) and named.is_file():
        return named
    raise ModelError(f"{model}: no such model file (nor a model named so in {models_dir()})")
