"""gemsearch.plugin: the runtime. Embeds images with onnxruntime and talks to the vector stores.

Never imports torch: an ingestion node installs only the base package. The names below are
imported on first use, so ``import gemsearch.plugin`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .embedding.embedder import OnnxEmbedder
    from .embedding.sessions import read_manifest
    from .ingest.pipeline import IngestOptions, ingest_collection, ingest_records
    from .ingest.report import IngestReport
    from .inputs.images import ImageLoadConfig, load_image, load_image_bytes, load_image_file
    from .inputs.items import SourceItem
    from .inputs.records import iter_records
    from .inputs.sources import document_id, iter_sources, open_source, parse_shard
    from .query import Searcher, search, search_by_id
    from .stores.factory import LocalStoreSpec, OpenSearchStoreSpec, open_store
    from .stores.local.store import LocalStore
    from .stores.opensearch.bulk import BulkWriter
    from .stores.opensearch.connection import OpenSearchConfig, make_client
    from .stores.opensearch.index_checks import IndexOptions
    from .stores.opensearch.store import OpenSearchStore

_EXPORTS = {
    "embedding.embedder": ("OnnxEmbedder",),
    "embedding.sessions": ("read_manifest",),
    "ingest.pipeline": ("IngestOptions", "ingest_collection", "ingest_records"),
    "ingest.report": ("IngestReport",),
    "inputs.images": ("ImageLoadConfig", "load_image", "load_image_bytes", "load_image_file"),
    "inputs.items": ("SourceItem",),
    "inputs.records": ("iter_records",),
    "inputs.sources": ("document_id", "iter_sources", "open_source", "parse_shard"),
    "query": ("Searcher", "search", "search_by_id"),
    "stores.factory": ("LocalStoreSpec", "OpenSearchStoreSpec", "open_store"),
    "stores.local.store": ("LocalStore",),
    "stores.opensearch.bulk": ("BulkWriter",),
    "stores.opensearch.connection": ("OpenSearchConfig", "make_client"),
    "stores.opensearch.index_checks": ("IndexOptions",),
    "stores.opensearch.store": ("OpenSearchStore",),
}
__all__ = [
    "BulkWriter",
    "ImageLoadConfig",
    "IndexOptions",
    "IngestOptions",
    "IngestReport",
    "LocalStore",
    "LocalStoreSpec",
    "OnnxEmbedder",
    "OpenSearchConfig",
    "OpenSearchStore",
    "OpenSearchStoreSpec",
    "Searcher",
    "SourceItem",
    "document_id",
    "ingest_collection",
    "ingest_records",
    "iter_records",
    "iter_sources",
    "load_image",
    "load_image_bytes",
    "load_image_file",
    "make_client",
    "open_source",
    "open_store",
    "parse_shard",
    "read_manifest",
    "search",
    "search_by_id",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)
