"""Ingest: the pipeline from sources to a store, and its report and ledger."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from .pipeline import IngestOptions, ingest, ingest_collection, ingest_records
    from .report import Fate, IngestReport

_EXPORTS = {
    "pipeline": (
        "IngestOptions",
        "ingest",
        "ingest_collection",
        "ingest_records",
    ),
    "report": (
        "Fate",
        "IngestReport",
    ),
}
__all__ = ["Fate", "IngestOptions", "IngestReport", "ingest", "ingest_collection", "ingest_records"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
