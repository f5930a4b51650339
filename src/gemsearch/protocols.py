"""The contracts between the parts: what embeds images and what stores and searches vectors.

Embeddings are ``(n, d)`` float32 rows, L2-normalised, everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from .manifest import ModelManifest
from .preprocess import DEFAULT_DECODE, DecodeMode

FloatRows = npt.NDArray[np.float32]

# Metadata filters: {field: value} is a term filter, {field: [v1, v2]} a terms filter,
# {field: {"gte": a, "lt": b}} a range filter; all of them must match.
Filters = Mapping[str, Any]


class Record(BaseModel):
    """One document of a store: an id, its vector and what to show for it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    vector: FloatRows = Field(description="(d,) float32, L2-normalised")
    image_ref: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Hit(BaseModel):
    """One search result, best first; ``score`` is the inner product (cosine) with the query."""

    id: str
    score: float
    image_ref: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


@runtime_checkable
class Embedder(Protocol):
    """Turns images into descriptors. The ONNX embedder and the torch network both satisfy it."""

    @property
    def output_dim(self) -> int: ...

    def embed(self, images: Sequence[Any]) -> FloatRows:
        """``(n, d)`` float32 descriptors, rows L2-normalised, in input order."""
        ...


class Outcome(str, Enum):
    """What became of one document a store was asked to write."""

    INDEXED = "indexed"  # written and acknowledged
    REJECTED = "rejected"  # refused for good (e.g. a mapping conflict); see the dead-letter file
    PENDING = "pending"  # not acknowledged after retrying; writing it again is safe


@dataclass(frozen=True)
class ItemOutcome:
    id: str
    outcome: Outcome
    attempts: int
    status: int | None = None
    reason: str | None = None


@dataclass
class WriteReport:
    """What became of every document of a write, in the order each outcome became final."""

    items: list[ItemOutcome] = field(default_factory=list)
    requests: int = 0

    def ids(self, outcome: Outcome) -> list[str]:
        return [i.id for i in self.items if i.outcome is outcome]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((o.value for o in Outcome), 0)
        for item in self.items:
            counts[item.outcome.value] += 1
        return counts

    @property
    def complete(self) -> bool:
        """Every document was indexed or rejected; nothing is left pending."""
        return not any(i.outcome is Outcome.PENDING for i in self.items)


@runtime_checkable
class VectorStore(Protocol):
    """Where descriptors live: ``LocalStore`` (embedded default) or ``OpenSearchStore``.

    A store is a context manager (``close`` on exit). ``write`` reports each document's outcome (a
    cluster may refuse some and not others); ``upsert`` is the all-or-nothing form of it.
    """

    @property
    def manifest(self) -> ModelManifest | None:
        """The manifest of the model the store serves (None before ``ensure_index``)."""
        ...

    @property
    def dead_letter_path(self) -> Path | None:
        """Where refused documents are written, if the store can refuse some."""
        ...

    @property
    def decode(self) -> DecodeMode | None:
        """How the images of the stored descriptors were decoded (``DecodeMode``); None while the
        store does not know (before ``ensure_index``, or an OpenSearch alias read for queries)."""
        ...

    def ensure_index(self, manifest: ModelManifest, *, decode: DecodeMode = DEFAULT_DECODE) -> None:
        """Create the index for this model version and decode mode, or check that the existing one
        fits both (descriptors of the two modes differ slightly: never mixed in one index)."""
        ...

    def write(self, records: Iterable[Record], *, refresh: bool | None = None) -> WriteReport: ...

    def upsert(self, records: Sequence[Record]) -> None: ...

    def update_metadata(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], *, refresh: bool | None = None
    ) -> int:
        """Write ``(id, metadata fields)`` onto stored documents without touching their vectors:
        fields merge into the stored metadata as an OpenSearch partial update does (objects field by
        field, any other value replaced). Ids not in the store are left out; returns how many
        documents were updated. Raises StoreError if the store refuses or cannot confirm one.
        ``refresh`` as for ``write`` (a long ingest refreshes once at the end)."""
        ...

    def refresh(self) -> None:
        """Make everything written so far visible to searches."""
        ...

    def bulk_load(self) -> AbstractContextManager[None]:
        """Settings for a long load by the store's only writer, restored on exit."""
        ...

    def existing_ids(self, ids: Iterable[str]) -> set[str]: ...

    def search(self, vector: FloatRows, k: int = 10, filters: Filters | None = None) -> list[Hit]: ...

    def get(self, doc_id: str) -> Record | None: ...

    def count(self, filters: Filters | None = None) -> int:
        """How many documents the store holds; with ``filters``, how many match them."""
        ...

    def ids_matching(self, filters: Filters | None = None) -> Iterator[str]:
        """The ids of the documents matching ``filters`` (the search filters' rules; every document
        without), read lazily. Deleting by filter deletes these ids with ``delete``, a chunk at a
        time, so every id's fate can be reported."""
        ...

    def known_fields(self, fields: Iterable[str]) -> set[str]:
        """Those of ``fields`` (metadata fields, dotted for nested ones) that some document has."""
        ...

    def metadata_fields(self) -> dict[str, list[str]]:
        """Every metadata field some document has (dotted for nested ones), sorted, with the kinds
        of its values among ``boolean``, ``number`` and ``text`` (what a filter on it can match)."""
        ...

    def delete(self, ids: Iterable[str]) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> VectorStore: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
