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
        self._doomed: dict[str, str] = {}  # ids whose very bytes failed to decode, with the reason

    def take(self, doc_id: str, inp: T) -> bool:
        with self._lock:
            if doc_id in self._taken:
                self._waiting.setdefault(doc_id, []).append(inp)
                return False
            self._taken.add(doc_id)
            return True

    def release(self, doc_id: str, same_bytes_fail: str | None = None) -> None:
        """The input that took ``doc_id`` failed; ``same_bytes_fail`` (its reason) when the id is the
        hash of the bytes that failed to decode: every input waiting for it fails the same way."""
        with self._lock:
            self._taken.discard(doc_id)
            if same_bytes_fail is not None:
                self._doomed[doc_id] = same_bytes_fail

    def settle(self) -> tuple[list[T], list[T], list[tuple[T, str, str]]]:
        """After a round: (the first input waiting for each released id, to retry in the next round;
        duplicates of a stored id; (input, id, reason) of the inputs whose identical bytes failed).
        The other inputs waiting for a released id keep waiting for the retried one's fate."""
        with self._lock:
            retry: list[T] = []
            duplicates: list[T] = []
            failed: list[tuple[T, str, str]] = []
            for doc_id, waiting in list(self._waiting.items()):
                if doc_id in self._taken:
                    duplicates.extend(waiting)
                elif doc_id in self._doomed:
                    failed.extend((inp, doc_id, self._doomed[doc_id]) for inp in waiting)
                else:
                    retry.append(waiting.pop(0))
                    if waiting:
                        continue
                del self._waiting[doc_id]
            return sorted(retry, key=lambda i: i.seq), duplicates, failed
