"""Input checks of the LocalStore, all done before anything is written.

A bad batch is refused whole with a StoreError naming the offending id, so nothing half-written
ever reaches the folder; a folder made for one model refuses vectors of another.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ....errors import StoreError
from ....manifest import ModelManifest
from ....protocols import FloatRows, Record
from .filters import Term, flatten


@dataclass(frozen=True)
class Batch:
    """A validated upsert batch: one entry per distinct id (the last record of an id wins)."""

    ids: list[str]
    vectors: FloatRows  # (m, dim) float32
    image_refs: list[str | None]
    metadata_json: list[str]
    terms: list[list[Term]]  # the filterable values of each document

    def docs(self) -> Iterator[tuple[str, str | None, str, list[Term]]]:
        return zip(self.ids, self.image_refs, self.metadata_json, self.terms, strict=True)


def prepare_batch(records: Sequence[Record], dim: int) -> Batch:
    latest: dict[str, Record] = {}
    for record in records:
        if not isinstance(record.id, str) or not record.id:
            raise StoreError(f"document ids must be non-empty strings, got {record.id!r}")
        latest.pop(record.id, None)  # re-insert so the order is that of each id's last record
        latest[record.id] = record
    vectors = np.empty((len(latest), dim), dtype=np.float32)
    metadata_texts: list[str] = []
    for i, record in enumerate(latest.values()):
        vectors[i] = _vector(record.vector, dim, f"document {record.id!r}")
        metadata_texts.append(metadata_json(record.id, record.metadata))
    refs = [r.image_ref for r in latest.values()]
    return Batch(list(latest), vectors, refs, metadata_texts, [flatten(r.metadata) for r in latest.values()])


def metadata_updates(items: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Mapping[str, Any]]:
    """Checked metadata updates, id -> fields (several updates of one id merge, in order)."""
    latest: dict[str, Mapping[str, Any]] = {}
    for doc_id, metadata in items:
        if not isinstance(doc_id, str) or not doc_id:
            raise StoreError(f"document ids must be non-empty strings, got {doc_id!r}")
        if not isinstance(metadata, Mapping):
            raise StoreError(
                f"document {doc_id!r}: metadata must be a mapping, got {type(metadata).__name__}"
            )
        metadata_json(doc_id, dict(metadata))  # refuse the whole batch before anything is written
        latest[doc_id] = merged_metadata(latest.get(doc_id, {}), metadata)
    return latest


def merged_metadata(stored: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` written onto ``stored`` as OpenSearch merges a partial document: objects present
    on both sides merge field by field, any other value (lists included) replaces the stored one."""
    out = dict(stored)
    for key, value in update.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merged_metadata(old, value)
        else:
            out[key] = value
    return out


def query_vector(vector: Any, dim: int) -> FloatRows:
    """The query as ``(dim,)`` float32; a single ``(1, dim)`` row is accepted too."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    return _vector(array, dim, "the query")


def _vector(vector: Any, dim: int, what: str) -> FloatRows:
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{what}: the vector is not numeric ({exc})") from exc
    if array.shape != (dim,):
        raise StoreError(f"{what}: vector has shape {array.shape}, this store holds ({dim},) vectors")
    if not np.isfinite(array).all():
        raise StoreError(f"{what}: vector contains NaN or infinite values")
    return array


def metadata_json(doc_id: str, metadata: dict[str, Any]) -> str:
    try:
        return json.dumps(metadata, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"document {doc_id!r}: metadata is not plain JSON ({exc})") from exc


def _identity(m: ModelManifest) -> dict[str, object]:
    """What decides the vectors: same weights, same output size, same preprocessing and scales."""
    return {
        "name": m.name,
        "version": m.version,
        "output_dim": m.output_dim,
        "max_side": m.input.max_side,
        "mean": m.input.mean,
        "std": m.input.std,
        "scales": m.multiscale.scales,
        "msp": m.multiscale.msp,
    }


def check_same_model(folder: Path, stored: ModelManifest, wanted: ModelManifest) -> None:
    """Refuse a manifest whose vectors would not be comparable with the ones already in the folder."""
    have, want = _identity(stored), _identity(wanted)
    diff = [f"{key} {have[key]!r} != {want[key]!r}" for key in have if have[key] != want[key]]
    if diff:
        raise StoreError(
            f"{folder} holds vectors of model {stored.name} (version {stored.version8}, "
            f"{stored.output_dim} dims); refusing to mix in {wanted.name} (version {wanted.version8}, "
            f"{wanted.output_dim} dims): {'; '.join(diff)}. Use another folder for this model."
        )
