"""The ``LocalStore``: SQLite for documents and their filter index, a float32 file of vectors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...._lazy import lazy_exports

if TYPE_CHECKING:
    from .store import LocalStore

_EXPORTS = {
    "store": ("LocalStore",),
}
__all__ = ["LocalStore"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
