"""Which document ids an ingest run has taken, so that a failure never claims an id."""

from __future__ import annotations

import threading
from typing import Generic, Protocol, TypeVar


class _Numbered(Protocol):
    @property
    def seq(self) -> int: ...


T = TypeVar("T", bound=_Numbered)


class Claims(Generic[T]):
    """The ids taken in this run. The first input with an id takes it; a later one with the same id
    waits until the first one's fate is known: if that failed (or the store rejected it) the id is
    released and a waiting input gets its turn in the next round, so a failure never claims an id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[str] = set()
        self._waiting: dict[str, list[T]] = {}

    def take(self, doc_id: str, inp: T) -> bool:
        with self._lock:
            if doc_id in self._taken:
                self._waiting.setdefault(doc_id, []).append(inp)
                return False
            self._taken.add(doc_id)
            return True

    def release(self, doc_id: str) -> None:
        with self._lock:
            self._taken.discard(doc_id)

    def settle(self) -> tuple[list[T], list[T]]:
        """After a round: (inputs to retry, as their id was released; duplicates of a stored id)."""
        with self._lock:
            retry: list[T] = []
            duplicates: list[T] = []
            for doc_id, waiting in self._waiting.items():
                (duplicates if doc_id in self._taken else retry).extend(waiting)
            self._waiting.clear()
            return sorted(retry, key=lambda i: i.seq), duplicates
