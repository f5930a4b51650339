"""Metadata filters of the LocalStore, answered from an index of (field, kind, value, row) terms.

Semantics (OpenSearch's ``filter_clause`` gives the same per field mapping; docs/search.md, "Filters:
what matches"):

- ``{field: value}`` term, ``{field: [v1, v2]}`` terms (any of them), ``{field: {"gte": a, "lt": b}}``
  range with ``gt``/``gte``/``lt``/``lte``; every field's condition must match.
- Nested objects are flattened to dotted names (``{"camera": {"model": "x"}}`` is ``camera.model``),
  and a list gives its field several values: the document matches when any value does (a list of
  objects flattens the same way). A missing field or null never matches.
- Types are strict: a string matches only strings, a number only numbers (``2 == 2.0``), a boolean
  only booleans; a numeric range never matches a string, a string range (ISO dates) only strings.

Each field's condition is one look-up in the ``terms`` index (no scan of the documents), so a
filter selects the candidate rows before ranking instead of thinning out a top-k.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ....errors import StoreError

BOOL, NUMBER, TEXT = 0, 1, 2  # the ``kind`` column: values of different kinds never match
_RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_INT64 = 2**63

Term = tuple[str, int, Any]  # (field, kind, value)


def flatten(metadata: Mapping[str, Any]) -> list[Term]:
    """The distinct indexed terms of one document's metadata."""
    return list(dict.fromkeys(_walk(metadata, "")))


def _walk(value: Any, field: str) -> Iterator[Term]:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _walk(inner, f"{field}.{key}" if field else str(key))
    elif isinstance(value, (list, tuple)):
        for inner in value:
            yield from _walk(inner, field)
    elif isinstance(value, bool):
        yield field, BOOL, int(value)
    elif isinstance(value, int):
        yield field, NUMBER, value if -_INT64 <= value < _INT64 else float(value)
    elif isinstance(value, float):
        yield field, NUMBER, value
    elif isinstance(value, str):
        yield field, TEXT, value
    # None is not indexed: a null field never matches, as in OpenSearch


def compile_filters(filters: Mapping[str, Any] | None) -> list[tuple[str, list[Any]]]:
    """One ``(sql, params)`` per field; each selects the rows whose field matches its condition."""
    if not filters:
        return []
    if not isinstance(filters, Mapping):
        raise StoreError(f"filters must be a mapping of field to condition, got {type(filters).__name__}")
    queries = []
    for field, condition in filters.items():
        if not isinstance(field, str) or not field:
            raise StoreError(f"filter field names must be non-empty strings, got {field!r}")
        if isinstance(condition, Mapping):
            parts = [_range(field, condition)]
        elif isinstance(condition, (list, tuple, set, frozenset)):
            parts = _terms(field, list(condition))
        else:
            parts = _terms(field, [condition])
        # one indexed look-up per kind; rows may repeat (a list value), the caller dedupes
        sql = " UNION ALL ".join(f"SELECT row FROM terms WHERE field = ? AND {where}" for where, _ in parts)
        queries.append((sql or "SELECT row FROM terms WHERE 0", [p for _, ps in parts for p in [field, *ps]]))
    return queries


def _terms(field: str, values: Sequence[object]) -> list[tuple[str, list[Any]]]:
    bad = [v for v in values if not (isinstance(v, (str, bool)) or _is_number(v))]
    if bad:
        raise StoreError(
            f"filter on {field!r}: {bad[0]!r} is not a string, finite number or boolean "
            "(a range is written as {'gte': a, 'lt': b})"
        )
    by_kind: dict[int, list[Any]] = {}  # kind -> values of that kind
    for v in values:
        if isinstance(v, bool):
            by_kind.setdefault(BOOL, []).append(int(v))
        else:
            by_kind.setdefault(TEXT if isinstance(v, str) else NUMBER, []).append(v)
    return [(f"kind = {kind} AND value IN ({', '.join('?' * len(vs))})", vs) for kind, vs in by_kind.items()]


def _range(field: str, condition: Mapping[Any, Any]) -> tuple[str, list[Any]]:
    unknown = set(condition) - set(_RANGE_OPS)
    if unknown or not condition:
        got = sorted(map(str, condition)) or "nothing"
        raise StoreError(f"range filter on {field!r} takes gt, gte, lt, lte; got {got}")
    bounds = list(condition.values())
    if all(_is_number(b) for b in bounds):
        kind = NUMBER
    elif all(isinstance(b, str) for b in bounds):
        kind = TEXT
    else:
        raise StoreError(f"range filter on {field!r}: bounds must be all finite numbers or all strings")
    tests = [f"value {_RANGE_OPS[op]} ?" for op in condition]
    return " AND ".join([f"kind = {kind}", *tests]), bounds


def _is_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) if isinstance(value, float) else -_INT64 <= value < _INT64


def known_fields(conn: sqlite3.Connection, fields: Iterable[str]) -> set[str]:
    """Those of ``fields`` that at least one document has a (non-null) value for; read-only."""
    sql = "SELECT 1 FROM terms WHERE field = ? LIMIT 1"
    return {field for field in dict.fromkeys(fields) if conn.execute(sql, (field,)).fetchone()}


_KIND_NAMES = {BOOL: "boolean", NUMBER: "number", TEXT: "text"}
# each distinct field by one index seek from the previous one, never a scan of all the terms
_DISTINCT_FIELDS = """WITH RECURSIVE f(field) AS (
    SELECT MIN(field) FROM terms
    UNION ALL SELECT (SELECT MIN(field) FROM terms WHERE field > f.field) FROM f WHERE f.field IS NOT NULL
) SELECT field FROM f WHERE field IS NOT NULL"""


def field_kinds(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Every field with a value in the filter index, sorted, with the kinds of its values."""
    sql = "SELECT 1 FROM terms WHERE field = ? AND kind = ? LIMIT 1"
    out: dict[str, list[str]] = {}
    for (field,) in conn.execute(_DISTINCT_FIELDS).fetchall():
        out[field] = [
            name for kind, name in _KIND_NAMES.items() if conn.execute(sql, (field, kind)).fetchone()
        ]
    return out
