"""Read an image file's bytes safely: only a regular file, only inside the allowed roots, capped.

The checks are made on the opened file descriptor (``fstat``), not on the name, so a file swapped
for a FIFO or a device between the check and the read is still refused. The file is opened with
``O_NONBLOCK`` so that opening a FIFO returns at once instead of waiting for a writer, and the
byte cap is checked twice: against the size ``fstat`` reports before reading, and while reading
(a file that grows past the cap is refused, never truncated).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from ...errors import ImageError

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOFOLLOW", 0)  # the path is resolved first; a link swapped in later is refused
    | getattr(os, "O_BINARY", 0)
)
_CHUNK = 1 << 20


def resolve_inside(path: Path, roots: Sequence[Path] | None) -> Path:
    """Resolve every symlink in ``path``; raise ``outside_root`` if the target leaves all ``roots``."""
    try:
        real = Path(os.path.realpath(path, strict=True))
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file", reason="not_found") from exc
    except OSError as exc:  # a symlink loop, a name too long, a component that is not a folder
        raise ImageError(f"{path}: cannot resolve the path: {exc.strerror or exc}", "unreadable") from exc
    except ValueError as exc:  # a NUL byte: no file system has such a name
        raise ImageError(f"{path!r}: not a usable path: {exc}", "unreadable") from exc
    if roots is None:
        return real
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return real
    names = ", ".join(str(r) for r in roots)
    raise ImageError(f"{path}: resolves to {real}, outside the allowed roots ({names})", "outside_root")


def open_inside(path: Path, roots: Sequence[Path] | None) -> int:
    """A read-only descriptor of the file at ``path``, after resolving it inside ``roots`` (if given);
    check what it is on the descriptor, not on the name."""
    real = resolve_inside(path, roots)
    try:
        return os.open(real, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file", reason="not_found") from exc
    except OSError as exc:  # permission denied, ELOOP from O_NOFOLLOW, ...
        raise ImageError(f"{path}: cannot open: {exc.strerror or exc}", reason="unreadable") from exc


def read_file_capped(path: Path, roots: Sequence[Path] | None, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``path`` (inside ``roots`` if given), at most ``max_bytes``.

    Raises ImageError with reason ``not_found``, ``outside_root``, ``not_regular_file``,
    ``unreadable``, ``empty`` or ``too_many_bytes``.
    """
    fd = open_inside(path, roots)
    try:
        return _read_fd(fd, path, max_bytes)
    finally:
        os.close(fd)


def check_opened(fd: int, path: Path, max_bytes: int) -> os.stat_result:
    """The opened file's status, after refusing anything but a regular file of 1..``max_bytes``
    bytes (checked on the descriptor, so a file swapped after the name was checked is caught)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        kind = _kind(info.st_mode)
        raise ImageError(f"{path}: is a {kind}, not a regular file", reason="not_regular_file")
    _check_size(path, info.st_size, max_bytes)
    return info


def _read_fd(fd: int, path: Path, max_bytes: int) -> bytes:
    check_opened(fd, path, max_bytes)
    chunks: list[bytes] = []
    total = 0
    try:
        while total <= max_bytes:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise ImageError(f"{path}: read failed: {exc.strerror or exc}", reason="unreadable") from exc
    _check_size(path, total, max_bytes)
    return b"".join(chunks)


def _check_size(path: Path, size: int, max_bytes: int) -> None:
    if size == 0:
        raise ImageError(f"{path}: the file is empty (0 bytes)", reason="empty")
    if size > max_bytes:
        raise ImageError(f"{path}: more than the {max_bytes}-byte cap", reason="too_many_bytes")


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "folder",
        stat.S_ISFIFO: "FIFO",
        stat.S_ISCHR: "character device",
        stat.S_ISBLK: "block device",
        stat.S_ISSOCK: "socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "special file")
