"""The ledger of an ingest run: one line per input read, with its fate, flushed as written."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

from ...errors import GemsearchError
from .report import Fate, IngestReport

log = logging.getLogger(__name__)


class Ledger:
    """Records each input's fate once, in the report and, if a path is given, as a JSONL line
    ``{"source", "id", "fate", "reason"}`` flushed as written (a killed run keeps every line).

    Every input is ``open``-ed when read and gets exactly one line: a second record for the same
    input is ignored (and logged), and ``close_open`` gives whatever is still open its final line
    when a run stops early. Thread-safe (the store writer reports from its thread).

    Progress: ``on_done(n)`` counts each input once, when it is ``embedded`` or, if it never is, when
    it gets its line; ``on_written(n)`` counts the embedded inputs the store answered for (indexed or
    rejected)."""

    def __init__(
        self,
        report: IngestReport,
        path: Path | None = None,
        on_done: Callable[[int], object] | None = None,
        on_written: Callable[[int], object] | None = None,
    ) -> None:
        self.report = report
        self._lock = threading.Lock()
        self._open: dict[int, str] = {}
        self._embedded: set[int] = set()  # open inputs already counted as done
        self._on_done = on_done or (lambda n: None)
        self._on_written = on_written or (lambda n: None)
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
            report.ledger_path = path

    def open(self, seq: int, source: str) -> None:
        """Input ``seq`` was read from ``source``; it now owes the ledger one line."""
        with self._lock:
            self._open[seq] = source

    def embedded(self, seqs: list[int]) -> None:
        """These open inputs were embedded: done for the progress count, waiting for the store."""
        with self._lock:
            fresh = [s for s in seqs if s in self._open and s not in self._embedded]
            self._embedded.update(fresh)
        if fresh:
            self._on_done(len(fresh))

    def record(self, seq: int, doc_id: str | None, fate: Fate, reason: str | None = None) -> None:
        with self._lock:
            source = self._open.pop(seq, None)
            was_embedded = seq in self._embedded
            self._embedded.discard(seq)
            try:  # a KeyboardInterrupt landing here still leaves the line written
                pass
            finally:
                if source is not None:
                    self._write(source, doc_id, fate, reason)
            if source is None:
                log.warning("input %d has its ledger line already; %s not recorded", seq, fate.value)
                return
        if not was_embedded:
            self._on_done(1)
        elif fate in (Fate.INDEXED, Fate.REJECTED):
            self._on_written(1)

    def close_open(self, fate: Fate, reason: str) -> int:
        """Give every input still open its line (``fate``, ``reason``); how many there were."""
        with self._lock:
            left, self._open = self._open, {}
            for source in left.values():
                self._write(source, None, fate, reason)
            not_counted = len(left.keys() - self._embedded)
            self._embedded.clear()
        if not_counted:
            self._on_done(not_counted)
        return len(left)

    def _write(self, source: str, doc_id: str | None, fate: Fate, reason: str | None) -> None:
        self.report.fates[fate.value] += 1
        if fate is Fate.FAILED:
            self.report.failed_by_reason[reason or "error"] += 1
        elif fate is Fate.SKIPPED:
            self.report.skipped_by_reason[reason or "present"] += 1
        if self._file is not None:
            entry = {"source": source, "id": doc_id, "fate": fate.value, "reason": reason}
            self._file.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self._file.flush()

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        """One ingest run: timed into the report; if it stops early, the report says why and every
        input still open ends ``pending``; the ledger is closed either way."""
        start = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            self.report.stopped_by = self.report.stopped_by or stop_reason(exc)
            raise
        finally:
            self.close_open(Fate.PENDING, "not written: the run stopped")
            self.report.wall_s = time.perf_counter() - start
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                stamp = datetime.now(timezone.utc).isoformat()
                self._file.write(json.dumps({"run_end": stamp, **self.report.to_dict()}) + "\n")
                self._file.close()
                self._file = None


def stop_reason(exc: BaseException) -> str:
    """Why a run stopped, in one line for its report."""
    if isinstance(exc, GemsearchError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"
