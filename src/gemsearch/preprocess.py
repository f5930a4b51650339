"""Image preprocessing exactly as cirtorch's test pipeline; numpy + PIL only (the plugin reuses it).

1. load: PIL, converted to RGB (cirtorch's ``pil_loader``; no EXIF rotation, as in its datasets);
2. shrink, never enlarge, so the longer side is at most ``max_side``: PIL ``thumbnail`` with LANCZOS,
   like cirtorch's ``imresize``, so sizes and pixels are PIL's own (floor of the requested side,
   shorter side rounded to keep the aspect, resampling with ``reducing_gap=2``);
3. a query box is cut from the *full* image first and then shrunk to
   ``max_side * crop_long / full_long`` (cirtorch's ``ImagesFromList``), so the object keeps the
   scale it has in the full image;
4. ``ToTensor`` + ``Normalize``: ``(pixel / 255 - mean) / std`` in float32, as ``(3, h, w)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import ConfigError, ImageError
from .manifest import IMAGENET_MEAN, IMAGENET_STD

# cirtorch's multi-scale set; descriptors at these scales are combined as a power mean
MULTISCALE: tuple[float, ...] = (1.0, 1 / math.sqrt(2), 0.5)

Box = tuple[float, float, float, float]
"""A crop box ``(x1, y1, x2, y2)`` in pixels of the full image, as PIL's ``crop`` and cirtorch's bbx."""

ImageArray = npt.NDArray[np.float32]
"""A normalised image, ``(3, h, w)`` float32."""

DecodeMode = Literal["draft", "exact"]
"""How the runtime decodes JPEG files: ``exact`` decodes every pixel and shrinks as cirtorch does
(bit for bit); ``draft`` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 in the DCT domain
(to the smallest size still at least the shrunk size), then shrinks to the same size with LANCZOS:
a fraction of the decode time and memory, descriptors within a hair of exact (docs/runtime.md)."""
DECODE_MODES: tuple[DecodeMode, ...] = ("draft", "exact")
DEFAULT_DECODE: DecodeMode = "draft"


def decode_mismatch(stored: DecodeMode, wanted: DecodeMode) -> str:
    """Why descriptors of one decode mode are not mixed with or searched by the other's, in a line."""
    flag = "pass --exact-decode" if stored == "exact" else "drop --exact-decode"
    return (
        f"its descriptors were made with {stored} JPEG decoding, these with {wanted} ({flag}, "
        "or use another store)"
    )


class Preprocessing(BaseModel):
    """How images become network input; travels with the model (cirtorch's ``net.meta``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_side: int | None = Field(1024, gt=0, description="longer side after shrinking; None keeps size")

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(std) <= 0:
            raise ValueError("std must be positive")
        return std


def load_rgb(path: str | Path) -> Image.Image:
    """The image at ``path`` as a loaded RGB image, or ``ImageError``."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file", reason="not_found") from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})", reason="corrupt") from exc


def shrink(img: Image.Image, max_side: float) -> Image.Image:
    """``img`` shrunk (never enlarged) so its longer side is at most ``floor(max_side)``.

    A new image; ``img`` itself when it already fits. The pixels of PIL's ``thumbnail`` with LANCZOS
    (cirtorch's ``imresize``): the same size and the same ``resize`` call, without the full-size copy
    ``thumbnail`` would need to leave ``img`` untouched, and without its ``draft`` of a still-unloaded
    JPEG (which cirtorch never does: ``img`` is loaded first).
    """
    size = thumbnail_size(img.size, max_side)
    if size == img.size:
        return img
    img.load()
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def thumbnail_size(size: tuple[int, int], max_side: float) -> tuple[int, int]:
    """The size PIL's ``thumbnail((max_side, max_side))`` gives an image of ``size``: the longer side
    ``floor(max_side)``, the other rounded to keep the aspect best; ``size`` itself when it fits."""
    side = math.floor(max_side)
    width, height = size
    if side < 1:
        raise ConfigError(f"cannot shrink a {width}x{height} image to a side of {max_side:.3g} pixels")
    if width <= side and height <= side:
        return size
    aspect = width / height
    if aspect <= 1:  # PIL's test for a square box: taller than wide, the height is the side
        return _round_aspect(side * aspect, lambda n: abs(aspect - n / side)), side
    return side, _round_aspect(side / aspect, lambda n: 0 if n == 0 else abs(aspect - side / n))


def draft_scale(size: tuple[int, int], max_side: float) -> int:
    """The DCT scale (1, 2, 4 or 8) a JPEG of ``size`` is draft-decoded at for ``max_side``: the
    largest whose image still covers the shrunk size (PIL's ``draft`` rule)."""
    target = thumbnail_size(size, max_side)
    fits = min(size[0] // target[0], size[1] // target[1])
    return next(s for s in (8, 4, 2, 1) if fits >= s)


def _round_aspect(number: float, key: Callable[[int], float]) -> int:
    return max(min(math.floor(number), math.ceil(number), key=key), 1)


def shrink_reduced(img: Image.Image, full_size: tuple[int, int], scale: int, max_side: float) -> Image.Image:
    """An image decoded at ``1/scale`` of ``full_size`` (a JPEG draft) shrunk to the size the full
    image would get from ``shrink``: resampled over the exact area of the full image it covers."""
    if scale == 1:
        return shrink(img, max_side)
    box = (0.0, 0.0, full_size[0] / scale, full_size[1] / scale)
    target = thumbnail_size(full_size, max_side)
    return img.resize(target, Image.Resampling.LANCZOS, box=box, reducing_gap=2.0)


def crop_and_shrink(img: Image.Image, box: Box, max_side: int | None) -> Image.Image:
    """Cut ``box`` from the full ``img``, then shrink it by the factor the full image would get.

    The box may reach past the image (that part is black, as in cirtorch) but must keep at least one
    pixel of it once PIL's ``crop`` has rounded each edge to the nearest pixel: the checks are made on
    the rounded box, or a sub-pixel box would be cut as an empty or an all-black image.
    """
    if not all(math.isfinite(v) for v in box):
        raise ConfigError(f"crop box {box} must be four finite numbers (x1, y1, x2, y2)")
    x1, y1, x2, y2 = (round(v) for v in box)  # as PIL's crop rounds it
    if not (x2 > x1 and y2 > y1):
        raise ConfigError(f"crop box {box} is empty (expected x1 < x2 and y1 < y2, once rounded)")
    if x2 <= 0 or y2 <= 0 or x1 >= img.width or y1 >= img.height:
        raise ConfigError(f"crop box {box} lies outside the {img.width}x{img.height} image")
    full_side = max(img.size)
    crop = img.crop(box)
    if max_side is None:
        return crop
    return shrink(crop, max_side * max(crop.size) / full_side)


def to_array(
    img: Image.Image,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> ImageArray:
    """RGB ``img`` -> ``(3, h, w)`` float32 ``(pixel / 255 - mean) / std``, bit-equal to torchvision's
    ``ToTensor`` + ``Normalize`` (same float32 operations in the same order)."""
    if img.mode != "RGB":
        raise ImageError(f"expected an RGB image, got mode {img.mode}", reason="unsupported_format")
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
    m = np.asarray(mean, dtype=np.float32)[:, None, None]
    s = np.asarray(std, dtype=np.float32)[:, None, None]
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def prepare(img: Image.Image, cfg: Preprocessing | None = None, box: Box | None = None) -> ImageArray:
    """Full pipeline for one RGB image: optional query box, shrink, normalise -> ``(3, h, w)``."""
    cfg = cfg or Preprocessing()
    if box is not None:
        img = crop_and_shrink(img, box, cfg.max_side)
    elif cfg.max_side is not None:
        img = shrink(img, cfg.max_side)
    return to_array(img, cfg.mean, cfg.std)


def prepare_file(path: str | Path, cfg: Preprocessing | None = None, box: Box | None = None) -> ImageArray:
    """``prepare(load_rgb(path), cfg, box)``."""
    return prepare(load_rgb(path), cfg, box)
