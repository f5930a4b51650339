"""gemsearch.plugin: the runtime. Embeds images with onnxruntime and talks to the vector stores.

Never imports torch: an ingestion node installs only the base package. The names below are
imported on first use, so ``import gemsearch.plugin`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .bulk import BulkWriter
    from .connection import OpenSearchConfig, make_client
    from .images import ImageLoadConfig, load_image, load_image_bytes, load_image_file
    from .ingest import IngestOptions, ingest_collection
    from .ingest_report import IngestReport
    from .local_store import LocalStore
    from .onnx_embedder import OnnxEmbedder
    from .onnx_model import read_manifest
    from .opensearch_store import OpenSearchStore
    from .sources import document_id, iter_sources, open_source, parse_shard

_EXPORTS = {
    "bulk": ("BulkWriter",),
    "connection": ("OpenSearchConfig", "make_client"),
    "images": ("ImageLoadConfig", "load_image", "load_image_bytes", "load_image_file"),
    "ingest": ("IngestOptions", "ingest_collection"),
    "ingest_report": ("IngestReport",),
    "local_store": ("LocalStore",),
    "onnx_embedder": ("OnnxEmbedder",),
    "onnx_model": ("read_manifest",),
    "opensearch_store": ("OpenSearchStore",),
    "sources": ("document_id", "iter_sources", "open_source", "parse_shard"),
}
__all__ = [
    "BulkWriter",
    "ImageLoadConfig",
    "IngestOptions",
    "IngestReport",
    "LocalStore",
    "OnnxEmbedder",
    "OpenSearchConfig",
    "OpenSearchStore",
    "document_id",
    "ingest_collection",
    "iter_sources",
    "load_image",
    "load_image_bytes",
    "load_image_file",
    "make_client",
    "open_source",
    "parse_shard",
    "read_manifest",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)
