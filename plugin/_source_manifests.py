"""JSONL and CSV manifests: one image per row, a ``path`` column, an optional ``id``, metadata.

Every field other than ``path`` and ``id`` becomes metadata (an index field). Relative paths are
resolved against the manifest's folder, so a manifest travels with its images. A bad row is a
``SourceError`` naming ``file:line``; with ``on_bad_row`` given, it is handed to that callback and
reading goes on (the ingest records it as a failure), otherwise it is raised.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import SourceError
from ._source_item import SourceItem

BadRowHandler = Callable[[SourceError], None]
_RESERVED = ("path", "id")


def iter_jsonl(manifest: Path, on_bad_row: BadRowHandler | None = None) -> Iterator[SourceItem]:
    """Items of a JSON Lines manifest: one object per line, blank lines ignored."""
    base = manifest.absolute().parent
    with _open(manifest, "rb") as lines:
        for lineno, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            origin = f"{manifest}:{lineno}"
            try:
                item = _item(_json_object(raw, origin), base, origin)
            except SourceError as exc:
                _bad(exc, on_bad_row)
                continue
            yield item


def iter_csv(manifest: Path, on_bad_row: BadRowHandler | None = None) -> Iterator[SourceItem]:
    """Items of a CSV manifest with a header row; values are strings, as written."""
    base = manifest.absolute().parent
    with _open(manifest, "r", newline="", encoding="utf-8-sig") as text:
        reader = csv.DictReader(text)
        try:
            _check_header(reader.fieldnames, manifest)
            for row in reader:
                origin = f"{manifest}:{reader.line_num}"
                try:
                    item = _item(_csv_row(row, origin), base, origin)
                except SourceError as exc:
                    _bad(exc, on_bad_row)
                    continue
                yield item
        except (csv.Error, UnicodeDecodeError) as exc:  # the rest of the file cannot be read reliably
            raise SourceError(
                f"{manifest}:{reader.line_num + 1}: unreadable CSV: {exc}", str(manifest)
            ) from exc


def _open(path: Path, mode: str, **kwargs: Any) -> Any:
    try:
        return path.open(mode, **kwargs)
    except OSError as exc:
        raise SourceError(f"{path}: cannot open the manifest: {exc.strerror or exc}", str(path)) from exc


def _bad(exc: SourceError, on_bad_row: BadRowHandler | None) -> None:
    if on_bad_row is None:
        raise exc
    on_bad_row(exc)


def _json_object(raw: bytes, origin: str) -> dict[str, Any]:
    try:
        row = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise SourceError(f"{origin}: not valid JSON: {exc}", origin) from exc
    if not isinstance(row, dict):
        raise SourceError(f"{origin}: expected a JSON object, got {type(row).__name__}", origin)
    return row


def _check_header(fieldnames: Any, manifest: Path) -> None:
    if not fieldnames:
        raise SourceError(
            f"{manifest}:1: empty CSV, expected a header row with a 'path' column", str(manifest)
        )
    if "path" not in fieldnames:
        raise SourceError(f"{manifest}:1: no 'path' column in the header {list(fieldnames)}", str(manifest))
    repeated = sorted({name for name in fieldnames if fieldnames.count(name) > 1})
    if repeated:
        raise SourceError(f"{manifest}:1: repeated columns {repeated} in the header", str(manifest))


def _csv_row(row: Mapping[str | None, Any], origin: str) -> dict[str, Any]:
    if None in row:  # DictReader puts surplus fields under the key None
        raise SourceError(f"{origin}: more fields than the header has columns", origin)
    if any(value is None for value in row.values()):  # and fills missing ones with None
        raise SourceError(f"{origin}: fewer fields than the header has columns", origin)
    return {str(key): value for key, value in row.items()}


def _item(row: dict[str, Any], base: Path, origin: str) -> SourceItem:
    path = row.get("path")
    if not isinstance(path, str) or not path.strip():
        raise SourceError(f"{origin}: 'path' must be a non-empty string, got {path!r}", origin)
    metadata = {key: value for key, value in row.items() if key not in _RESERVED}
    return SourceItem(
        path=base / path, id=_given_id(row.get("id"), origin), metadata=metadata, key=path, origin=origin
    )


def _given_id(value: Any, origin: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise SourceError(f"{origin}: 'id' must be a string or an integer, got {value!r}", origin)
