"""One image to ingest, as a source yields it, and its document id."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class SourceItem:
    """An image file named by a source.

    ``key`` is what ``--shard`` hashes: the path as the source wrote it (relative to the folder for
    a directory source), so workers that mount the collection at different places still agree.
    ``root`` is the folder the file must stay inside (directory sources); pass it to the loader.
    """

    path: Path
    id: str | None = None  # given by a manifest; otherwise the id is the sha256 of the bytes
    metadata: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None
    root: Path | None = None
    origin: str = ""  # where it came from, for messages: "list.jsonl:12", "stdin:3", a folder

    @property
    def shard_key(self) -> str:
        return self.key if self.key is not None else self.path.as_posix()


def doc_id_for(data: bytes) -> str:
    """The document id of image bytes: their sha256, in hex (re-ingesting a file is a no-op)."""
    return hashlib.sha256(data).hexdigest()


def document_id(item: SourceItem, data: bytes) -> str:
    """The id the item's source gave, else ``doc_id_for(data)``."""
    return item.id if item.id is not None else doc_id_for(data)
