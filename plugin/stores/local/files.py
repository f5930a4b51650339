"""The files of a LocalStore folder: the manifest record, the writer's lock and the vectors file.

Folder layout::

    store.json          format, dimension and the manifest of the model the folder was made for
    docs.sqlite         ids, image refs, metadata and each document's row in the vectors file (WAL)
    vectors.<gen>.f32   float32 rows, row-major (rows, dim); <gen> changes when compact() rewrites it
    write.lock          flock'ed by the one process allowed to write
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ....errors import StoreError
from ....files import atomic_write
from ....files import fsync_dir as fsync_dir
from ....manifest import ModelManifest
from ....preprocess import DecodeMode
from ....protocols import FloatRows

log = logging.getLogger(__name__)

FORMAT = 1
STORE_JSON = "store.json"
DB_NAME = "docs.sqlite"
LOCK_NAME = "write.lock"
ROW_DTYPE = np.dtype("<f4")
OUR_NAMES = (STORE_JSON, DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", f"{DB_NAME}-journal", LOCK_NAME)


def vectors_path(folder: Path, generation: int) -> Path:
    return folder / f"vectors.{generation}.f32"


def is_ours(name: str) -> bool:
    vectors = name.startswith("vectors.") and name.endswith(".f32")
    left_by_a_killed_write = name.startswith(f".{STORE_JSON}.") and name.endswith(".part")
    return name in OUR_NAMES or vectors or left_by_a_killed_write


def read_store_json(folder: Path) -> tuple[int, ModelManifest, DecodeMode] | None:
    """``(dim, manifest, decode mode)`` of the folder, or None when it holds no store yet (a store
    made before the decode mode was recorded was made with exact decoding, the only one then)."""
    path = folder / STORE_JSON
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise StoreError(f"{path}: store format {data.get('format')!r} is not supported ({FORMAT} is)")
        decode: DecodeMode = "draft" if data.get("decode") == "draft" else "exact"
        return int(data["dim"]), ModelManifest.model_validate(data["manifest"]), decode
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:  # JSON and pydantic errors are ValueErrors
        raise StoreError(f"{path} is damaged: {exc}") from exc


def write_store_json(folder: Path, manifest: ModelManifest, decode: DecodeMode) -> None:
    """Atomically: a reader sees either no store.json or a complete one."""
    data = {
        "format": FORMAT,
        "dim": manifest.output_dim,
        "manifest": manifest.model_dump(mode="json"),
        "decode": decode,
    }
    atomic_write(folder / STORE_JSON, lambda tmp: tmp.write_text(json.dumps(data, indent=2)), durable=True)


def take_write_lock(folder: Path) -> int:
    """flock the folder's lock file for this process; a clear StoreError when another writer holds it."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StoreError(
                f"{folder} is being written by another process or store object (pid {holder}); "
                "one writer at a time — open it with read_only=True to search meanwhile"
            ) from exc
        raise StoreError(f"cannot lock {folder / LOCK_NAME}: {exc}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def release_write_lock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class VectorFile:
    """Durable appends of float32 rows to one file, opened by the writer only."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.row_bytes = dim * ROW_DTYPE.itemsize
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def write_rows(self, start_row: int, rows: FloatRows, sync: bool = True) -> None:
        """Write ``(m, dim)`` rows at ``start_row`` and fsync: on disk before anything points at them."""
        data = np.ascontiguousarray(rows, dtype=ROW_DTYPE).data.cast("B")
        offset = start_row * self.row_bytes
        while data:
            written = os.pwrite(self._fd, data, offset)
            data, offset = data[written:], offset + written
        if sync:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._fd)

    def truncate(self, rows: int) -> None:
        os.ftruncate(self._fd, rows * self.row_bytes)
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


def repair_vectors(path: Path, dim: int, committed_rows: int) -> None:
    """Cut the file back to its committed rows (drops a torn or uncommitted append); refuse missing rows."""
    row_bytes = dim * ROW_DTYPE.itemsize
    size = path.stat().st_size if path.exists() else 0
    want = committed_rows * row_bytes
    if size < want:
        raise StoreError(
            f"{path} holds {size // row_bytes} rows but the index references {committed_rows}: "
            "the store folder is damaged (rebuild it by ingesting again)"
        )
    if size > want:
        log.warning("%s: discarding %d bytes of an interrupted write", path, size - want)
        vf = VectorFile(path, dim)
        try:
            vf.truncate(committed_rows)
        finally:
            vf.close()


def remove_other_generations(folder: Path, generation: int) -> None:
    """Delete vectors files left by an interrupted or finished compaction."""
    keep = vectors_path(folder, generation).name
    for path in folder.glob("vectors.*.f32"):
        if path.name != keep:
            log.info("removing stale %s", path)
            path.unlink()


def map_rows(path: Path, rows: int, dim: int) -> FloatRows:
    """The first ``rows`` rows of the file, memory-mapped read-only: ``(rows, dim)`` float32."""
    if rows == 0:
        return np.empty((0, dim), dtype=np.float32)
    size = path.stat().st_size
    if size < rows * dim * ROW_DTYPE.itemsize:
        raise StoreError(f"{path} is shorter than the {rows} rows the index references: the store is damaged")
    return np.memmap(path, dtype=ROW_DTYPE, mode="r", shape=(rows, dim))
