"""What an ingest run did with every input: the counts, the per-input ledger, the summary."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Fate(str, Enum):
    """Where an input ended. After a completed run nothing is ``pending``."""

    INDEXED = "indexed"  # written, and acknowledged by the store
    SKIPPED = "skipped"  # nothing to do: already stored, a duplicate in this run, or not an image file
    FAILED = "failed"  # could not be read or decoded; the reason code says why
    REJECTED = "rejected"  # the store refused the document (see the dead-letter file)
    PENDING = "pending"  # read but not written (or not acknowledged) when the run stopped; a rerun does it


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

    @property
    def _dead_letter_written(self) -> bool:
        """Whether the dead-letter file exists (it is created on the first rejection only)."""
        return self.dead_letter_path is not None and self.dead_letter_path.exists()

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
            "dead_letter": str(self.dead_letter_path) if self._dead_letter_written else None,
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
        if self.count(Fate.REJECTED) and self._dead_letter_written:
            lines.append(f"rejected documents: {self.dead_letter_path}")
        if self.ledger_path:
            lines.append(f"ledger: {self.ledger_path}")
        if self.count(Fate.PENDING):
            lines.append("pending documents were not acknowledged by the store: run the same command again")
        if self.stopped_by:
            lines.append(f"stopped early: {self.stopped_by}")
        return "\n".join(lines)
