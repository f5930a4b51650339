"""What an ingest run did with every input: the counts, the per-input ledger, the summary."""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)


class Fate(str, Enum):
    """Where an input ended. After a completed run nothing is ``pending``."""

    INDEXED = "indexed"  # written, and acknowledged by the store
    SKIPPED = "skipped"  # nothing to do: already stored, a duplicate in this run, or not an image file
    FAILED = "failed"  # could not be read or decoded; the reason code says why
    REJECTED = "rejected"  # the store refused the document (see the dead-letter file)
    PENDING = "pending"  # embedded but not acknowledged when the run stopped; a rerun retries it


@dataclass
class IngestReport:
    read: int = 0
    embedded: int = 0
    fates: Counter[str] = field(default_factory=Counter)
    failed_by_reason: Counter[str] = field(default_factory=Counter)
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    ledger_path: Path | None = None
    dead_letter_path: Path | None = None
    stopped_by: str | None = None  # the error that ended the run early, if any

    def count(self, fate: Fate) -> int:
        return self.fates[fate.value]

    @property
    def ok(self) -> bool:
        """Every input was indexed or skipped, and the run finished."""
        return self.stopped_by is None and self.read == self.count(Fate.INDEXED) + self.count(Fate.SKIPPED)

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "embedded": self.embedded,
            **{fate.value: self.count(fate) for fate in Fate},
            "failed_by_reason": dict(self.failed_by_reason),
            "skipped_by_reason": dict(self.skipped_by_reason),
            "wall_s": round(self.wall_s, 3),
            "images_per_s": round(self.images_per_s, 2),
            "ledger": str(self.ledger_path) if self.ledger_path else None,
            "dead_letter": str(self.dead_letter_path) if self.dead_letter_path else None,
            "stopped_by": self.stopped_by,
            "ok": self.ok,
        }

    def _skip_reasons(self) -> str:
        if not self.skipped_by_reason:
            return ""
        return " (" + ", ".join(f"{r}: {n}" for r, n in self.skipped_by_reason.most_common()) + ")"

    def summary(self) -> str:
        lines = [
            f"read {self.read}, embedded {self.embedded}, indexed {self.count(Fate.INDEXED)}, "
            f"skipped {self.count(Fate.SKIPPED)}{self._skip_reasons()}, failed {self.count(Fate.FAILED)}, "
            f"rejected {self.count(Fate.REJECTED)}, pending {self.count(Fate.PENDING)} "
            f"in {self.wall_s:.1f} s ({self.images_per_s:.1f} images/s embedded)"
        ]
        if self.failed_by_reason:
            reasons = ", ".join(f"{r}: {n}" for r, n in self.failed_by_reason.most_common())
            lines.append(f"failed by reason: {reasons}")
        if self.count(Fate.REJECTED) and self.dead_letter_path:
            lines.append(f"rejected documents: {self.dead_letter_path}")
        if self.ledger_path:
            lines.append(f"ledger: {self.ledger_path}")
        if self.count(Fate.PENDING):
            lines.append("pending documents were not acknowledged by the store: run the same command again")
        if self.stopped_by:
            lines.append(f"stopped early: {self.stopped_by}")
        return "\n".join(lines)


class Ledger:
    """Records each input's fate once, in the report and, if a path is given, as a JSONL line
    ``{"source", "id", "fate", "reason"}`` flushed as written (a killed run keeps every line).

    Every input is ``open``-ed when read and gets exactly one line: a second record for the same
    input is ignored (and logged), and ``close_open`` gives whatever is still open its final line
    when a run stops early. Thread-safe (the store writer reports from its thread)."""

    def __init__(
        self, report: IngestReport, path: Path | None = None, on_record: Callable[[int], object] | None = None
    ) -> None:
        self.report = report
        self._lock = threading.Lock()
        self._open: dict[int, str] = {}
        self._on_record = on_record or (lambda n: None)
        self._file: TextIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")
            report.ledger_path = path

    def open(self, seq: int, source: str) -> None:
        """Input ``seq`` was read from ``source``; it now owes the ledger one line."""
        with self._lock:
            self._open[seq] = source

    def record(self, seq: int, doc_id: str | None, fate: Fate, reason: str | None = None) -> None:
        with self._lock:
            source = self._open.pop(seq, None)
            if source is None:
                log.warning("input %d has its ledger line already; %s not recorded", seq, fate.value)
                return
            self._write(source, doc_id, fate, reason)
        self._on_record(1)

    def close_open(self, fate: Fate, reason: str) -> int:
        """Give every input still open its line (``fate``, ``reason``); how many there were."""
        with self._lock:
            left, self._open = self._open, {}
            for source in left.values():
                self._write(source, None, fate, reason)
        if left:
            self._on_record(len(left))
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

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                stamp = datetime.now(timezone.utc).isoformat()
                self._file.write(json.dumps({"run_end": stamp, **self.report.to_dict()}) + "\n")
                self._file.close()
                self._file = None
