"""The manifest inside an ONNX file: written into ``metadata_props``, read back without torch.

Reading goes through onnxruntime (the runtime's own dependency), exactly as the plugin does, so a
file that reads here reads there.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gemsearch.errors import ModelError
from gemsearch.manifest import METADATA_KEY, ModelManifest


def set_manifest(model: Any, manifest: ModelManifest) -> None:
    """Store ``manifest`` as JSON under ``METADATA_KEY`` in an ``onnx.ModelProto`` (replacing any)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, manifest.to_json()


def read_manifest(path: str | Path) -> ModelManifest:
    """The manifest embedded in the ONNX file at ``path``; ``ModelError`` if it has none or is invalid."""
    return manifest_of_session(open_session(path), str(path))


def open_session(path: str | Path) -> Any:
    """An onnxruntime CPU session on ``path`` for reading metadata and signatures (no graph
    optimisations); ``ModelError`` if it is not a loadable ONNX model."""
    import onnxruntime as ort  # a base dependency; imported here to keep this module light

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        raise ModelError(f"{path}: not a loadable ONNX model ({exc})") from exc


def manifest_of_session(session: Any, origin: str) -> ModelManifest:
    """The manifest of an open ``onnxruntime.InferenceSession``."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise ModelError(f"{origin}: no gemsearch manifest ({METADATA_KEY!r} in the ONNX metadata)")
    try:
        return ModelManifest.from_json(text)
    except ValidationError as exc:
        raise ModelError(f"{origin}: invalid gemsearch manifest ({exc})") from exc


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``.

    A killed export never leaves a half-written model where a reader would pick it up.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part"
    # created with the umask's permissions (mkstemp's 0600 would hide the model from other users)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
