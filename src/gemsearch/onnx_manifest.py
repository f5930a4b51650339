"""The manifest inside an exported ONNX file, read with onnxruntime alone (no torch, no onnx).

The exporter checks its files and the runtime opens its models through the same two functions, so a
file that reads for one reads for the other.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from .errors import ModelError
from .manifest import METADATA_KEY, ModelManifest


def metadata_session(path: str | os.PathLike[str]) -> Any:
    """An onnxruntime CPU session on ``path`` for reading metadata and signatures (no graph
    optimisations: cheap to open); ``ModelError`` if it is not a loadable ONNX model."""
    import onnxruntime as ort  # a base dependency; imported here to keep `gemsearch --help` light

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        raise ModelError(f"{path}: not a loadable ONNX model ({exc})") from exc


def manifest_of_session(session: Any, origin: str) -> ModelManifest:
    """The manifest of an open ``onnxruntime.InferenceSession``; ``origin`` names it in errors."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise ModelError(
            f"{origin}: no gemsearch manifest ({METADATA_KEY!r} in the ONNX metadata); "
            "export the model with `gemsearch export onnx`"
        )
    try:
        return ModelManifest.from_json(text)
    except ValidationError as exc:
        raise ModelError(f"{origin}: invalid gemsearch manifest ({exc})") from exc


def read_manifest(path: str | os.PathLike[str]) -> ModelManifest:
    """The manifest embedded in the ONNX file at ``path``; ``ModelError`` if it has none or is invalid."""
    return manifest_of_session(metadata_session(path), str(path))
