"""What a LocalStore search reads, cached between calls: the committed rows mapped, and which are live.

The cache is keyed by the committed state (generation, rows, live), which every commit changes, so
a reader notices another process's writes at its next call; a writer patches it after its own
commits instead of reloading it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ....protocols import FloatRows
from . import db
from .files import map_rows, vectors_path
from .topk import Rows, Scores, top_k_rows, top_k_scan


@dataclass(frozen=True)
class View:
    state: db.State
    matrix: FloatRows  # (state.rows, dim), memory-mapped
    live: npt.NDArray[np.bool_] | None  # None: every row is live (no garbage)

    def rank(self, query: FloatRows, k: int, candidates: Rows | None, chunk_rows: int) -> tuple[Scores, Rows]:
        """Top ``k`` over the live rows, or over ``candidates`` (sorted live rows that passed a filter)."""
        if candidates is None:
            return top_k_scan(self.matrix, query, k, self.live, chunk_rows)
        if candidates.shape[0] * 4 > self.state.rows:  # dense: a masked sequential scan beats a gather
            mask = np.zeros(self.state.rows, dtype=np.bool_)
            mask[candidates] = True
            return top_k_scan(self.matrix, query, k, mask, chunk_rows)
        return top_k_rows(self.matrix, query, k, candidates, chunk_rows)


class ViewCache:
    def __init__(self, folder: Path, dim: int) -> None:
        self._folder = folder
        self._dim = dim
        self._view: View | None = None

    def reset(self) -> None:
        self._view = None

    def current(self, conn: sqlite3.Connection) -> View:
        """The view of the state ``conn`` sees (call inside a read transaction for a stable snapshot).

        Raises FileNotFoundError when a compaction removed the vectors file of that snapshot.
        """
        state = db.read_state(conn)
        view = self._view
        if view is not None and view.state == state and view.matrix.shape[0] == state.rows:
            return view
        if view is None or view.state != state:
            live = None if state.live == state.rows else _load_live(conn, state.rows)
        else:
            live = view.live
        matrix = map_rows(vectors_path(self._folder, state.generation), state.rows, self._dim)
        self._view = View(state, matrix, live)
        return self._view

    def after_write(self, old: db.State, new: db.State, dead: list[int]) -> None:
        """Patch the cache after our own commit from ``old`` to ``new`` that dropped rows ``dead``."""
        view = self._view
        if view is None or view.state != old or new.generation != old.generation:
            self._view = None
            return
        live = None
        if new.live != new.rows:
            live = np.ones(new.rows, dtype=np.bool_)
            if view.live is not None:
                live[: old.rows] = view.live
            live[dead] = False
        self._view = View(new, view.matrix, live)  # current() remaps when rows grew


def _load_live(conn: sqlite3.Connection, rows: int) -> npt.NDArray[np.bool_]:
    live = np.zeros(rows, dtype=np.bool_)
    live[np.fromiter((r for (r,) in conn.execute("SELECT row FROM docs")), dtype=np.int64)] = True
    return live
