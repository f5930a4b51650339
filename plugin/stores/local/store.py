"""LocalStore: the embedded default VectorStore — one folder, SQLite for documents, a float32 file
of vectors, exact inner-product search.

Crash safety: an upsert appends its vectors to the file and fsyncs them, THEN commits the SQLite
rows that point at them (WAL, synchronous=FULL). Once ``upsert`` returns the batch survives a
killed process or a power cut; if it is interrupted, the batch is absent as a whole and the torn
append past the committed rows is cut off when a writer next opens the folder.

Overwrite semantics: upserting an existing id writes a new row and drops the old one (garbage);
``delete`` drops documents the same way. ``compact()`` rewrites the file without garbage rows.
Search is exact: every live row is scored, chunk by chunk over the memory-mapped file, so memory
stays flat; equal scores are ordered by row, i.e. the earlier-written first. Metadata filters are
answered from an index of the flattened metadata values (``_local_filters``) and restrict the rows
that are scored, before ranking.

One writer per folder (an flock on ``write.lock``, taken by the first ensure_index/upsert/delete/
compact and held until ``close()``; a second writer gets a StoreError at once). Any number of
readers, in other processes too (``read_only=True``, or a store that only searches), see each
commit at their next call; each call reads one consistent snapshot.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from ....errors import StoreError
from ....manifest import ModelManifest
from ....preprocess import DEFAULT_DECODE, DecodeMode, decode_mismatch
from ....protocols import Filters, FloatRows, Hit, ItemOutcome, Outcome, Record, WriteReport
from . import db, files
from .checks import (
    check_same_model,
    merged_metadata,
    metadata_json,
    metadata_updates,
    prepare_batch,
    query_vector,
)
from .filters import compile_filters, field_kinds, flatten
from .filters import known_fields as fields_with_values
from .view import View, ViewCache

log = logging.getLogger(__name__)
T = TypeVar("T")


class LocalStore:
    """The VectorStore of one folder. ``chunk_rows`` rows are scored at a time (memory stays flat)."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False, chunk_rows: int = 65536):
        self.path = Path(path)
        self.read_only = read_only
        self._chunk_rows = chunk_rows
        self._mutex = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._manifest: ModelManifest | None = None
        self._dim = 0
        self._lock_fd: int | None = None
        self._vectors: files.VectorFile | None = None
        self._ensured = False
        self._views: ViewCache | None = None
        self._decode: DecodeMode | None = None
        found = files.read_store_json(self.path)
        if found is not None:
            self._dim, self._manifest, self._decode = found
            self._views = ViewCache(self.path, self._dim)
            self._conn = db.connect(self.path / files.DB_NAME, create=False)
        elif read_only:
            raise StoreError(f"there is no LocalStore in {self.path} (no {files.STORE_JSON})")

    @property
    def manifest(self) -> ModelManifest | None:
        """The manifest of the model this folder was created for (None before ensure_index)."""
        return self._manifest

    @property
    def decode(self) -> DecodeMode | None:
        """How the images of the folder's descriptors were decoded (None before ``ensure_index``)."""
        return self._decode

    @property
    def dead_letter_path(self) -> Path | None:
        """None: a LocalStore refuses a whole batch (StoreError), never single documents."""
        return None

    # --- writing -------------------------------------------------------------------------------

    def ensure_index(self, manifest: ModelManifest, *, decode: DecodeMode = DEFAULT_DECODE) -> None:
        """Create the store for this model and decode mode, or check that the folder was made for the
        same model and mode."""
        with self._mutex:
            if self._manifest is None:
                self._create(manifest, decode)
            assert self._manifest is not None and self._decode is not None
            check_same_model(self.path, self._manifest, manifest)
            if self._decode != decode:
                raise StoreError(f"{self.path}: refusing to write: {decode_mismatch(self._decode, decode)}")
            self._become_writer()
            self._ensured = True

    def upsert(self, records: Sequence[Record]) -> None:
        """Write a batch durably (all or nothing); an existing id is overwritten."""
        with self._mutex:
            if not self._ensured:
                raise StoreError(f"{self.path}: call ensure_index(manifest) before upsert")
            batch = prepare_batch(records, self._dim)
            if not batch.ids:
                return
            conn, vectors = self._writer()
            old = db.read_state(conn)
            vectors.write_rows(old.rows, batch.vectors)  # durable before any row points at it
            try:
                with db.transaction(conn):
                    dead = db.delete_ids(conn, batch.ids)
                    db.insert_docs(conn, old.rows, batch.docs())
                    n = len(batch.ids)
                    new = db.State(old.generation, old.rows + n, old.live - len(dead) + n)
                    db.write_state(conn, new)
            except BaseException:
                self._drop_uncommitted(conn, vectors, old.rows)
                raise
            self._cache().after_write(old, new, dead)

    def write(self, records: Iterable[Record], *, refresh: bool | None = None) -> WriteReport:
        """``upsert`` with the store contract's report: every document indexed (or a StoreError)."""
        batch = list(records)
        self.upsert(batch)
        return WriteReport([ItemOutcome(r.id, Outcome.INDEXED, attempts=1) for r in batch], requests=1)

    def update_metadata(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], *, refresh: bool | None = None
    ) -> int:
        """Write metadata fields onto stored documents, vectors untouched: each update merges into
        the stored metadata as an OpenSearch partial update does (objects field by field, other
        values replaced), and the document's filter terms are rebuilt; one transaction for the
        batch. Ids not in the store are left out; returns how many documents were updated."""
        updates = metadata_updates(items)
        with self._mutex:
            conn, _ = self._writer()
            with db.transaction(conn):
                stored = db.metadata_by_id(conn, list(updates))
                docs = []
                for doc_id, (row, old_json) in stored.items():
                    merged = merged_metadata(json.loads(old_json), updates[doc_id])
                    docs.append((row, metadata_json(doc_id, merged), flatten(merged)))
                db.replace_metadata(conn, docs)
            return len(docs)

    def refresh(self) -> None:
        """Nothing to do: a commit is visible to the next read."""

    def bulk_load(self) -> contextlib.AbstractContextManager[None]:
        """Nothing to change for a long load: each batch is one durable commit."""
        return contextlib.nullcontext()

    def delete(self, ids: Iterable[str]) -> int:
        """Delete these documents; the number that existed."""
        wanted = _id_list(ids)
        with self._mutex:
            conn, _ = self._writer()
            with db.transaction(conn):
                old = db.read_state(conn)
                dead = db.delete_ids(conn, wanted)
                new = db.State(old.generation, old.rows, old.live - len(dead))
                db.write_state(conn, new)
            self._cache().after_write(old, new, dead)
            return len(dead)

    def compact(self) -> int:
        """Rewrite the vectors file without garbage rows; the number of rows reclaimed."""
        with self._mutex:
            conn, vectors = self._writer()
            old = db.read_state(conn)
            if old.live == old.rows:
                return 0
            path = files.vectors_path(self.path, old.generation + 1)
            fresh = files.VectorFile(path, self._dim)
            try:
                self._copy_live_rows(conn, old, fresh)
                with db.transaction(conn):
                    db.renumber_docs(conn)
                    db.write_state(conn, db.State(old.generation + 1, old.live, old.live))
            except BaseException:
                fresh.close()
                if db.read_state(conn).generation == old.generation:
                    path.unlink(missing_ok=True)
                raise
            vectors.close()
            self._vectors = fresh
            self._cache().reset()
            files.remove_other_generations(self.path, old.generation + 1)
            log.info("%s: compacted %d garbage rows", self.path, old.rows - old.live)
            return old.rows - old.live

    # --- reading -------------------------------------------------------------------------------

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        with self._mutex:
            return db.existing(self._connection(), _id_list(ids))

    def count(self, filters: Filters | None = None) -> int:
        """Live documents; with ``filters``, those that match them."""
        if filters:
            queries = compile_filters(filters)
            return self._read(lambda conn, _view: int(db.matching_rows(conn, queries).shape[0]))
        with self._mutex:
            return db.read_state(self._connection()).live

    def ids_matching(self, filters: Filters | None = None) -> Iterator[str]:
        """The ids of the documents matching ``filters`` (all of them without), in row order, from
        one snapshot: later writes neither add ids to nor take ids from the sequence."""
        queries = compile_filters(filters)

        def read(conn: sqlite3.Connection, _view: View) -> list[str]:
            if not queries:
                return [doc_id for (doc_id,) in conn.execute("SELECT id FROM docs ORDER BY row")]
            rows = db.matching_rows(conn, queries).tolist()
            by_row = db.docs_by_row(conn, rows)
            return [by_row[r][0] for r in rows if r in by_row]

        return iter(self._read(read))

    def known_fields(self, fields: Iterable[str]) -> set[str]:
        """Those of ``fields`` the filter index holds a value for."""
        with self._mutex:
            return fields_with_values(self._connection(), fields)

    def metadata_fields(self) -> dict[str, list[str]]:
        """Every field the filter index holds a value for, with the kinds of its values."""
        with self._mutex:
            return field_kinds(self._connection())

    def get(self, doc_id: str) -> Record | None:
        def read(conn: sqlite3.Connection, view: View) -> Record | None:
            sql = "SELECT row, image_ref, metadata FROM docs WHERE id = ?"
            found = conn.execute(sql, (doc_id,)).fetchone()
            if found is None:
                return None
            vector = np.array(view.matrix[found[0]], dtype=np.float32)
            return Record(id=doc_id, vector=vector, image_ref=found[1], metadata=json.loads(found[2]))

        return self._read(read)

    def search(self, vector: FloatRows, k: int = 10, filters: Filters | None = None) -> list[Hit]:
        """The ``k`` documents with the largest inner product with ``vector`` ``(d,)``, best first.

        Filters select the candidates before ranking (see ``_local_filters`` for their semantics).
        """
        if k < 1:
            raise StoreError(f"k must be at least 1, got {k}")
        queries = compile_filters(filters)

        def read(conn: sqlite3.Connection, view: View) -> list[Hit]:
            query = query_vector(vector, self._dim)
            candidates = db.matching_rows(conn, queries) if queries else None
            scores, top = view.rank(query, k, candidates, self._chunk_rows)
            docs = db.docs_by_row(conn, top.tolist())
            return [
                Hit(id=docs[r][0], score=float(s), image_ref=docs[r][1], metadata=json.loads(docs[r][2]))
                for s, r in zip(scores.tolist(), top.tolist(), strict=True)
            ]

        return self._read(read)

    # --- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database and files and release the write lock. Idempotent."""
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
            if self._vectors is not None:
                self._vectors.close()
            if self._lock_fd is not None:
                files.release_write_lock(self._lock_fd)
            self._conn, self._vectors, self._lock_fd = None, None, None
            if self._views is not None:
                self._views.reset()
            self._ensured = False

    def __enter__(self) -> LocalStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------------

    def _create(self, manifest: ModelManifest, decode: DecodeMode) -> None:
        if self.read_only:
            raise StoreError(f"there is no LocalStore in {self.path}, and this one is read-only")
        self.path.mkdir(parents=True, exist_ok=True)
        foreign = sorted(n for n in os.listdir(self.path) if not files.is_ours(n))
        if foreign:  # checked before anything is written: a folder of photos stays untouched
            raise StoreError(
                f"{self.path} is not empty and not a LocalStore (it holds {', '.join(foreign[:3])}); "
                "use an empty or new folder"
            )
        self._become_writer(creating=True)
        found = files.read_store_json(self.path)  # another process may have created it meanwhile
        if found is None:
            db.create_schema(self._connection())
            files.VectorFile(files.vectors_path(self.path, 0), manifest.output_dim).close()
            files.write_store_json(self.path, manifest, decode)  # last: its presence means "store complete"
            found = (manifest.output_dim, manifest, decode)
        self._dim, self._manifest, self._decode = found
        self._views = ViewCache(self.path, self._dim)

    def _become_writer(self, creating: bool = False) -> None:
        """Take the folder's write lock and repair what an interrupted writer left behind."""
        if self.read_only:
            raise StoreError(f"{self.path} was opened read-only")
        if self._lock_fd is None:
            self._lock_fd = files.take_write_lock(self.path)
        if self._conn is None:
            self._conn = db.connect(self.path / files.DB_NAME, create=True)
        if creating or self._vectors is not None:
            return
        state = db.read_state(self._conn)
        files.remove_other_generations(self.path, state.generation)
        path = files.vectors_path(self.path, state.generation)
        files.repair_vectors(path, self._dim, state.rows)
        self._vectors = files.VectorFile(path, self._dim)
        self._cache().reset()

    def _writer(self) -> tuple[sqlite3.Connection, files.VectorFile]:
        if self._manifest is None:
            raise StoreError(f"{self.path}: there is no store here yet; call ensure_index(manifest) first")
        self._become_writer()
        assert self._vectors is not None
        return self._connection(), self._vectors

    def _cache(self) -> ViewCache:
        if self._views is None:
            raise StoreError(f"{self.path}: there is no store here yet; call ensure_index(manifest) first")
        return self._views

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the store is closed or was never created (call ensure_index)")
        return self._conn

    def _drop_uncommitted(self, conn: sqlite3.Connection, vectors: files.VectorFile, rows: int) -> None:
        """After a failed commit, cut the appended rows (only if the commit really did not happen)."""
        try:
            if db.read_state(conn).rows == rows:
                vectors.truncate(rows)
        except (sqlite3.Error, OSError) as exc:  # the next writer's repair cuts them instead
            log.warning("%s: could not cut an uncommitted append: %s", self.path, exc)

    def _copy_live_rows(self, conn: sqlite3.Connection, state: db.State, out: files.VectorFile) -> None:
        matrix = files.map_rows(files.vectors_path(self.path, state.generation), state.rows, self._dim)
        rows = np.fromiter((r for (r,) in conn.execute("SELECT row FROM docs ORDER BY row")), dtype=np.int64)
        for start in range(0, rows.shape[0], self._chunk_rows):
            out.write_rows(start, matrix[rows[start : start + self._chunk_rows]], sync=False)
        out.sync()
        files.fsync_dir(self.path)

    def _read(self, fn: Callable[[sqlite3.Connection, View], T]) -> T:
        """Run ``fn`` on one consistent snapshot of the database and the vectors it points at."""
        with self._mutex:
            conn = self._connection()
            for attempt in range(3):
                try:
                    with db.transaction(conn, "DEFERRED"):
                        return fn(conn, self._cache().current(conn))
                except FileNotFoundError:  # a compaction replaced the file under our snapshot
                    self._cache().reset()
                    if attempt == 2:
                        raise StoreError(f"{self.path}: the vectors file keeps disappearing") from None
            raise AssertionError("unreachable")


def _id_list(ids: Iterable[str]) -> list[str]:
    if isinstance(ids, str):  # a lone id would otherwise be taken as its characters
        raise StoreError(f"pass a list of ids, not the string {ids!r}")
    return list(dict.fromkeys(ids))
