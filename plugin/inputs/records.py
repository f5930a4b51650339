"""Records: images a pipeline hands over in memory, as dicts, instead of naming files.

A record is ``{"id": str, "image": ..., "metadata": {...}}`` (opensearch-py's bulk helpers take
actions the same way): ``image`` is the encoded bytes of an image file, a path (``str`` or
``os.PathLike``) or a decoded ``PIL.Image.Image``; ``id`` is optional (then the sha256 of the bytes,
as for files, or ``pixels_id`` of a PIL image) and so is ``metadata`` (a JSON object whose fields
become index fields). ``iter_records`` reads them one at a time, so a generator of millions streams
through with flat memory.

A bad record (not a dict, no image, an image of another type, an id that is not a non-empty string,
metadata that is not JSON, an unknown key) becomes a ``SourceError`` with reason ``bad_record``
that the ingest records as failed; reading goes on at the next record.

A PIL image is taken as a decoded file is: its pixel count checked, EXIF orientation applied,
converted to RGB (alpha on white), so it embeds exactly as the file it was opened from.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

from PIL import Image, ImageOps

from ...errors import ImageError, SourceError
from ...image_refs import is_utf8_text
from .images import ImageLoadConfig
from .items import SourceItem
from .rgb import to_rgb

__all__ = ["RECORD_KEYS", "iter_records", "record_image"]

log = logging.getLogger(__name__)

RECORD_KEYS = frozenset({"id", "image", "metadata"})
_MAX_DEPTH = 64  # metadata nesting; deeper is refused rather than risking a RecursionError later


def iter_records(records: Iterable[Any], origin: str = "records") -> Iterator[SourceItem | SourceError]:
    """An item per record, or a ``SourceError`` (``bad_record``) naming ``origin[n]`` and why."""
    for n, record in enumerate(records):
        where = f"{origin}[{n}]"
        try:
            yield _item(record, where)
        except SourceError as exc:
            yield exc


def _item(record: Any, where: str) -> SourceItem:
    if not isinstance(record, Mapping):
        _bad(where, f"expected a dict with 'image', got {type(record).__name__}")
    unknown = sorted(map(str, set(record) - RECORD_KEYS))
    if unknown:
        _bad(where, f"unknown keys {unknown} (a record has 'id', 'image' and 'metadata')")
    doc_id = _id(record.get("id"), where)
    named = where if doc_id is None else f"{where} (id {doc_id!r})"
    metadata = record.get("metadata")
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, Mapping):
        _bad(named, f"'metadata' must be a dict, got {type(metadata).__name__}", where)
    else:
        metadata = dict(metadata)
        problem = _json_problem(metadata, "metadata", 0)
        if problem:
            _bad(named, problem, where)
    image = record.get("image")
    if isinstance(image, (bytes, bytearray, memoryview)):
        return SourceItem(path=None, id=doc_id, metadata=metadata, origin=where, content=bytes(image))
    if isinstance(image, Image.Image):
        return SourceItem(path=None, id=doc_id, metadata=metadata, origin=where, content=image)
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not isinstance(path, str) or not path or "\x00" in path:
            _bad(named, f"'image' is not a usable path: {image!r}", where)
        return SourceItem(path=Path(path), id=doc_id, metadata=metadata, key=path, origin=where)
    if image is None:
        _bad(named, "no 'image' (image bytes, a path or a PIL image)", where)
    _bad(named, f"'image' must be image bytes, a path or a PIL image, got {type(image).__name__}", where)


def _id(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        _bad(where, f"'id' must be a non-empty string, got {value!r}")
    if not is_utf8_text(value):
        _bad(where, "an 'id' that is not valid UTF-8")
    return value


def _json_problem(value: Any, at: str, depth: int) -> str | None:
    """Why ``value`` is not a JSON value a store can keep (None if it is): objects with string keys,
    lists, strings (valid UTF-8), finite numbers, booleans, null."""
    if depth > _MAX_DEPTH:
        return f"{at}: nested more than {_MAX_DEPTH} deep"
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{at}: {value} is not a JSON number"
    if isinstance(value, str):
        return None if is_utf8_text(value) else f"{at}: a string that is not valid UTF-8"
    if isinstance(value, (list, tuple)):
        found = (_json_problem(v, f"{at}[{i}]", depth + 1) for i, v in enumerate(value))
        return next((p for p in found if p), None)
    if isinstance(value, Mapping):
        for key, inner in value.items():
            if not isinstance(key, str):
                return f"{at}: key {key!r} is not a string"
            problem = _json_problem(inner, f"{at}.{key}", depth + 1)
            if problem:
                return problem
        return None
    return f"{at}: a {type(value).__name__} is not JSON (strings, numbers, booleans, lists, dicts)"


def _bad(named: str, why: str, where: str | None = None) -> NoReturn:
    """A bad record: the message names it (with its id, if any), the ledger its place."""
    raise SourceError(f"{named}: {why}", where or named, reason="bad_record")


def record_image(image: Image.Image, config: ImageLoadConfig, name: str) -> Image.Image:
    """A PIL image of a record as a decoded file would be: pixel count checked, upright, RGB.
    Raises ImageError (``too_many_pixels``, ``corrupt``) for one image's trouble."""
    width, height = image.size
    if width * height > config.max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height} pixels, over the cap of {config.max_pixels}",
            reason="too_many_pixels",
        )
    try:
        image.load()  # a lazily opened image reads its file here
    except Exception as exc:  # Pillow raises many types for damaged data; all are this image's
        raise ImageError(f"{name}: unusable image: {type(exc).__name__}: {exc}", reason="corrupt") from exc
    try:
        upright = ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, TypeError, KeyError, OSError) as exc:  # as for files: as stored
        log.warning("%s: EXIF orientation unreadable (%s); using the image as stored", name, exc)
        upright = image
    return to_rgb(upright)
