"""The manifest inside an ONNX file: written into ``metadata_props``, read back without torch.

Reading is ``gemsearch.onnx_manifest`` (onnxruntime only), shared with the runtime, so a file that
reads here reads there.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
