"""The contracts between the parts: what embeds images and what stores and searches vectors.

Embeddings are ``(n, d)`` float32 rows, L2-normalised, everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from .manifest import ModelManifest

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


@runtime_checkable
class VectorStore(Protocol):
    """Where descriptors live: ``LocalStore`` (embedded default) or ``OpenSearchStore``."""

    def ensure_index(self, manifest: ModelManifest) -> None:
        """Create the index for this model version, or check that the existing one fits it."""
        ...

    def upsert(self, records: Sequence[Record]) -> None: ...

    def existing_ids(self, ids: Iterable[str]) -> set[str]: ...

    def search(self, vector: FloatRows, k: int = 10, filters: Filters | None = None) -> list[Hit]: ...

    def get(self, doc_id: str) -> Record | None: ...

    def count(self) -> int: ...

    def delete(self, ids: Iterable[str]) -> int: ...
