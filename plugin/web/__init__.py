"""gemsearch.plugin.web: the HTTP API and demo page of ``gemsearch serve`` (extra ``[web]``).

``ServeConfig`` needs only pydantic; ``create_app`` imports FastAPI when first used and says which
extra to install when it is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from .app import create_app
    from .config import Limits, LocalStoreSpec, ModelSpec, OpenSearchStoreSpec, ServeConfig

_EXPORTS = {
    "app": ("create_app",),
    "config": ("Limits", "LocalStoreSpec", "ModelSpec", "OpenSearchStoreSpec", "ServeConfig"),
}
__all__ = ["Limits", "LocalStoreSpec", "ModelSpec", "OpenSearchStoreSpec", "ServeConfig", "create_app"]

__getattr__ = lazy_exports(__name__, _EXPORTS)
