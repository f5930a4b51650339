"""The ``OpenSearchStore``: connection, index administration, bulk writes and the k-NN search template."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...._lazy import lazy_exports

if TYPE_CHECKING:
    from .bulk import BulkOptions, BulkWriter
    from .connection import OpenSearchConfig
    from .index_checks import IndexOptions
    from .store import OpenSearchStore

_EXPORTS = {
    "store": ("OpenSearchStore",),
    "bulk": (
        "BulkOptions",
        "BulkWriter",
    ),
    "connection": ("OpenSearchConfig",),
    "index_checks": ("IndexOptions",),
}
__all__ = ["BulkOptions", "BulkWriter", "IndexOptions", "OpenSearchConfig", "OpenSearchStore"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
