"""gemsearch.exporters: one ONNX file per model, whitening folded in, manifest embedded.

Needs the ``train`` extra (torch), except ``ensure_default_model`` and ``read_manifest``, which the
base install runs. The names below are imported on first use, so importing the package (as
``gemsearch --help`` does for its commands) loads neither torch nor onnx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .check import CheckReport, check_export
    from .default_model import (
        DEFAULT_MODEL_NAME,
        default_model_dir,
        ensure_default_model,
        export_default_model,
    )
    from .export import export_onnx, weights_sha256
    from .folding import apply_folded, fold_whitening
    from .onnx_file import read_manifest

_EXPORTS = {
    "check": ("CheckReport", "check_export"),
    "default_model": (
        "DEFAULT_MODEL_NAME",
        "default_model_dir",
        "ensure_default_model",
        "export_default_model",
    ),
    "export": ("export_onnx", "weights_sha256"),
    "folding": ("apply_folded", "fold_whitening"),
    "onnx_file": ("read_manifest",),
}
__all__ = [
    "DEFAULT_MODEL_NAME",
    "CheckReport",
    "apply_folded",
    "check_export",
    "default_model_dir",
    "ensure_default_model",
    "export_default_model",
    "export_onnx",
    "fold_whitening",
    "read_manifest",
    "weights_sha256",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
