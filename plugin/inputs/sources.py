"""Sources of images to ingest: folders, JSONL/CSV manifests, path lists (stdin), and sharding.

Every source is a generator of ``SourceItem`` in a deterministic order, so an ingest loop reads
them lazily (millions of files, flat memory) and a rerun sees the same sequence. ``Shard("I/N")``
keeps the items whose key hashes to I, so N workers on N machines split one collection with no
coordination: the shards are disjoint and together are the whole.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TextIO

from ...errors import ConfigError, SourceError
from ...image_refs import printable_path
from .items import SourceItem, doc_id_for, document_id
from .manifests import BadRowHandler, iter_csv, iter_jsonl

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
    "read_sources",
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
    on_problem: BadRowHandler | None = None,
) -> Iterator[SourceItem]:
    """Image files under ``root``, recursively, sorted by path; ``extensions=None`` takes every file.

    Symlinked files are followed only when they resolve inside ``root``; symlinked folders are never
    descended, which rules out cycles and duplicates. Hidden names (".x") are skipped unless
    ``include_hidden``: they are mostly metadata files such as macOS's "._photo.jpg".

    An entry with a wanted extension that is not taken is a ``SourceError`` handed to ``on_problem``
    (logged when it is None): skipped by policy (FIFOs, devices, links leaving ``root`` or naming a
    folder) or failed (``unreadable``: a symlink loop, an I/O or permission error; ``not_found``: a
    dangling link). A problem with one entry never stops the walk.
    """
    top = Path(root)
    if not top.is_dir():
        raise SourceError(f"{top}: not a folder", str(top))
    wanted = None if extensions is None else frozenset(e.lower() for e in extensions)
    walk = _Walk(Path(os.path.realpath(top)), wanted, include_hidden, on_problem or _log_problem)
    yield from walk.folder(top, PurePosixPath())


@dataclass(frozen=True)
class _Walk:
    real_root: Path
    wanted: frozenset[str] | None
    hidden: bool
    on_problem: BadRowHandler

    def folder(self, folder: Path, rel: PurePosixPath) -> Iterator[SourceItem]:
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            self._problem(folder, rel, "unreadable", f"cannot list the folder: {exc.strerror or exc}")
            return
        for entry in entries:
            if not self.hidden and entry.name.startswith("."):
                continue
            path, key = folder / entry.name, rel / entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    yield from self.folder(path, key)
                elif self._wanted(path) and self._usable(entry, path, key):
                    yield SourceItem(path=path, key=key.as_posix(), root=self.real_root, origin=str(folder))
            except OSError as exc:  # any OS error is this entry's failure, never the walk's
                self._problem(path, key, "unreadable", f"cannot read the entry: {exc.strerror or exc}")

    def _wanted(self, path: Path) -> bool:
        return self.wanted is None or path.suffix.lower() in self.wanted

    def _usable(self, entry: os.DirEntry[str], path: Path, key: PurePosixPath) -> bool:
        """Whether the entry is a regular file (or an in-root link to one); records why not."""
        if entry.is_file(follow_symlinks=False):  # the listing's file type: no stat per image
            return True
        try:
            mode = entry.stat().st_mode  # follows a link, so a loop raises ELOOP here
        except FileNotFoundError:
            self._problem(path, key, "not_found", "a symlink to nothing (dangling)")
            return False
        if entry.is_symlink():
            target = Path(os.path.realpath(path, strict=True))
            if not target.is_relative_to(self.real_root):
                why = f"a symlink to {printable_path(target)}, outside {self.real_root}"
                return self._skip(path, key, "outside_root", why)
            if stat.S_ISDIR(mode):
                return self._skip(path, key, "not_regular_file", "a symlink to a folder (not descended)")
        if not stat.S_ISREG(mode):
            return self._skip(path, key, "not_regular_file", "not a regular file (a FIFO, socket or device)")
        return True

    def _skip(self, path: Path, key: PurePosixPath, reason: str, why: str) -> bool:
        self._problem(path, key, reason, why, skipped=True)
        return False

    def _problem(self, path: Path, key: PurePosixPath, reason: str, why: str, skipped: bool = False) -> None:
        shown = printable_path(path)
        verb = "skipped" if skipped else "failed"
        self.on_problem(
            SourceError(f"{shown}: {why}; {verb}", shown, reason=reason, key=key.as_posix(), skipped=skipped)
        )


def _log_problem(problem: SourceError) -> None:
    log.log(logging.INFO if problem.skipped else logging.WARNING, "%s", problem)


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
        return iter_path_list(stdin or _stdin_lines())
    path = Path(spec)
    if path.is_dir():
        return iter_directory(path, extensions, on_problem=on_bad_row)
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
    # file names are bytes: undecodable ones pass through as surrogates and name the same file
    with path.open(encoding="utf-8", errors="surrogateescape") as lines:
        yield from iter_path_list(lines, base=path.absolute().parent, origin=str(path))


def _stdin_lines() -> TextIO:
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:
        return sys.stdin
    return io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape")


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


def read_sources(
    specs: Sequence[str],
    shard: Shard | None = None,
    extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS,
    stdin: TextIO | None = None,
) -> Iterator[SourceItem | SourceError]:
    """The items of ``specs`` (see ``iter_sources``) with the entries a source cannot hand over (bad
    manifest rows, unusable folder entries) passed along as ``SourceError`` so the ingest records
    them instead of stopping. A folder entry belongs to the shard of its path; a bad row has no
    shard key, so only shard 0 (or an unsharded run) reports it and N workers count each once."""
    problems: list[SourceError] = []

    def keep(problem: SourceError) -> None:
        if _in_shard(problem, shard):
            problems.append(problem)

    for item in iter_sources(specs, shard, extensions, on_bad_row=keep, stdin=stdin):
        yield from problems
        problems.clear()
        yield item
    yield from problems


def _in_shard(problem: SourceError, shard: Shard | None) -> bool:
    if shard is None or shard.count == 1:
        return True
    if problem.key is None:
        return shard.index == 0
    return shard_of(problem.key, shard.count) == shard.index
