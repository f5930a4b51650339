"""Inputs: the sources that name images (folders, manifests, path lists, shards, in-memory records) and
safe image loading."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from .images import ImageLoadConfig, load_image, load_image_bytes, load_image_file
    from .items import SourceItem, document_id
    from .records import iter_records
    from .sources import Shard, iter_sources, open_source, parse_shard, read_sources

_EXPORTS = {
    "images": (
        "ImageLoadConfig",
        "load_image",
        "load_image_bytes",
        "load_image_file",
    ),
    "items": (
        "SourceItem",
        "document_id",
    ),
    "records": ("iter_records",),
    "sources": (
        "Shard",
        "iter_sources",
        "open_source",
        "parse_shard",
        "read_sources",
    ),
}
__all__ = [
    "ImageLoadConfig",
    "Shard",
    "SourceItem",
    "document_id",
    "iter_records",
    "iter_sources",
    "load_image",
    "load_image_bytes",
    "load_image_file",
    "open_source",
    "parse_shard",
    "read_sources",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
