"""Image references: how a stored document names its file, losslessly, in text every store accepts.

A file name is bytes on POSIX; Python hands undecodable bytes over as lone surrogates, which
UTF-8 (SQLite, JSON for OpenSearch) cannot carry. A path that is valid UTF-8 is stored as it is
(what users read and what existing stores hold); any other is stored as a ``file://`` URI whose
percent-escapes give back the exact bytes. ``path_of_ref`` reverses both forms.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote_from_bytes, unquote_to_bytes

_FILE_URI = "file://"


def is_utf8_text(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (it holds no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def image_ref_of(path: str | os.PathLike[str]) -> str:
    """The stored reference of the file at ``path`` (made absolute): the path itself when it is
    valid UTF-8, else a ``file://`` URI of its bytes."""
    absolute = os.fspath(Path(path).absolute())  # not normalised: "link/.." must keep its meaning
    if is_utf8_text(absolute):
        return absolute
    return _FILE_URI + quote_from_bytes(os.fsencode(absolute), safe="/")


def path_of_ref(ref: str) -> Path:
    """The path an image reference names (a plain path, or a ``file://`` URI as written above)."""
    if ref.startswith(_FILE_URI):
        raw = unquote_to_bytes(ref[len(_FILE_URI) :])
        if raw.startswith(b"localhost/"):  # file://localhost/x is file:///x
            raw = raw[len(b"localhost") :]
        return Path(os.fsdecode(raw))
    return Path(ref)


def printable_path(path: str | os.PathLike[str]) -> str:
    """``path`` for messages and ledgers: itself when valid UTF-8, else its undecodable bytes as
    ``\\xNN`` escapes (readable, and writable to any UTF-8 file or terminal)."""
    text = os.fspath(path)
    if is_utf8_text(text):
        return text
    return os.fsencode(text).decode("utf-8", "backslashreplace")
