"""Metadata filters of the LocalStore, compiled to one SQL condition over the ``docs`` table.

Semantics (the same as the OpenSearch store's term/terms/range queries on keyword/numeric fields):

- ``{field: value}`` term, ``{field: [v1, v2]}`` terms (any of them), ``{field: {"gte": a, "lt": b}}``
  range with ``gt``/``gte``/``lt``/``lte``; every field's condition must match.
- Types are strict: a string matches only strings, a number only numbers (``2 == 2.0``), a boolean
  only booleans; a numeric range never matches a string, a string range (ISO dates) only strings.
- A field whose stored value is a list matches when any element matches; a missing field never does.
- Field names are dotted paths into the metadata (``camera.model``); each part is letters, digits,
  ``_`` or ``-``.

The condition selects candidate rows before ranking, so a filter restricts the search instead of
thinning out a top-k.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import StoreError

_PART = re.compile(r"^[A-Za-z0-9_\-]+$")
_RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NUMBER = "{t} IN ('integer', 'real')"
_INT64 = 2**63


def compile_filters(filters: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
    """``(sql, params)``: a WHERE condition on ``docs.metadata`` (``"1"`` when there is no filter)."""
    if not filters:
        return "1", []
    if not isinstance(filters, Mapping):
        raise StoreError(f"filters must be a mapping of field to condition, got {type(filters).__name__}")
    clauses: list[str] = []
    params: list[Any] = []
    for field, condition in filters.items():
        path = _json_path(field)
        pred, pred_params = _predicate(field, condition)
        # a list value matches when any element does; a scalar is compared directly
        in_list = pred.format(v="e.value", t="e.type")
        scalar = pred.format(v=f"json_extract(metadata, '{path}')", t=f"json_type(metadata, '{path}')")
        clauses.append(
            f"(CASE json_type(metadata, '{path}') WHEN 'array' THEN EXISTS (SELECT 1 FROM "
            f"json_each(metadata, '{path}') AS e WHERE {in_list}) ELSE {scalar} END)"
        )
        params += pred_params + pred_params
    return " AND ".join(clauses), params


def _json_path(field: object) -> str:
    parts = field.split(".") if isinstance(field, str) else []
    if not parts or not all(_PART.match(p) for p in parts):
        raise StoreError(
            f"filter field {field!r} must be a dotted path of names made of letters, digits, '_' or '-'"
        )
    return "$" + "".join(f'."{p}"' for p in parts)


def _predicate(field: str, condition: object) -> tuple[str, list[Any]]:
    """A condition on one value ``{v}`` of JSON type ``{t}`` (placeholders), with its parameters."""
    if isinstance(condition, Mapping):
        return _range(field, condition)
    if isinstance(condition, (list, tuple, set, frozenset)):
        return _terms(field, list(condition))
    return _terms(field, [condition])


def _terms(field: str, values: Sequence[object]) -> tuple[str, list[Any]]:
    texts = [v for v in values if isinstance(v, str)]
    numbers = [v for v in values if _is_number(v)]
    flags = {v for v in values if isinstance(v, bool)}
    bad = [v for v in values if not (isinstance(v, (str, bool)) or _is_number(v))]
    if bad:
        raise StoreError(
            f"filter on {field!r}: {bad[0]!r} is not a string, finite number or boolean "
            "(a range is written as {'gte': a, 'lt': b})"
        )
    preds: list[str] = []
    if texts:
        preds.append(f"({{t}} = 'text' AND {{v}} IN ({_marks(texts)}))")
    if numbers:
        preds.append(f"({_NUMBER} AND {{v}} IN ({_marks(numbers)}))")
    preds += [f"{{t}} = '{'true' if flag else 'false'}'" for flag in sorted(flags)]
    return ("(" + " OR ".join(preds) + ")" if preds else "0"), [*texts, *numbers]


def _range(field: str, condition: Mapping[Any, Any]) -> tuple[str, list[Any]]:
    unknown = set(condition) - set(_RANGE_OPS)
    if unknown or not condition:
        got = sorted(map(str, condition)) or "nothing"
        raise StoreError(f"range filter on {field!r} takes gt, gte, lt, lte; got {got}")
    bounds = list(condition.values())
    if all(_is_number(b) for b in bounds):
        kind = _NUMBER
    elif all(isinstance(b, str) for b in bounds):
        kind = "{t} = 'text'"
    else:
        raise StoreError(f"range filter on {field!r}: bounds must be all finite numbers or all strings")
    tests = [f"{{v}} {_RANGE_OPS[op]} ?" for op in condition]
    return "(" + " AND ".join([kind, *tests]) + ")", bounds


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) if isinstance(value, float) else -_INT64 <= value < _INT64


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))
