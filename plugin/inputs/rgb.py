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

from ...errors import ImageError

_WHITE = (255, 255, 255)
ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
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
    return im.mode in ALPHA_MODES or (im.mode in {"P", "L", "RGB"} and "transparency" in im.info)


def _on_white(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _grey_to_8bit(im: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float greyscale image to mode L, by range, with rounding.

    Converted a band of rows at a time into the 8-bit result: a 40-megapixel 16-bit image would
    otherwise take several full-size 32- and 64-bit copies (over 1 GB) on the way.
    """
    width, height = im.size
    out = np.zeros((height, width), dtype=np.uint8)
    bands = _bands(width, height)
    low, high = _extremes(im, bands)
    if im.mode != "F" and low >= 0 and high <= _UINT16_MAX:
        for top, bottom in bands:
            out[top:bottom] = _UINT16_TO_8BIT[_rows(im, top, bottom)]
    else:
        if im.mode == "F" and low >= 0.0 and high <= 1.0:
            low, high = 0.0, 1.0
        scale = 255.0 / (high - low if high > low else 1.0)
        for top, bottom in bands:
            out[top:bottom] = np.rint((_finite(_rows(im, top, bottom)) - low) * scale)
    return Image.fromarray(out)


# v * 255 / 65535 rounded half up, for every 16-bit value (65535 -> 255, 32768 -> 128)
_UINT16_TO_8BIT = (
    (np.arange(_UINT16_MAX + 1, dtype=np.uint32) * 255 + _UINT16_MAX // 2) // _UINT16_MAX
).astype(np.uint8)
_BAND_PIXELS = 1 << 20


def _bands(width: int, height: int) -> list[tuple[int, int]]:
    """Row ranges of about a million pixels each."""
    rows = max(1, _BAND_PIXELS // max(width, 1))
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def _rows(im: Image.Image, top: int, bottom: int) -> npt.NDArray[np.generic]:
    return np.asarray(im.crop((0, top, im.width, bottom)))


def _finite(values: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    """NaN and infinities count as 0, as if the pixel held nothing."""
    return np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _extremes(im: Image.Image, bands: list[tuple[int, int]]) -> tuple[float, float]:
    """The smallest and largest (finite) value; (0, 1) for an empty image."""
    if not bands or not im.width:
        return 0.0, 1.0
    lows, highs = [], []
    for top, bottom in bands:
        values = _rows(im, top, bottom)
        finite = values if values.dtype.kind in "iu" else _finite(values)
        lows.append(float(finite.min()))
        highs.append(float(finite.max()))
    return min(lows), max(highs)
