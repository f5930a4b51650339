"""Image loading that survives real collections: every file ends as an RGB image or a typed error.

``read_image_file`` reads a file's bytes (only regular files inside the allowed roots, capped in
bytes), ``load_image_bytes`` decodes bytes, ``load_image_file`` does both and hands back the
bytes too, so the caller hashes them into the document id without reading the file twice (and can
skip an id the store already holds before paying for the decode). ``load_image`` takes either.

Decoding: the format is found from the content, never the extension, among the allowed formats
only (Pillow's ``formats=``); the pixel count is checked from the header before any pixel is
decoded, and Pillow's own decompression-bomb warning is a rejection too; the image is fully
loaded inside the error handling (``LOAD_TRUNCATED_IMAGES`` stays False), so a truncated or
corrupt file is reported, never half-decoded; EXIF orientation is applied; animated GIF/WebP/PNG
give their first frame; every pixel mode becomes RGB (``_image_rgb``). Each failure is an
``ImageError`` whose ``reason`` is one of ``IMAGE_ERROR_REASONS``.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...errors import ConfigError, ImageError
from ...preprocess import thumbnail_size
from .files import read_file_capped
from .rgb import to_rgb

log = logging.getLogger(__name__)

ImageErrorReason = Literal[
    "not_found",  # no file at the path
    "unreadable",  # exists but cannot be opened or read (permissions, I/O error, symlink loop)
    "not_regular_file",  # a folder, FIFO, socket or device
    "outside_root",  # the path (after following symlinks) leaves every allowed root
    "empty",  # zero bytes
    "too_many_bytes",  # over ImageLoadConfig.max_bytes
    "too_many_pixels",  # over ImageLoadConfig.max_pixels or Pillow's decompression-bomb limit
    "unsupported_format",  # not an image in one of the allowed formats, or an unconvertible mode
    "truncated",  # the data ends before the image does
    "corrupt",  # the data is damaged
]
IMAGE_ERROR_REASONS: frozenset[str] = frozenset(get_args(ImageErrorReason))

# Formats cameras, phones, scanners and the web produce. Allowing JPEG also admits the
# multi-picture JPEGs of many cameras and phones, which Pillow reports as format "MPO".
DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
# Pillow's decompression-bomb warning is promoted to an error around Image.open only; the lock
# keeps threads of this module from interleaving their save/restore of the warning filters.
_OPEN_LOCK = threading.Lock()


class ImageLoadConfig(BaseModel):
    """Limits and allowed formats for loading images."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(64 * 2**20, gt=0, description="largest file accepted, in bytes")
    max_pixels: int = Field(
        89_478_485,
        gt=0,
        description="largest width x height accepted (default: Pillow's decompression-bomb limit, "
        "which also applies: raise PIL.Image.MAX_IMAGE_PIXELS to go beyond it)",
    )
    formats: tuple[str, ...] = Field(
        DEFAULT_FORMATS, min_length=1, validate_default=True, description="Pillow format names to open"
    )

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, formats: tuple[str, ...]) -> tuple[str, ...]:
        Image.init()
        upper = tuple(f.upper() for f in formats)
        unknown = sorted(set(upper) - set(Image.OPEN))
        if unknown:
            raise ValueError(f"Pillow cannot open {unknown}; it knows {sorted(Image.OPEN)}")
        return upper


@dataclass(frozen=True)
class ScaledImage:
    """A decoded image, possibly decoded at ``1/scale`` of its size (a JPEG draft): ``full_size`` is
    the upright size of the whole image, the frame crop boxes and the shrunk size refer to."""

    image: Image.Image  # RGB, upright
    full_size: tuple[int, int]
    scale: int = 1


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image with the bytes it came from (hash them for the document id)."""

    image: Image.Image  # RGB, upright, full resolution
    data: bytes
    format: str  # found from the content, e.g. "JPEG"


def read_image_file(
    path: str | os.PathLike[str], config: ImageLoadConfig | None = None, roots: Sequence[Path] | None = None
) -> bytes:
    """The bytes of an image file, refused unless it is a regular file inside ``roots`` (if given)
    and at most ``config.max_bytes`` long."""
    cfg = config or ImageLoadConfig()
    return read_file_capped(Path(path), roots, cfg.max_bytes)


def load_image_file(
    path: str | os.PathLike[str], config: ImageLoadConfig | None = None, roots: Sequence[Path] | None = None
) -> LoadedImage:
    """Read and decode one image file; see ``read_image_file`` and ``load_image_bytes``."""
    cfg = config or ImageLoadConfig()
    data = read_image_file(path, cfg, roots)
    image, fmt = _decode(data, cfg, str(path))
    return LoadedImage(image=image, data=data, format=fmt)


def load_image_bytes(
    data: bytes, config: ImageLoadConfig | None = None, name: str = "<bytes>"
) -> Image.Image:
    """Decode image bytes into an upright RGB image; ``name`` labels error messages."""
    return _decode(data, config or ImageLoadConfig(), name)[0]


def load_scaled_image_bytes(
    data: bytes, config: ImageLoadConfig | None = None, name: str = "<bytes>", draft_side: int | None = None
) -> ScaledImage:
    """Decode image bytes; a JPEG larger than a ``draft_side`` x ``draft_side`` thumbnail is decoded
    at the smallest DCT scale (1/2, 1/4, 1/8) still at least that thumbnail's size. The checks are
    those of ``load_image_bytes`` (the pixel cap applies to the full size)."""
    return _decode_scaled(data, config or ImageLoadConfig(), name, draft_side)


def load_image(
    source: bytes | str | os.PathLike[str],
    config: ImageLoadConfig | None = None,
    roots: Sequence[Path] | None = None,
) -> Image.Image:
    """An upright RGB image from image bytes or from a path (``bytes`` are always image data)."""
    if isinstance(source, bytes):
        return load_image_bytes(source, config)
    return load_image_file(source, config, roots).image


def _decode(data: bytes, cfg: ImageLoadConfig, name: str) -> tuple[Image.Image, str]:
    decoded, fmt = _decode_with_format(data, cfg, name, None)
    return decoded.image, fmt


def _decode_scaled(data: bytes, cfg: ImageLoadConfig, name: str, draft_side: int | None) -> ScaledImage:
    return _decode_with_format(data, cfg, name, draft_side)[0]


def _decode_with_format(
    data: bytes, cfg: ImageLoadConfig, name: str, draft_side: int | None
) -> tuple[ScaledImage, str]:
    if not data:
        raise ImageError(f"{name}: no data (0 bytes)", reason="empty")
    if len(data) > cfg.max_bytes:
        raise ImageError(f"{name}: {len(data)} bytes, over the cap of {cfg.max_bytes}", "too_many_bytes")
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise ConfigError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code): truncated "
            "images would be half-decoded silently; set it back to False"
        )
    im = _open(data, cfg, name)
    with im:
        fmt = str(im.format)
        _check_pixels(im, cfg, name)
        stored = im.size
        try:
            scale = _draft(im, draft_side) if draft_side is not None else 1
            im.load()  # the first frame of an animation; every pixel decoded here, inside the try
            rgb = to_rgb(_upright(im, name))
        except ImageError:
            raise
        except Exception as exc:  # Pillow's plugins raise many types on damaged input; all are per-image
            raise _classify(exc, data, name) from exc
    if scale == 1:
        return ScaledImage(rgb, rgb.size), fmt
    turned = rgb.size != im.size  # the EXIF orientation turned it by 90 degrees
    return ScaledImage(rgb, (stored[1], stored[0]) if turned else stored, scale), fmt


def _draft(im: ImageFile.ImageFile, side: int) -> int:
    """Ask a JPEG decoder for the smallest DCT scale still covering the thumbnail of ``side``;
    returns the scale chosen (1 for other formats and for images that need no shrinking)."""
    if im.format not in ("JPEG", "MPO"):
        return 1
    target = thumbnail_size(im.size, side)
    if target == im.size:
        return 1
    width = im.size[0]
    drafted = im.draft("RGB", target)  # (mode, (0, 0, width / scale, height / scale)) or None
    return 1 if drafted is None else round(width / drafted[1][2])


def _open(data: bytes, cfg: ImageLoadConfig, name: str) -> ImageFile.ImageFile:
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=list(cfg.formats))
    except UnidentifiedImageError as exc:
        raise _unidentified(data, cfg, name) from exc
    except Exception as exc:  # a header damaged in a way the format plugin reports itself
        raise _classify(exc, data, name) from exc


def _check_pixels(im: Image.Image, cfg: ImageLoadConfig, name: str) -> None:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: the header gives an empty size {width}x{height}", reason="corrupt")
    if width * height > cfg.max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height} pixels, over the cap of {cfg.max_pixels}",
            reason="too_many_pixels",
        )


def _upright(im: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation; an unreadable EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(im)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError) as exc:
        log.warning("%s: EXIF orientation unreadable (%s); using the image as stored", name, exc)
        return im


def _classify(exc: Exception, data: bytes, name: str) -> ImageError:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageError(f"{name}: {text}", reason="too_many_pixels")
    if "truncated" in text.lower() or isinstance(exc, EOFError) or _riff_shorter_than_declared(data):
        return ImageError(f"{name}: truncated: {text}", reason="truncated")
    return ImageError(f"{name}: corrupt image data: {type(exc).__name__}: {text}", reason="corrupt")


def _unidentified(data: bytes, cfg: ImageLoadConfig, name: str) -> ImageError:
    """Name what the data looks like: a damaged allowed format, a refused format, or no image."""
    fmt = _sniff(data)
    if fmt is None:
        allowed = ", ".join(cfg.formats)
        return ImageError(f"{name}: not an image in an allowed format ({allowed})", "unsupported_format")
    if fmt not in cfg.formats:
        return ImageError(f"{name}: {fmt} is not an allowed format", reason="unsupported_format")
    return ImageError(f"{name}: starts like a {fmt} but its header cannot be read", reason="corrupt")


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


def _riff_shorter_than_declared(data: bytes) -> bool:
    """A RIFF container (WebP) declares its length; libwebp only says it cannot decode."""
    return data[:4] == b"RIFF" and len(data) >= 8 and int.from_bytes(data[4:8], "little") + 8 > len(data)
