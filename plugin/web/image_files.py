"""Stored images for the browser: the file a hit's ``image_ref`` names, or a JPEG thumbnail of it.

Only regular files inside the configured roots are read (symlinks resolved first, so neither
``..`` in an image reference nor a link leads out); anything else is "not found" to the client.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ...errors import ImageError
from ..images import ImageLoadConfig, load_image_bytes, read_image_file

log = logging.getLogger(__name__)

# formats every browser shows; the others are sent as PNG
_WEB_TYPES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG": "image/png", b"GIF8": "image/gif"}


class ImageFiles:
    """Reads stored images from inside ``roots``; keeps the last ``cache_size`` thumbnails."""

    def __init__(
        self, roots: Sequence[Path], config: ImageLoadConfig, thumbnail_side: int, cache_size: int = 512
    ) -> None:
        self.roots = [Path(r).resolve() for r in roots]
        self.config = config
        self.thumbnail_side = thumbnail_side
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def path_of(self, image_ref: str) -> Path:
        """The file ``image_ref`` names: an absolute path, or one relative to a root."""
        if not self.roots:
            raise ImageError("this server serves no images (no image roots configured)", "outside_root")
        ref = Path(image_ref)
        if ref.is_absolute():
            return ref
        for root in self.roots:
            if (root / ref).exists():
                return root / ref
        return self.roots[0] / ref

    def full(self, image_ref: str) -> tuple[bytes, str]:
        """The image's bytes and media type (formats browsers may not show are converted to PNG)."""
        data = read_image_file(self.path_of(image_ref), self.config, self.roots)
        for magic, media_type in _WEB_TYPES.items():
            if data.startswith(magic):
                return data, media_type
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return data, "image/webp"
        image = load_image_bytes(data, self.config, image_ref)
        out = io.BytesIO()
        image.save(out, format="PNG")
        return out.getvalue(), "image/png"

    def thumbnail(self, image_ref: str) -> bytes:
        """A JPEG whose longer side is at most ``thumbnail_side`` (never enlarged)."""
        with self._lock:
            cached = self._cache.get(image_ref)
            if cached is not None:
                self._cache.move_to_end(image_ref)
                return cached
        data = read_image_file(self.path_of(image_ref), self.config, self.roots)
        image = load_image_bytes(data, self.config, image_ref)
        image.thumbnail((self.thumbnail_side, self.thumbnail_side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=85)
        thumb = out.getvalue()
        with self._lock:
            self._cache[image_ref] = thumb
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return thumb
