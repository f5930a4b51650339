"""What a Ray ingest reads: our sources (listed on the driver) or a Ray Dataset of the caller's.

A caller's dataset has a ``path`` column (file paths) or a ``bytes`` column (encoded images), an
optional ``id`` (else the sha256 of the bytes), an optional ``image_ref``; every other column is
metadata. Its rows are numbered by Ray (deterministic per block, so a re-executed task numbers the
same rows the same way).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from ...errors import SourceError
from ...image_refs import image_ref_of
from ..inputs.items import SourceItem
from ..inputs.sources import DEFAULT_IMAGE_EXTENSIONS, Shard, read_sources
from .rows import Row, row_of_entry, table_of

SEQ = "__gemsearch_seq"
_KNOWN = frozenset({"path", "bytes", "id", "image_ref", SEQ})


def listed_rows(
    sources: Sequence[str], shard: Shard | None, extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS
) -> list[Row]:
    """The entries of ``sources``, listed on the driver (paths and ids only: a few hundred bytes each)."""
    entries: Iterable[SourceItem | SourceError] = read_sources(sources, shard, extensions)
    return [row_of_entry(seq, entry) for seq, entry in enumerate(entries)]


def dataset_of_rows(ray: Any, rows: Sequence[Row], rows_per_block: int) -> Any:
    """``rows`` as a dataset of blocks of ``rows_per_block`` (one read task each)."""
    tables = [table_of(rows[i : i + rows_per_block]) for i in range(0, len(rows), rows_per_block)]
    return ray.data.from_arrow(tables or [table_of([])])


def normalised(ray: Any, ds: Any) -> Any:
    """A caller's dataset as our rows: normalised first (every block gets our schema, whatever
    columns the caller's blocks have), then numbered."""
    from ray.data.expressions import monotonically_increasing_id

    ours = ds.map_batches(_normalise, batch_format="pyarrow", batch_size=None)
    return ours.with_column(SEQ, monotonically_increasing_id()).map_batches(
        _numbered, batch_format="pyarrow", batch_size=None
    )


def _normalise(table: pa.Table) -> pa.Table:
    return table_of([_row(raw) for raw in table.to_pylist()])


def _numbered(table: pa.Table) -> pa.Table:
    rows = []
    for raw in table.to_pylist():
        seq = int(raw.pop(SEQ))
        rows.append({**raw, "seq": seq, "source": raw["source"] or f"row {seq}"})
    return table_of(rows)


def _row(raw: dict[str, Any]) -> Row:
    path = raw.get("path")
    if isinstance(path, str):
        path = os.fsencode(path)
    given = raw.get("id")
    metadata = {k: v for k, v in raw.items() if k not in _KNOWN and v is not None}
    ref = raw.get("image_ref") or (image_ref_of(os.fsdecode(path)) if path is not None else None)
    source = os.fsdecode(path) if path is not None else (str(given) if given is not None else None)
    return {
        "seq": 0,  # numbered next
        "source": source,
        "path": None if path is None else os.fsencode(os.path.abspath(os.fsdecode(path))),
        "given_id": None if given is None else str(given),
        "metadata": json.dumps(metadata, default=str) if metadata else None,
        "image_ref": ref,
        "data": raw.get("bytes"),
    }
