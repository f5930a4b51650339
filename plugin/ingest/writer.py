"""The store writer of an ingest: batches written on their own thread, each outcome to the ledger."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import Any

from ...errors import GemsearchError, StoreError
from ...protocols import Outcome, Record, VectorStore
from .claims import Claims
from .ledger import Ledger
from .report import Fate

log = logging.getLogger(__name__)
ABORT_WAIT_S = 5.0  # on Ctrl-C/SIGTERM; what is not acknowledged by then is recorded pending

Batch = list[tuple[Record, int]]  # records with the ledger seq of their input


class StoreWriter:
    """Writes record batches on its own thread; the bounded queue makes embedding wait for a slow
    store instead of piling up vectors. The first store error stops the run. Ids the store rejects
    are released (another input with that id may still be good)."""

    def __init__(
        self, store: VectorStore, ledger: Ledger, batch: int, claims: Claims[Any] | None = None
    ) -> None:
        self.store, self.ledger, self.batch = store, ledger, batch
        self.claims = claims
        self.error: GemsearchError | None = None
        self._aborted = False
        self._buffer: Batch = []
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self._wrote = False
        self._thread = threading.Thread(target=self._loop, name="gemsearch-writer", daemon=True)
        self._thread.start()

    def put(self, records: Batch) -> None:
        if self.error is not None:
            raise self.error
        self._buffer.extend(records)
        if len(self._buffer) >= self.batch:
            self._queue.put(self._buffer)
            self._buffer = []

    def needs_refresh(self) -> None:
        """Something was written besides the batches (metadata updates): refresh when closing."""
        self._wrote = True

    def drain(self) -> None:
        """Write what is buffered and wait until every queued batch has its outcome."""
        if self._buffer:
            self._queue.put(self._buffer)
            self._buffer = []
        self._queue.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """The run is stopping: batches not yet written are left pending, not written."""
        self._aborted = True
        self._buffer = []

    def close(self) -> None:
        if self._aborted:  # stopping: wait a moment for the write in flight, not its retries
            with contextlib.suppress(queue.Empty):
                while True:  # batches not started stay unwritten (the ledger records them pending)
                    self._queue.get_nowait()
                    self._queue.task_done()
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(ABORT_WAIT_S)
            return
        if self._buffer:
            self._queue.put(self._buffer)
            self._buffer = []
        self._queue.put(None)
        self._thread.join()
        if self._wrote and self.error is None and not self._aborted:
            try:
                self.store.refresh()
            except StoreError as exc:  # durable already; only visibility waits for the next refresh
                log.warning("final refresh failed: %s", exc)

    def _loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                if self.error is None and not self._aborted:
                    self._write_batch(batch)
            finally:
                self._queue.task_done()  # left-over inputs get their pending line from the ledger
        self._queue.task_done()

    def _write_batch(self, batch: Batch) -> None:
        try:
            self._write(batch)
        except GemsearchError as exc:
            self.error = exc
        except BaseException as exc:  # a store bug must not hang the pipeline: stop it with the cause
            self.error = StoreError(f"writing to the store failed: {exc!r}")

    def _write(self, batch: Batch) -> None:
        self._wrote = True
        outcome = self.store.write([r for r, _ in batch], refresh=False)
        seq_of = {r.id: seq for r, seq in batch}
        for item in outcome.items:
            fate = _FATES[item.outcome]
            if item.id in seq_of:
                self.ledger.record(seq_of.pop(item.id), item.id, fate, item.reason)
            if fate is Fate.REJECTED and self.claims is not None:
                self.claims.release(item.id)
        if not outcome.complete or seq_of:
            raise StoreError(
                f"the cluster did not acknowledge {outcome.counts()['pending'] + len(seq_of)} documents "
                "after retrying; stopping (rerun the same command to resume)"
            )


_FATES = {Outcome.INDEXED: Fate.INDEXED, Outcome.REJECTED: Fate.REJECTED, Outcome.PENDING: Fate.PENDING}
