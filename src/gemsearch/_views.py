"""Random views of a photo with PIL and numpy: what a camera or an upload pipeline changes.

Each view is a crop (at least half the area), then maybe a quarter turn or a small rotation (cropped
to the largest upright rectangle, so no black corners), a perspective warp (inside the image, again no
borders), a downscale, a horizontal flip, brightness/contrast/saturation jitter, and a JPEG encoding
(sometimes decoded again and stored as PNG). Parameters are rounded before use, so the description
states exactly what was done; the same generator state gives the same bytes.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageEnhance

_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_QUARTER = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}
MIN_SIDE = 32  # downscaling stops here (and never enlarges)


@dataclass(frozen=True)
class View:
    image: Image.Image
    description: str
    format: Literal["jpeg", "png"]
    quality: int

    def encode(self) -> bytes:
        """The file bytes: JPEG at ``quality``, or the JPEG artefacts kept losslessly in a PNG."""
        jpeg = io.BytesIO()
        self.image.save(jpeg, format="JPEG", quality=self.quality)
        if self.format == "jpeg":
            return jpeg.getvalue()
        png = io.BytesIO()
        Image.open(jpeg).convert("RGB").save(png, format="PNG")
        return png.getvalue()


def random_view(photo: Image.Image, rng: np.random.Generator) -> View:
    """One random view of an RGB photo; all randomness comes from ``rng``."""
    img, ops = _crop(photo, rng)
    for step in (_rotate, _perspective, _downscale, _flip, _colour):
        img, op = step(img, rng)
        if op:
            ops.append(op)
    quality = int(rng.integers(35, 96))
    fmt: Literal["jpeg", "png"] = "png" if rng.random() < 0.25 else "jpeg"
    ops.append(f"jpeg q{quality}" + (" as png" if fmt == "png" else ""))
    return View(img, "; ".join(ops), fmt, quality)


def _crop(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, list[str]]:
    w, h = img.size
    area = round(float(rng.uniform(0.5, 0.95)), 3)
    aspect = math.exp(float(rng.uniform(math.log(3 / 4), math.log(4 / 3))))
    # a side clips only when area * aspect > 1 (or area / aspect > 1), i.e. area > 3/4: still >= 3/4 kept
    cw = min(w, max(1, round(w * math.sqrt(area * aspect))))
    ch = min(h, max(1, round(h * math.sqrt(area / aspect))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch)), [f"crop {cw}x{ch}+{x}+{y}"]


def _rotate(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    u = rng.random()
    if u < 0.2:
        turns = int(rng.integers(1, 4))
        return img.transpose(_QUARTER[turns]), f"rotate {90 * turns}"
    if u < 0.6:
        angle = round(float(rng.uniform(-12, 12)), 2)
        wide = img.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        iw, ih = _inner_rectangle(img.width, img.height, math.radians(angle))
        left, top = (wide.width - iw) // 2, (wide.height - ih) // 2
        return wide.crop((left, top, left + iw, top + ih)), f"rotate {angle:g}"
    return img, ""


def _inner_rectangle(w: int, h: int, angle: float) -> tuple[int, int]:
    """Largest upright rectangle inside a ``w x h`` rectangle turned by ``angle`` radians."""
    s, c = abs(math.sin(angle)), abs(math.cos(angle))
    if s < 1e-9:
        return w, h
    long, short = max(w, h), min(w, h)
    if short <= 2 * s * c * long:
        # thin image: the rectangle touches both long sides, its corners on the short diagonal
        half = short / 2
        iw, ih = (half / s, half / c) if w >= h else (half / c, half / s)
    else:
        cos2 = c * c - s * s
        iw, ih = (w * c - h * s) / cos2, (h * c - w * s) / cos2
    # one pixel less on each side: resampling blurs the edge with the black fill
    return max(1, math.floor(iw) - 2), max(1, math.floor(ih) - 2)


def _perspective(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    if rng.random() >= 0.4:
        return img, ""
    strength = round(float(rng.uniform(0.03, 0.1)), 3)
    w, h = img.size
    dx, dy = rng.uniform(0, strength, 4) * w, rng.uniform(0, strength, 4) * h
    # the output rectangle samples a quadrilateral inside the image: each corner moved inwards
    quad = [(dx[0], dy[0]), (w - dx[1], dy[1]), (w - dx[2], h - dy[2]), (dx[3], h - dy[3])]
    corners = [(0, 0), (w, 0), (w, h), (0, h)]
    coeffs = _perspective_coefficients(corners, quad)
    warped = img.transform((w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC)
    return warped, f"perspective {strength:g}"


def _perspective_coefficients(
    out: list[tuple[int, int]], src: list[tuple[float, float]]
) -> tuple[float, ...]:
    """PIL's 8 coefficients: output pixel (x, y) samples the source at
    ((ax + by + c) / (gx + hy + 1), (dx + ey + f) / (gx + hy + 1))."""
    rows, rhs = [], []
    for (x, y), (sx, sy) in zip(out, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -x * sx, -y * sx])
        rows.append([0, 0, 0, x, y, 1, -x * sy, -y * sy])
        rhs += [sx, sy]
    return tuple(float(v) for v in np.linalg.solve(np.array(rows, float), np.array(rhs, float)))


def _downscale(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    factor = round(float(rng.uniform(0.5, 1.0)), 3)
    name = str(rng.choice(list(_FILTERS)))
    w, h = (min(side, max(MIN_SIDE, round(side * factor))) for side in img.size)
    size = (w, h)
    if size == img.size:
        return img, ""
    return img.resize(size, _FILTERS[name]), f"scale {factor:g} {name} to {w}x{h}"


def _flip(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    if rng.random() >= 0.3:
        return img, ""
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "hflip"


def _colour(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    b, c, s = (round(float(v), 3) for v in rng.uniform([0.75, 0.75, 0.6], [1.25, 1.25, 1.4]))
    img = ImageEnhance.Brightness(img).enhance(b)
    img = ImageEnhance.Contrast(img).enhance(c)
    img = ImageEnhance.Color(img).enhance(s)
    return img, f"colour brightness {b:g} contrast {c:g} saturation {s:g}"
