"""Validation of query arguments shared by the Python API, the CLI and the HTTP API.

Both stores check filters themselves, but with StoreErrors; checking here first gives the caller a
ConfigError (a bad request) with the same rules on either store, before any image is decoded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from ..preprocess import Box

MAX_FILTER_FIELDS = 32
MAX_FILTER_VALUES = 1024
_FIELD = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_RANGE_OPS = frozenset({"gt", "gte", "lt", "lte"})


def check_k(k: int, limit: int | None = None) -> int:
    """``k`` as an int in ``1..limit``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    if limit is not None and k > limit:
        raise ConfigError(f"k must be at most {limit}, got {k}")
    return k


def check_filters(filters: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Filters as a plain dict: ``{field: value}``, ``{field: [values]}`` or ``{field: {"gte": a, ...}}``.

    Field names are dotted paths of letters, digits, ``_`` and ``-``; values are strings, finite
    numbers or booleans; range bounds are all numbers or all strings.
    """
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise ConfigError(f"filters must be an object of field: condition, got {type(filters).__name__}")
    if len(filters) > MAX_FILTER_FIELDS:
        raise ConfigError(f"at most {MAX_FILTER_FIELDS} filter fields, got {len(filters)}")
    out: dict[str, Any] = {}
    for field, condition in filters.items():
        if not isinstance(field, str) or not _FIELD.match(field):
            raise ConfigError(f"filter field {field!r} must be a dotted path of letters, digits, '_' or '-'")
        out[field] = _condition(field, condition)
    return out or None


def _condition(field: str, condition: Any) -> Any:
    if isinstance(condition, Mapping):
        if not condition or set(condition) - _RANGE_OPS:
            got = sorted(map(str, condition)) or "nothing"
            raise ConfigError(f"range filter on {field!r} takes gt, gte, lt, lte; got {got}")
        bounds = list(condition.values())
        if not (all(_is_number(b) for b in bounds) or all(isinstance(b, str) for b in bounds)):
            raise ConfigError(f"range filter on {field!r}: bounds must be all numbers or all strings")
        return dict(condition)
    values = list(condition) if isinstance(condition, (list, tuple, set, frozenset)) else [condition]
    if not values or len(values) > MAX_FILTER_VALUES:
        raise ConfigError(f"filter on {field!r} needs 1 to {MAX_FILTER_VALUES} values, got {len(values)}")
    bad = [v for v in values if not (isinstance(v, (str, bool)) or _is_number(v))]
    if bad:
        raise ConfigError(f"filter on {field!r}: {bad[0]!r} is not a string, finite number or boolean")
    return values if isinstance(condition, (list, tuple, set, frozenset)) else condition


def condition_kinds(condition: Any) -> set[str]:
    """The kinds (``number``, ``text``, ``boolean``) of the values a filter condition compares with."""
    return {kind for kind, _ in parts_by_kind(condition)}


def parts_by_kind(condition: Any) -> list[tuple[str, Any]]:
    """A checked filter condition split by the kind of its values: ``(kind, condition)`` pairs."""
    if isinstance(condition, Mapping):  # bounds are all numbers or all strings (checked before)
        strings = all(isinstance(b, str) for b in condition.values())
        return [("text" if strings else "number", dict(condition))]
    many = isinstance(condition, list | tuple | set | frozenset)
    grouped: dict[str, list[Any]] = {}
    for value in list(condition) if many else [condition]:
        kind = "boolean" if isinstance(value, bool) else "text" if isinstance(value, str) else "number"
        grouped.setdefault(kind, []).append(value)
    return [(kind, values if many else values[0]) for kind, values in grouped.items()]


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) if isinstance(value, float) else -(2**63) <= value < 2**63


class TypedCrop(tuple[float, float, float, float]):
    """A box ``(x1, y1, x2, y2)`` that remembers how its user typed it (``"10,20,500,400 (x,y,w,h)"``),
    so an error about it can echo that instead of the converted box."""

    typed: str
    xywh: tuple[float, float, float, float] | None  # the numbers typed, for an echo in their form

    def __new__(
        cls, box: Box, typed: str, xywh: tuple[float, float, float, float] | None = None
    ) -> TypedCrop:
        made = super().__new__(cls, box)
        made.typed, made.xywh = typed, xywh
        return made

    def __getnewargs__(self) -> tuple[Box, str, tuple[float, float, float, float] | None]:
        return (self[0], self[1], self[2], self[3]), self.typed, self.xywh


def shown_crop(box: Sequence[object]) -> str:
    """``box`` as its user wrote it: ``10,20,500,400 (x,y,w,h)`` for a typed crop, else
    ``(10, 20, 510, 420) (x1, y1, x2, y2)`` (the Python API's convention)."""
    if isinstance(box, TypedCrop):
        return box.typed
    return f"({', '.join(_number_text(v) for v in box)}) (x1, y1, x2, y2)"


def _number_text(value: object) -> str:
    if _is_number(value):
        number = float(value)  # type: ignore[arg-type]
        return str(int(number)) if number.is_integer() else repr(number)
    return repr(value)


def check_box(box: Box, size: tuple[int, int]) -> Box:
    """A crop box ``(x1, y1, x2, y2)`` in pixels, non-empty and inside a ``size = (w, h)`` image.

    Errors echo the box as its user typed it (see ``TypedCrop``).
    """
    if len(box) != 4 or not all(_is_number(v) for v in box):
        raise ConfigError(f"crop must be four finite numbers (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    width, height = size
    if not (x1 < x2 and y1 < y2):
        raise ConfigError(f"crop {shown_crop(box)} is empty (expected x1 < x2 and y1 < y2)")
    if not (x1 >= 0 and y1 >= 0 and x2 <= width and y2 <= height):
        raise ConfigError(f"crop {shown_crop(box)} leaves the {width}x{height} image")
    if round(x2) - round(x1) < 1 or round(y2) - round(y1) < 1:
        raise ConfigError(f"crop {shown_crop(box)} is smaller than one pixel")
    return (x1, y1, x2, y2)


def xywh_to_box(x: float, y: float, w: float, h: float) -> Box:
    """``x, y, width, height`` (the CLI's and the HTTP API's crop) as a box ``(x1, y1, x2, y2)``."""
    return (x, y, x + w, y + h)


def parse_crop(text: str) -> TypedCrop:
    """``"x,y,w,h"`` (pixels of the full image) as a box ``(x1, y1, x2, y2)`` that errors show as typed."""
    parts = [p.strip() for p in text.split(",")]
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"crop {text!r} must be four numbers x,y,w,h (pixels of the full image)") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ConfigError(f"crop {text!r} needs finite numbers and a positive width and height")
    return TypedCrop(xywh_to_box(x, y, w, h), f"{','.join(parts)} (x,y,w,h)", (x, y, w, h))
