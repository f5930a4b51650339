"""Sources of images to ingest: folders, JSONL/CSV manifests, path lists (stdin), and sharding.

Every source is a generator of ``SourceItem`` in a deterministic order, so an ingest loop reads
them lazily (millions of files, flat memory) and a rerun sees the same sequence. ``Shard("I/N")``
keeps the items whose key hashes to I, so N workers on N machines split one collection with no
coordination: the shards are disjoint and together are the whole.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO

from ..errors import ConfigError, SourceError
from ._source_item import SourceItem, doc_id_for, document_id
from ._source_manifests import BadRowHandler, iter_csv, iter_jsonl

__all__ = [
    "DEFAULT_IMAGE_EXTENSIONS",
    "BadRowHandler",
    "Shard",
    "SourceItem",
    "doc_id_for",
    "document_id",
    "iter_csv",
    "iter_directory",
    "iter_jsonl",
    "iter_path_list",
    "iter_sources",
    "open_source",
    "parse_shard",
    "select_shard",
    "shard_of",
]

log = logging.getLogger(__name__)

DEFAULT_IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
)
_MANIFEST_READERS = {".jsonl": iter_jsonl, ".ndjson": iter_jsonl, ".csv": iter_csv}
_PATH_LIST_SUFFIXES = frozenset({".txt", ".lst"})


def iter_directory(
    root: str | os.PathLike[str],
    extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS,
    include_hidden: bool = False,
) -> Iterator[SourceItem]:
    """Image files under ``root``, recursively, sorted by path; ``extensions=None`` takes every file.

    Symlinked files are followed only when they resolve inside ``root`` (others are skipped and
    logged); symlinked folders are never descended, which rules out cycles and duplicates.
    Hidden names (".x") are skipped unless ``include_hidden``: they are mostly metadata files
    such as macOS's "._photo.jpg".
    """
    top = Path(root)
    if not top.is_dir():
        raise SourceError(f"{top}: not a folder", str(top))
    wanted = None if extensions is None else frozenset(e.lower() for e in extensions)
    yield from _walk(top, Path(os.path.realpath(top)), PurePosixPath(), wanted, include_hidden)


def _walk(
    folder: Path, real_root: Path, rel: PurePosixPath, wanted: frozenset[str] | None, hidden: bool
) -> Iterator[SourceItem]:
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        log.warning("%s: cannot list the folder (%s); skipped", folder, exc.strerror or exc)
        return
    for entry in entries:
        if not hidden and entry.name.startswith("."):
            continue
        path, key = folder / entry.name, rel / entry.name
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path, real_root, key, wanted, hidden)
        elif _wanted_file(entry, path, real_root, wanted):
            yield SourceItem(path=path, key=key.as_posix(), root=real_root, origin=str(folder))


def _wanted_file(entry: os.DirEntry[str], path: Path, real_root: Path, wanted: frozenset[str] | None) -> bool:
    if wanted is not None and path.suffix.lower() not in wanted:
        return False
    if entry.is_symlink() and not _link_stays_inside(path, real_root):
        return False
    if not entry.is_file():  # follows an in-root link to see what it names
        log.info("%s: not a regular file; skipped", path)
        return False
    return True


def _link_stays_inside(link: Path, real_root: Path) -> bool:
    target = Path(os.path.realpath(link))
    if not target.is_relative_to(real_root):
        log.warning("%s: symlink to %s, outside %s; skipped", link, target, real_root)
        return False
    if target.is_dir():
        log.info("%s: symlink to a folder; not descended", link)
        return False
    return True


def iter_path_list(
    lines: Iterable[str], base: Path | None = None, origin: str = "stdin"
) -> Iterator[SourceItem]:
    """One path per line (blank lines skipped, surrounding whitespace stripped); relative paths are
    resolved against ``base`` (default: the current folder)."""
    folder = (base or Path.cwd()).absolute()
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if text:
            yield SourceItem(path=folder / text, key=text, origin=f"{origin}:{lineno}")


def open_source(
    spec: str,
    extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS,
    on_bad_row: BadRowHandler | None = None,
    stdin: TextIO | None = None,
) -> Iterator[SourceItem]:
    """The items of one source named on a command line: ``-`` (paths on stdin), a folder, a
    ``.jsonl``/``.ndjson``/``.csv`` manifest or a ``.txt``/``.lst`` path list."""
    if spec == "-":
        return iter_path_list(stdin or sys.stdin)
    path = Path(spec)
    if path.is_dir():
        return iter_directory(path, extensions)
    suffix = path.suffix.lower()
    if not path.exists():
        raise SourceError(f"{spec}: no such file or folder", spec)
    if suffix in _MANIFEST_READERS:
        return _MANIFEST_READERS[suffix](path, on_bad_row)
    if suffix in _PATH_LIST_SUFFIXES:
        return _path_list_file(path)
    raise SourceError(
        f"{spec}: unknown kind of source; give a folder, a .jsonl/.ndjson/.csv manifest, "
        "a .txt/.lst list of paths, or - for paths on stdin",
        spec,
    )


def _path_list_file(path: Path) -> Iterator[SourceItem]:
    with path.open(encoding="utf-8") as lines:
        yield from iter_path_list(lines, base=path.absolute().parent, origin=str(path))


def iter_sources(
    specs: Sequence[str],
    shard: Shard | None = None,
    extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS,
    on_bad_row: BadRowHandler | None = None,
    stdin: TextIO | None = None,
) -> Iterator[SourceItem]:
    """The items of every source in turn (each opened when reached), restricted to ``shard``."""
    for spec in specs:
        yield from select_shard(open_source(spec, extensions, on_bad_row, stdin), shard)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (numbered from 0, like Kubernetes' JOB_COMPLETION_INDEX)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"shard {self}: the number of shards must be at least 1")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self}: the index must be in 0..{self.count - 1} (shards count from 0)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def contains(self, item: SourceItem) -> bool:
        return shard_of(item.shard_key, self.count) == self.index


def shard_of(key: str, count: int) -> int:
    """Which of ``count`` shards ``key`` falls in: the first 8 bytes of sha256(UTF-8 key), big-endian,
    modulo ``count`` — stable across processes, machines and Python versions, unlike ``hash()``."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> Shard:
    """``"I/N"`` -> ``Shard(I, N)``, e.g. ``"0/4"``; a clear ConfigError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise ConfigError(
            f"shard {text!r}: expected I/N with whole numbers, e.g. 0/4 (the first of 4 shards)"
        )
    return Shard(int(match[1]), int(match[2]))


def select_shard(items: Iterable[SourceItem], shard: Shard | None) -> Iterator[SourceItem]:
    """The items in ``shard`` (all of them when ``shard`` is None)."""
    if shard is None or shard.count == 1:
        yield from items
        return
    yield from (item for item in items if shard.contains(item))
