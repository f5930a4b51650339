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
from pathlib import Path

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

    A new image; ``img`` itself when it already fits. Copying first also keeps PIL from
    ``draft``-decoding a still-unloaded JPEG at a reduced scale, which cirtorch never does.
    """
    side = int(np.floor(max_side))
    if side < 1:
        raise ConfigError(
            f"cannot shrink a {img.width}x{img.height} image to a side of {max_side:.3g} pixels"
        )
    if max(img.size) <= side:
        return img
    out = img.copy()
    out.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return out


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
