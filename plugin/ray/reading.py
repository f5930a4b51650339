"""Stage 1 (Ray tasks): read each file, hash it into its id, and pass the gate before any decoding."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from ...errors import ImageError
from ..inputs.images import ImageLoadConfig, read_image_file
from ..inputs.items import doc_id_for
from .gate import FRESH, PRESENT
from .rows import Row, file_path, finished, rows_of, table_of


def read_batch(table: pa.Table, *, image: ImageLoadConfig, gate: Any) -> pa.Table:
    """Read the batch's files; ask the gate (one call per batch) which ids still need embedding."""
    import ray

    rows = [row if row["fate"] is not None else _read(row, image) for row in rows_of(table)]
    todo = [row for row in rows if row["fate"] is None]
    if todo:
        verdicts = ray.get(gate.admit.remote([r["doc_id"] for r in todo], [r["seq"] for r in todo]))
        for row, verdict in zip(todo, verdicts, strict=True):
            if verdict == PRESENT:
                row.update(finished(row, "skipped", "present"))
            elif verdict != FRESH:
                row.update(finished(row, "waiting", None, holder=verdict))
    return table_of(rows)


def _read(row: Row, cfg: ImageLoadConfig) -> Row:
    data = row["data"]
    if data is None:
        path = file_path(row)
        if path is None:
            return finished(row, "failed", "empty", f"{row['source']}: no path and no image bytes")
        roots = [Path(os.fsdecode(row["root"]))] if row["root"] is not None else None
        try:
            data = read_image_file(path, cfg, roots)
        except ImageError as exc:
            return finished(row, "failed", exc.reason, str(exc))
        except (OSError, ValueError) as exc:  # whatever the OS says about one file is that file's failure
            return finished(row, "failed", "unreadable", f"{row['source']}: {exc}")
    return {**row, "data": data, "doc_id": row["given_id"] or doc_id_for(data)}
