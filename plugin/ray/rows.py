"""The rows that flow between the Ray stages: one Arrow schema, every column typed explicitly.

A row is one input. Stages fill columns and clear the heavy ones they consumed (file bytes after
decoding, pixels after embedding, the vector after writing), so the object store holds each
input's data once. A row with ``fate`` set is finished: later stages pass it through unchanged and
the driver records it. Paths travel as the bytes the file system uses (any name works).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ...errors import SourceError
from ...image_refs import image_ref_of, printable_path
from ..inputs.items import SourceItem

Row = dict[str, Any]

SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),  # the input's number in this run (its ledger key)
        ("source", pa.string()),  # how the ledger and messages name it
        ("path", pa.binary()),  # os.fsencode of the file's path; None for images given as bytes
        ("root", pa.binary()),  # the folder the file must stay inside
        ("given_id", pa.string()),  # the id a manifest gave
        ("metadata", pa.string()),  # JSON object
        ("image_ref", pa.string()),
        ("data", pa.binary()),  # the file's bytes, between reading and decoding
        ("doc_id", pa.string()),
        ("pixels", pa.binary()),  # the prepared (3, h, w) array, between decoding and embedding
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("dtype", pa.string()),
        ("vector", pa.binary()),  # float32 descriptor, between embedding and writing
        ("fate", pa.string()),  # a Fate value, or "waiting" (an earlier input holds the id)
        ("reason", pa.string()),
        ("message", pa.string()),
        ("of_bytes", pa.bool_()),  # the bytes themselves failed to decode (identical bytes fail too)
        ("holder", pa.int64()),  # for "waiting": the seq of the input that holds the id
    ]
)
_EMPTY: Row = dict.fromkeys(SCHEMA.names)
RESULT_COLUMNS = ("seq", "source", "path", "root", "given_id", "metadata", "image_ref", "doc_id")


def table_of(rows: Sequence[Row]) -> pa.Table:
    return pa.Table.from_pylist([{**_EMPTY, **row} for row in rows], schema=SCHEMA)


def rows_of(table: pa.Table) -> list[Row]:
    """The rows of a batch, every column present (a batch from a user's dataset may lack some)."""
    return [{**_EMPTY, **row} for row in table.to_pylist()]


def finished(row: Row, fate: str, reason: str | None, message: str | None = None, **more: Any) -> Row:
    """``row`` with its final fate, the heavy columns dropped."""
    return {**row, "data": None, "pixels": None, "vector": None, "fate": fate, "reason": reason,
            "message": message, **more}  # fmt: skip


def row_of_entry(seq: int, entry: SourceItem | SourceError) -> Row:
    """A listing row for one entry of our sources; a source's problem arrives finished."""
    if isinstance(entry, SourceError):
        fate = "skipped" if entry.skipped else "failed"
        return finished({"seq": seq, "source": str(entry.origin or entry)}, fate, entry.reason, str(entry))
    path = entry.path
    content = getattr(entry, "content", None)
    return {
        "seq": seq,
        "source": _name(entry),
        "path": None if path is None else os.fsencode(path.absolute()),  # workers have their own cwd
        "root": None if entry.root is None else os.fsencode(entry.root),
        "given_id": entry.id,
        "metadata": json.dumps(dict(entry.metadata)) if entry.metadata else None,
        "image_ref": None if path is None else image_ref_of(path),
        "data": content if isinstance(content, bytes) else None,
    }


def _name(entry: SourceItem) -> str:
    return printable_path(entry.path) if entry.path is not None else entry.origin


def file_path(row: Row) -> Path | None:
    return None if row["path"] is None else Path(os.fsdecode(row["path"]))


def metadata_of(row: Row) -> dict[str, Any]:
    return dict(json.loads(row["metadata"])) if row["metadata"] else {}
