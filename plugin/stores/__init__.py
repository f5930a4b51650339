"""The vector stores: ``local`` (the embedded default, one folder) and ``opensearch`` (k-NN indices)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from .factory import LocalStoreSpec, OpenSearchStoreSpec, StoreSpec, open_store

_EXPORTS = {
    "factory": (
        "LocalStoreSpec",
        "OpenSearchStoreSpec",
        "StoreSpec",
        "open_store",
    ),
}
__all__ = ["LocalStoreSpec", "OpenSearchStoreSpec", "StoreSpec", "open_store"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
