"""Stored images for the browser: the file a hit's ``image_ref`` names, or a JPEG thumbnail of it.

Only regular files inside the configured roots are read (symlinks resolved first, so neither
``..`` in an image reference nor a link leads out); anything else is "not found" to the client.

Memory: a file browsers show is streamed from disk, never read whole. A thumbnail is decoded at a
reduced size (JPEG: DCT scaling to 1/2, 1/4 or 1/8; others: shrunk by whole factors right after
decoding), once however many requests ask for it at the same time, and every decode reserves its
memory from the server's budget first.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from PIL import Image, ImageFile, UnidentifiedImageError

from ...errors import ImageError
from ...image_refs import path_of_ref
from ..inputs.files import check_opened, open_inside
from ..inputs.images import _OPEN_LOCK, ImageLoadConfig, _check_pixels, _classify, _upright, load_image_bytes
from ..inputs.memory import MemoryBudget, decode_cost, header_cost
from ..inputs.rgb import to_rgb

log = logging.getLogger(__name__)

# formats every browser shows; the others are sent as PNG
_WEB_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png", b"GIF8": "image/gif"}
# modes Pillow shrinks well before they become RGB (the others become RGB at full size first)
_SHRINK_FIRST = frozenset({"RGB", "RGBA", "RGBa", "L", "LA", "La", "CMYK", "YCbCr"})
_CHUNK = 256 * 1024


@dataclass(frozen=True)
class OpenedFile:
    """A stored file opened for streaming: ``size`` bytes of ``media_type`` (closed once read, or
    when dropped unread)."""

    file: BinaryIO
    size: int
    media_type: str

    def chunks(self) -> Iterator[bytes]:
        with self.file:
            left = self.size
            while left > 0 and (chunk := self.file.read(min(_CHUNK, left))):
                left -= len(chunk)
                yield chunk


class ImageFiles:
    """Reads stored images from inside ``roots``; keeps the last ``cache_size`` thumbnails."""

    def __init__(
        self,
        roots: Sequence[Path],
        config: ImageLoadConfig,
        thumbnail_side: int,
        cache_size: int = 512,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.config = config
        self.thumbnail_side = thumbnail_side
        self.budget = budget or MemoryBudget(2**62)
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._pending: dict[str, Future[bytes]] = {}
        self._lock = threading.Lock()

    def path_of(self, image_ref: str) -> Path:
        """The file ``image_ref`` names: an absolute path (or a ``file://`` URI of one, as names that
        are not UTF-8 are stored), or a path relative to a root."""
        if not self.roots:
            raise ImageError("this server serves no images (no image roots configured)", "outside_root")
        ref = path_of_ref(image_ref)
        if ref.is_absolute():
            return ref
        for root in self.roots:
            if (root / ref).exists():
                return root / ref
        return self.roots[0] / ref

    def full(self, image_ref: str) -> OpenedFile | tuple[bytes, str]:
        """The image opened for streaming when browsers show its format, else converted to PNG."""
        opened = self._open(image_ref)
        media_type = _web_type(opened.file.read(12))
        opened.file.seek(0)
        if media_type is not None:
            return OpenedFile(opened.file, opened.size, media_type)
        data = b"".join(opened.chunks())
        # the decode and, half as much again, the PNG it becomes (under 4 bytes a pixel)
        cost = header_cost(io.BytesIO(data), len(data), self.config.max_pixels) * 3 // 2
        with self.budget.hold(cost):
            image = load_image_bytes(data, self.config, image_ref)
            out = io.BytesIO()
            image.save(out, format="PNG")
            return out.getvalue(), "image/png"

    def thumbnail(self, image_ref: str) -> bytes:
        """A JPEG whose longer side is at most ``thumbnail_side`` (never enlarged).

        Requests for an image that is being decoded wait for that decode instead of starting
        their own; a failure is not remembered (the next request tries again).
        """
        with self._lock:
            cached = self._cache.get(image_ref)
            if cached is not None:
                self._cache.move_to_end(image_ref)
                return cached
            pending = self._pending.get(image_ref)
            if pending is None:
                owner = self._pending[image_ref] = Future()
        if pending is not None:
            return pending.result()
        try:
            thumb = self._make_thumbnail(image_ref)
        except BaseException as exc:
            self._settle(image_ref, None)
            owner.set_exception(exc)
            raise
        self._settle(image_ref, thumb)
        owner.set_result(thumb)
        return thumb

    def _settle(self, image_ref: str, thumb: bytes | None) -> None:
        with self._lock:
            del self._pending[image_ref]
            if thumb is not None:
                self._cache[image_ref] = thumb
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)

    def _make_thumbnail(self, image_ref: str) -> bytes:
        opened = self._open(image_ref)
        with opened.file:  # decoded from the file: its bytes are not copied into memory first
            image = _small_image(opened.file, self.config, self.thumbnail_side, self.budget, image_ref)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        return out.getvalue()

    def _open(self, image_ref: str) -> OpenedFile:
        """The file opened read-only after the checks of ``read_image_file``: inside the roots
        (links resolved), a regular file (checked on the descriptor), at most ``max_bytes``."""
        path = self.path_of(image_ref)
        fd = open_inside(path, self.roots)
        file = os.fdopen(fd, "rb")
        try:
            info = check_opened(fd, path, self.config.max_bytes)
        except ImageError:
            file.close()
            raise
        return OpenedFile(file, info.st_size, "application/octet-stream")


def _web_type(head: bytes) -> str | None:
    for magic, media_type in _WEB_TYPES.items():
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _small_image(
    file: IO[bytes], config: ImageLoadConfig, side: int, budget: MemoryBudget, name: str
) -> Image.Image:
    """The upright RGB image, longer side at most ``side``, decoded at a reduced size where the
    format allows it; the decode's memory is reserved from ``budget`` first."""
    im = _open_file(file, config, name)
    with im:
        _check_pixels(im, config, name)
        try:
            im.draft(None, (2 * side, 2 * side))  # JPEG: decode at the smallest scale still >= 2 side
            with budget.hold(decode_cost(im.width, im.height, im.mode, config.max_pixels, im.format)):
                if im.mode in _SHRINK_FIRST:  # whole-factor reduce, then Lanczos, in place
                    im.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
                else:
                    im.load()
                rgb = to_rgb(_upright(im, name))
                rgb.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
        except ImageError:
            raise
        except Exception as exc:  # Pillow's plugins raise many types on damaged input
            raise _classify(exc, b"", name) from exc
    return rgb


def _open_file(file: IO[bytes], config: ImageLoadConfig, name: str) -> ImageFile.ImageFile:
    """The image's header, read as ``load_image_bytes`` reads it (allowed formats only, a
    decompression bomb refused), from a file instead of bytes in memory."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(file, formats=list(config.formats))
    except UnidentifiedImageError as exc:
        raise ImageError(f"{name}: not an image in an allowed format", "unsupported_format") from exc
    except Exception as exc:  # a header damaged in a way the format plugin reports itself
        raise _classify(exc, b"", name) from exc
