"""The manifest inside an ONNX file: written into ``metadata_props``, read back without torch.

Reading is ``gemsearch.onnx_manifest`` (onnxruntime only), shared with the runtime, so a file that
reads here reads there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gemsearch.files import atomic_write
from gemsearch.manifest import METADATA_KEY, ModelManifest
from gemsearch.onnx_manifest import read_manifest as read_manifest  # the public name of this package


def set_manifest(model: Any, manifest: ModelManifest) -> None:
    """Store ``manifest`` as JSON under ``METADATA_KEY`` in an ``onnx.ModelProto`` (replacing any)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, manifest.to_json()


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``.

    A killed export never leaves a half-written model where a reader would pick it up.
    """
    return atomic_write(path, write)
