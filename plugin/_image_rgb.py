"""Convert a decoded PIL image of any mode to 8-bit RGB, the input every embedder takes.

- Transparency (LA, RGBA, PA, a palette or a greyscale image with a transparent colour) is
  composited onto white: the pixels under alpha 0 hold arbitrary colours (often black), and
  dropping the alpha channel, as a plain ``convert("RGB")`` does, would show them; a cut-out
  product photo is seen on a white page, so white is what its embedding should see.
- 16-bit and 32-bit integer greyscale (I;16, I;16B, I;16L, I) is scaled to 0..255 by the full
  16-bit range with rounding (65535 -> 255, 32768 -> 128), not clamped, which would turn almost
  every pixel white. Float (F) images in 0..1 are scaled by 255; other ranges are stretched.
- CMYK uses Pillow's conversion (Adobe-inverted JPEGs are handled by the decoder); embedded ICC
  profiles are not applied, as in cirtorch's loader, so descriptors match its training.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from ..errors import ImageError

_WHITE = (255, 255, 255)
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_INT_GREY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_UINT16_MAX = 65535


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as an 8-bit RGB image (``im`` itself when it already is one)."""
    if _has_alpha(im):
        return _on_white(im.convert("RGBA"))
    if im.mode == "RGB":
        return im
    if im.mode in _INT_GREY_MODES or im.mode == "F":
        return _grey_to_8bit(im).convert("RGB")
    if im.mode == "1":
        im = im.convert("L")
    try:
        return im.convert("RGB")
    except ValueError as exc:  # e.g. LAB or HSV, which Pillow converts only through ImageCms
        raise ImageError(f"pixel mode {im.mode} cannot be converted to RGB", "unsupported_format") from exc


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or (im.mode in {"P", "L", "RGB"} and "transparency" in im.info)


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _grey_to_8bit(im: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float greyscale image to mode L, by range, with rounding."""
    values = np.asarray(im)
    if values.size and values.dtype.kind in "iu" and values.min() >= 0 and values.max() <= _UINT16_MAX:
        out: npt.NDArray[np.generic] = (values.astype(np.uint32) * 255 + _UINT16_MAX // 2) // _UINT16_MAX
    else:
        out = _stretch(values.astype(np.float64), unit_range=values.dtype.kind == "f")
    return Image.fromarray(out.astype(np.uint8))


def _stretch(values: npt.NDArray[np.float64], unit_range: bool) -> npt.NDArray[np.float64]:
    """Floats in 0..1 times 255; anything else (negative, > 65535, NaN) stretched from min..max."""
    finite = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if unit_range and low >= 0.0 and high <= 1.0:
        low, high = 0.0, 1.0
    span = high - low if high > low else 1.0
    return np.rint((finite - low) * (255.0 / span))
