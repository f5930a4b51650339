"""The dead-letter file of the bulk writer: one JSON line per rejected document, with the reason."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np


class DeadLetterFile:
    """Appends rejected documents to a JSONL file; each line is flushed as it is written."""

    def __init__(self, path: str | Path, index: str, keep_source: bool = True) -> None:
        self.path = Path(path)
        self.index = index
        self.keep_source = keep_source
        self.written = 0
        self._lock = threading.Lock()

    def write(
        self, doc_id: str, status: int | None, reason: str, attempts: int, source: Mapping[str, Any]
    ) -> None:
        entry: dict[str, Any] = {
            "time": datetime.now(timezone.utc).isoformat(),
            "index": self.index,
            "id": doc_id,
            "status": status,
            "reason": reason,
            "attempts": attempts,
        }
        if self.keep_source:
            entry["source"] = dict(source)
        line = json.dumps(entry, separators=(",", ":"), default=_plain) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
            self.written += 1


def _plain(value: Any) -> Any:
    """Arrays (a record's vector) as lists; anything else JSON cannot hold as its repr."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return repr(value)
