"""The manifest inside an ONNX file: written into ``metadata_props``, read back without torch.

Reading is ``gemsearch.onnx_manifest`` (onnxruntime only), shared with the runtime, so a file that
reads here reads there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gemsearch.files import atomic_write
from gemsearch.onnx_manifest import read_manifest as read_manifest  # the public name of this package
from gemsearch.onnx_manifest import set_manifest as set_manifest


def write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it onto ``path``.

    A killed export never leaves a half-written model where a reader would pick it up.
    """
    return atomic_write(path, write)
