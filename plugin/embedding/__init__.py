"""Embedding: onnxruntime sessions of an exported model and the embedder that runs them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from .embedder import OnnxEmbedder
    from .sessions import read_manifest

_EXPORTS = {
    "embedder": ("OnnxEmbedder",),
    "sessions": ("read_manifest",),
}
__all__ = ["OnnxEmbedder", "read_manifest"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
