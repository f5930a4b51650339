"""The SQLite side of a LocalStore: schema, the committed state, and chunked id look-ups.

``docs`` holds the live documents only; ``docs.row`` is the document's row in the vectors file.
``terms`` indexes their metadata for filters: one (field, kind, value, row) per flattened value.
``state`` holds ``generation`` (which vectors file), ``rows`` (rows of that file that are committed:
anything past them is an interrupted append) and ``live`` (documents in ``docs``). Rows below
``rows`` that no document points at are garbage left by overwrites and deletes; ``compact()``
reclaims them. Every change of the vectors or of which documents are live changes (generation, rows,
live), which readers use as the version of what they have cached (the vectors and the live rows; a
metadata update changes neither, and metadata is always read from ``docs``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ....errors import StoreError

ID_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit


@dataclass(frozen=True)
class State:
    generation: int
    rows: int
    live: int


def connect(path: Path, create: bool) -> sqlite3.Connection:
    mode = "rwc" if create else "rw"
    try:
        conn = sqlite3.connect(
            f"file:{path}?mode={mode}", uri=True, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA busy_timeout = 10000")
        if create:
            conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit that returned survives power loss too, not only a killed process
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    with transaction(conn):
        create_docs_table(conn, "docs")
        create_terms_table(conn, "terms")
        create_terms_row_index(conn)
        conn.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        conn.executemany("INSERT OR IGNORE INTO state VALUES (?, 0)", [("generation",), ("rows",), ("live",)])


def create_docs_table(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {name} (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
        "image_ref TEXT, metadata TEXT NOT NULL)"
    )


def create_terms_table(conn: sqlite3.Connection, name: str) -> None:
    # value has no declared type, so SQLite keeps integers, reals and text as given
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {name} (field TEXT NOT NULL, kind INTEGER NOT NULL, value NOT NULL, "
        "row INTEGER NOT NULL, PRIMARY KEY (field, kind, value, row)) WITHOUT ROWID"
    )


def create_terms_row_index(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE INDEX IF NOT EXISTS terms_by_row ON terms (row)")


@contextmanager
def transaction(conn: sqlite3.Connection, mode: str = "IMMEDIATE") -> Iterator[None]:
    """One transaction (``DEFERRED`` for a consistent read snapshot); sqlite errors become StoreError."""
    try:
        conn.execute(f"BEGIN {mode}")
    except sqlite3.Error as exc:
        raise StoreError(f"the store's database is unavailable: {exc}") from exc
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise StoreError(f"the store's database refused the operation: {exc}") from exc
        raise


def read_state(conn: sqlite3.Connection) -> State:
    values = dict(conn.execute("SELECT key, value FROM state").fetchall())
    return State(values["generation"], values["rows"], values["live"])


def write_state(conn: sqlite3.Connection, state: State) -> None:
    conn.executemany(
        "UPDATE state SET value = ? WHERE key = ?",
        [(state.generation, "generation"), (state.rows, "rows"), (state.live, "live")],
    )


def chunks(items: Sequence[Any], size: int = ID_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def existing(conn: sqlite3.Connection, ids: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for part in chunks(list(dict.fromkeys(ids))):
        marks = ", ".join("?" * len(part))
        found.update(r[0] for r in conn.execute(f"SELECT id FROM docs WHERE id IN ({marks})", part))
    return found


def delete_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> list[int]:
    """Delete these documents; the rows they occupied."""
    rows: list[int] = []
    for part in chunks(ids):
        marks = ", ".join("?" * len(part))
        found = [r[0] for r in conn.execute(f"SELECT row FROM docs WHERE id IN ({marks})", part)]
        conn.execute(f"DELETE FROM docs WHERE id IN ({marks})", part)
        if found:
            conn.execute(f"DELETE FROM terms WHERE row IN ({', '.join('?' * len(found))})", found)
        rows += found
    return rows


def insert_docs(
    conn: sqlite3.Connection,
    first_row: int,
    docs: Iterable[tuple[str, str | None, str, list[tuple[str, int, Any]]]],
) -> None:
    """Insert (id, image_ref, metadata JSON, terms) at rows ``first_row``, ``first_row + 1``, ..."""
    doc_rows, term_rows = [], []
    for row, (doc_id, image_ref, metadata, terms) in enumerate(docs, start=first_row):
        doc_rows.append((row, doc_id, image_ref, metadata))
        term_rows += [(field, kind, value, row) for field, kind, value in terms]
    conn.executemany("INSERT INTO docs (row, id, image_ref, metadata) VALUES (?, ?, ?, ?)", doc_rows)
    conn.executemany("INSERT INTO terms (field, kind, value, row) VALUES (?, ?, ?, ?)", term_rows)


def metadata_by_id(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, tuple[int, str]]:
    """id -> (row, metadata JSON) of the stored documents among ``ids``."""
    out: dict[str, tuple[int, str]] = {}
    for part in chunks(ids):
        marks = ", ".join("?" * len(part))
        sql = f"SELECT id, row, metadata FROM docs WHERE id IN ({marks})"
        out.update((r[0], (r[1], r[2])) for r in conn.execute(sql, part))
    return out


def replace_metadata(
    conn: sqlite3.Connection, docs: Sequence[tuple[int, str, list[tuple[str, int, Any]]]]
) -> None:
    """Give the documents at these rows new metadata (row, metadata JSON, terms), terms included."""
    conn.executemany("UPDATE docs SET metadata = ? WHERE row = ?", [(meta, row) for row, meta, _ in docs])
    for part in chunks([row for row, _, _ in docs]):
        conn.execute(f"DELETE FROM terms WHERE row IN ({', '.join('?' * len(part))})", part)
    term_rows = [(field, kind, value, row) for row, _, terms in docs for field, kind, value in terms]
    conn.executemany("INSERT INTO terms (field, kind, value, row) VALUES (?, ?, ?, ?)", term_rows)


def matching_rows(conn: sqlite3.Connection, queries: list[tuple[str, list[Any]]]) -> npt.NDArray[np.int64]:
    """Sorted rows matching every query (each selects ``row``); stops early once nothing is left."""
    result: npt.NDArray[np.int64] | None = None
    for sql, params in queries:
        rows = np.unique(np.fromiter((r for (r,) in conn.execute(sql, params)), dtype=np.int64))
        result = rows if result is None else np.intersect1d(result, rows, assume_unique=True)
        if result.shape[0] == 0:
            break
    return np.empty(0, dtype=np.int64) if result is None else result


def docs_by_row(conn: sqlite3.Connection, rows: Sequence[int]) -> dict[int, tuple[str, str | None, str]]:
    """row -> (id, image_ref, metadata JSON)."""
    out: dict[int, tuple[str, str | None, str]] = {}
    for part in chunks(rows):
        marks = ", ".join("?" * len(part))
        sql = f"SELECT row, id, image_ref, metadata FROM docs WHERE row IN ({marks})"
        out.update((r[0], (r[1], r[2], r[3])) for r in conn.execute(sql, part))
    return out


def renumber_docs(conn: sqlite3.Connection) -> None:
    """Give the live documents rows 0..live-1 in their current row order (compaction)."""
    create_docs_table(conn, "docs_compacted")
    create_terms_table(conn, "terms_compacted")
    conn.execute("CREATE TEMP TABLE renumbered (old INTEGER PRIMARY KEY, new INTEGER NOT NULL)")
    conn.execute("INSERT INTO renumbered SELECT row, ROW_NUMBER() OVER (ORDER BY row) - 1 FROM docs")
    conn.execute(
        "INSERT INTO docs_compacted (row, id, image_ref, metadata) "
        "SELECT r.new, d.id, d.image_ref, d.metadata FROM docs d JOIN renumbered r ON d.row = r.old"
    )
    conn.execute(
        "INSERT INTO terms_compacted (field, kind, value, row) "
        "SELECT t.field, t.kind, t.value, r.new FROM terms t JOIN renumbered r ON t.row = r.old"
    )
    for table in ("docs", "terms"):
        conn.execute(f"DROP TABLE {table}")
        conn.execute(f"ALTER TABLE {table}_compacted RENAME TO {table}")
    create_terms_row_index(conn)  # built once, after the bulk insert
    conn.execute("DROP TABLE temp.renumbered")
