"""An ordered, bounded parallel map: work runs ahead of its consumer, but never far ahead."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[R]:
    """``map(fn, items)`` on ``pool`` with at most ``window`` calls in flight or finished-but-unread,
    results in input order. Unlike ``Executor.map`` it does not submit the whole input up front, so
    memory stays flat on a million items. Exceptions from ``fn`` are re-raised when their turn comes."""
    pending: deque[Future[R]] = deque()
    iterator = iter(items)
    try:
        for item in iterator:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # the consumer stopped early: do not leave work running
            future.cancel()
