"""Bounding the memory of image decoding: a budget decodes reserve from, and handing freed memory back.

Decoding is what a request can make large: a 40-megapixel upload takes several hundred MB at its
peak, so the number of requests alone says little. Each decode first reserves what it will take
at most (from the image's header, ``decode_cost``) and waits while the reservations in flight
would pass the budget. Measured peaks per pixel of decoding an upload and embedding a crop of it
(Pillow 13, noise images of 16 megapixels; the model's own working memory comes on top): JPEG,
8-bit and 16-bit PNG 12 bytes, CMYK TIFF 11, float TIFF 14, WebP 16, PNG with alpha 17.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import threading
from collections import deque
from collections.abc import Iterator
from typing import IO

from PIL import Image

from .rgb import ALPHA_MODES

log = logging.getLogger(__name__)

BYTES_PER_PIXEL = 12  # the measured peaks, rounded up
WIDE_BYTES_PER_PIXEL = 14  # 32-bit integer and float pixels
ALPHA_BYTES_PER_PIXEL = 17  # compositing on white adds an RGBA copy and a mask; WebP decodes so too
TRIM_AFTER = 32 * 2**20  # hand memory back to the system after decodes at least this large


def decode_cost(width: int, height: int, mode: str, max_pixels: int, fmt: str | None = None) -> int:
    """Bytes decoding an image of this size, mode and format takes at its peak (``max_pixels`` at
    most: larger ones are refused before any pixel is decoded)."""
    if mode in ALPHA_MODES or fmt == "WEBP":
        per_pixel = ALPHA_BYTES_PER_PIXEL
    elif mode in ("I", "F"):
        per_pixel = WIDE_BYTES_PER_PIXEL
    else:
        per_pixel = BYTES_PER_PIXEL
    return min(width * height, max_pixels) * per_pixel


def header_cost(file: IO[bytes], size: int, max_pixels: int) -> int:
    """``size`` (the encoded bytes, read whole for decoding) plus the decode cost its header gives;
    reads only the header and leaves the file at its start. Not an image: just ``size``, since
    the decoder refuses it before allocating any pixels."""
    try:
        with Image.open(file) as im:
            return size + decode_cost(im.width, im.height, im.mode, max_pixels, im.format)
    except Exception:  # any header Pillow cannot read; the decoder will say what is wrong
        return size
    finally:
        file.seek(0)


class MemoryBudget:
    """Admits work while the bytes it reserves add up to at most ``limit``.

    First come, first served: a large reservation waits for its turn and is not overtaken by a
    stream of small ones; one larger than the whole budget runs alone. Thread-safe (decodes run in
    worker threads).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._queue: deque[object] = deque()
        self._cond = threading.Condition()

    def acquire(self, nbytes: int) -> int:
        """Wait until ``nbytes`` fit; returns what was reserved (pass it to ``release``)."""
        n = max(0, min(nbytes, self.limit))
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            try:
                self._cond.wait_for(lambda: self._queue[0] is ticket and self.used + n <= self.limit)
                self.used += n
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()
        return n

    def release(self, reserved: int) -> None:
        with self._cond:
            self.used -= reserved
            self._cond.notify_all()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        """Reserve ``nbytes`` for the block; after a large one, freed memory goes back to the system."""
        reserved = self.acquire(nbytes)
        try:
            yield
        finally:
            self.release(reserved)
            trim_after(reserved)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None  # glibc only


_LIBC = _libc()
_M_ARENA_MAX = -8


def trim_after(nbytes: int) -> None:
    """Give freed heap memory back to the system after work of ``nbytes`` (only large work: glibc
    keeps what image decodes free in its heaps, and RSS would only grow; a no-op elsewhere)."""
    if _LIBC is not None and nbytes >= TRIM_AFTER:
        _LIBC.malloc_trim(0)


def limit_arenas(arenas: int = 2) -> None:
    """At most ``arenas`` malloc arenas (glibc): each worker thread would otherwise get its own,
    and memory freed in one is not reused by the others. Call before the threads start."""
    if _LIBC is not None and not _LIBC.mallopt(_M_ARENA_MAX, arenas):
        log.warning("mallopt(M_ARENA_MAX, %d) failed", arenas)
