"""The SQLite side of a LocalStore: schema, the committed state, and chunked id look-ups.

``docs`` holds the live documents only; ``docs.row`` is the document's row in the vectors file.
``state`` holds ``generation`` (which vectors file), ``rows`` (rows of that file that are committed:
anything past them is an interrupted append) and ``live`` (documents in ``docs``). Rows below
``rows`` that no document points at are garbage left by overwrites and deletes; ``compact()``
reclaims them. Every change of the store changes (generation, rows, live), which readers use as
the version of what they have cached.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StoreError

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
        conn.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        conn.executemany("INSERT OR IGNORE INTO state VALUES (?, 0)", [("generation",), ("rows",), ("live",)])


def create_docs_table(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {name} (row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
        "image_ref TEXT, metadata TEXT NOT NULL)"
    )


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
        rows += [r[0] for r in conn.execute(f"SELECT row FROM docs WHERE id IN ({marks})", part)]
        conn.execute(f"DELETE FROM docs WHERE id IN ({marks})", part)
    return rows


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
    conn.execute(
        "INSERT INTO docs_compacted (row, id, image_ref, metadata) "
        "SELECT ROW_NUMBER() OVER (ORDER BY row) - 1, id, image_ref, metadata FROM docs"
    )
    conn.execute("DROP TABLE docs")
    conn.execute("ALTER TABLE docs_compacted RENAME TO docs")
