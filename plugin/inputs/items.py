"""One image to ingest, as a source yields it, and its document id."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ...image_refs import printable_path


@dataclass(frozen=True, slots=True)
class SourceItem:
    """An image named by a source: a file, or (records) the image itself in ``content``.

    ``key`` is what ``--shard`` hashes: the path as the source wrote it (relative to the folder for
    a directory source), so workers that mount the collection at different places still agree.
    ``root`` is the folder the file must stay inside (directory sources); pass it to the loader.
    ``content`` is an image handed over in memory (encoded bytes or a decoded PIL image); ``path``
    is then None and the document has no image reference.
    """

    path: Path | None
    id: str | None = None  # given by a manifest; otherwise the id is the sha256 of the bytes
    metadata: Mapping[str, Any] = field(default_factory=dict)
    key: str | None = None
    root: Path | None = None
    origin: str = ""  # where it came from, for messages: "list.jsonl:12", "stdin:3", a folder
    content: bytes | Image.Image | None = None

    @property
    def shard_key(self) -> str:
        if self.key is not None:
            return self.key
        return self.path.as_posix() if self.path is not None else self.origin

    @property
    def name(self) -> str:
        """How messages name the input: its path, else where it came from (and its id)."""
        if self.path is not None:
            return printable_path(self.path)
        return self.origin if self.id is None else f"{self.origin} (id {self.id!r})"


def doc_id_for(data: bytes) -> str:
    """The document id of image bytes: their sha256, in hex (re-ingesting a file is a no-op)."""
    return hashlib.sha256(data).hexdigest()


def pixels_id(image: Image.Image) -> str:
    """The document id of a decoded image (no file bytes to hash): the sha256 of its mode, size and
    pixels, so handing over the same image again is a no-op too."""
    digest = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def document_id(item: SourceItem, data: bytes | Image.Image) -> str:
    """The id the item's source gave, else ``doc_id_for(data)`` (``pixels_id`` for a PIL image)."""
    if item.id is not None:
        return item.id
    return pixels_id(data) if isinstance(data, Image.Image) else doc_id_for(data)
