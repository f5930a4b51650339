"""Collections of real photos for ingest tests: distinct small crops of scikit-image's photos."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


def write_collection(folder: Path, n: int, *, seed: int = 0, side: int = 96) -> dict[str, Path]:
    """``n`` distinct JPEG/PNG crops of real photos under ``folder`` (in sub-folders); returns
    {sha256 of the bytes: path}."""
    rng = np.random.default_rng(seed)
    photos = [photo(p) for p in PHOTOS]
    out: dict[str, Path] = {}
    while len(out) < n:
        i = len(out)
        src = photos[i % len(photos)]
        w = int(rng.integers(side, 2 * side))
        h = int(rng.integers(side, 2 * side))
        x = int(rng.integers(0, src.width - w))
        y = int(rng.integers(0, src.height - h))
        img = src.crop((x, y, x + w, y + h)).resize((max(8, w // 2), max(8, h // 2)))
        fmt = "JPEG" if i % 3 else "PNG"
        buf = io.BytesIO()
        img.save(buf, fmt, quality=90)
        blob = buf.getvalue()
        digest = hashlib.sha256(blob).hexdigest()
        if digest in out:
            continue
        path = folder / f"part{i % 4}" / f"img{i:05d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
        out[digest] = path
    return out
