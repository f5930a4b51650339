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
from typing import Any, BinaryIO

from ...errors import SourceError
from ...image_refs import is_utf8_text
from .items import SourceItem

BadRowHandler = Callable[[SourceError], None]
"""Receives each entry a source cannot hand over as an item (a bad row, an unusable folder entry)."""
_RESERVED = ("path", "id")
MAX_ROW_BYTES = 1 << 20  # one manifest row; a longer line is a bad row


def iter_jsonl(manifest: Path, on_bad_row: BadRowHandler | None = None) -> Iterator[SourceItem]:
    """Items of a JSON Lines manifest: one object per line, blank lines ignored."""
    base = manifest.absolute().parent
    with _open(manifest, "rb") as lines:
        for lineno, raw in _capped_lines(lines):
            origin = f"{manifest}:{lineno}"
            try:
                if raw is None:
                    raise SourceError(f"{origin}: a line longer than {MAX_ROW_BYTES} bytes", origin)
                if not raw.strip():
                    continue
                item = _item(_json_object(raw, origin), base, origin)
            except SourceError as exc:
                _bad(exc, on_bad_row)
                continue
            yield item


def _capped_lines(lines: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) pairs; a line over ``MAX_ROW_BYTES`` is read past in pieces and given as
    None, so one runaway line neither fills memory nor ends the file."""
    lineno = 0
    while True:
        raw = lines.readline(MAX_ROW_BYTES + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) <= MAX_ROW_BYTES or raw.endswith(b"\n"):
            yield lineno, raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = lines.readline(MAX_ROW_BYTES + 1)
        yield lineno, None


def iter_csv(manifest: Path, on_bad_row: BadRowHandler | None = None) -> Iterator[SourceItem]:
    """Items of a CSV manifest with a header row; values are strings, as written.

    File names in the ``path`` column may be any bytes (undecodable ones pass through as
    surrogates, naming the same file); ids and metadata must be UTF-8. A row the CSV reader
    refuses (an over-long field, a stray quote) is a bad row; reading goes on at the next line.
    """
    base = manifest.absolute().parent
    with _open(manifest, "r", newline="", encoding="utf-8-sig", errors="surrogateescape") as text:
        reader = csv.DictReader(text)
        try:
            _check_header(reader.fieldnames, manifest)
        except csv.Error as exc:
            raise SourceError(f"{manifest}:1: unreadable CSV header: {exc}", str(manifest)) from exc
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                origin = f"{manifest}:{reader.line_num}"
                _bad(SourceError(f"{origin}: unreadable CSV row: {exc}", origin), on_bad_row)
                continue
            origin = f"{manifest}:{reader.line_num}"
            try:
                item = _item(_csv_row(row, origin), base, origin)
            except SourceError as exc:
                _bad(exc, on_bad_row)
                continue
            yield item


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
    except RecursionError as exc:  # thousands of nested brackets
        raise SourceError(f"{origin}: JSON nested too deeply", origin) from exc
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
    if "\x00" in path:  # no file system has such a name
        raise SourceError(f"{origin}: 'path' holds a NUL character: {path!r}", origin)
    metadata = {key: value for key, value in row.items() if key not in _RESERVED}
    if not _utf8_clean(metadata):  # no store can write lone surrogates (undecodable CSV bytes)
        raise SourceError(f"{origin}: metadata that is not valid UTF-8", origin)
    return SourceItem(
        path=base / path, id=_given_id(row.get("id"), origin), metadata=metadata, key=path, origin=origin
    )


def _given_id(value: Any, origin: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        if not is_utf8_text(value):
            raise SourceError(f"{origin}: an 'id' that is not valid UTF-8", origin)
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise SourceError(f"{origin}: 'id' must be a string or an integer, got {value!r}", origin)


def _utf8_clean(value: Any) -> bool:
    """Whether every string in a JSON-like value (keys included) is valid UTF-8."""
    if isinstance(value, str):
        return is_utf8_text(value)
    if isinstance(value, dict):
        return all(_utf8_clean(k) and _utf8_clean(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_utf8_clean(v) for v in value)
    return True  # numbers, booleans, None
