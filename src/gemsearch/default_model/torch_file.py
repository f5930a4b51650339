"""A PyTorch weights file (a state dict saved by ``torch.save``) read into numpy arrays, without torch
and without running anything the file names.

``torch.save`` writes a pickle, and unpickling calls whatever functions the pickle names. This reader
resolves only the names a state dict of tensors needs, to functions of its own: the ordered dict,
the tensor rebuild functions and the storage types (as tags of their dtype). Any other name (a
function, a class, ``os.system``) is refused with a ``ModelError`` before it is looked up.

Two layouts are read: the zip archive of torch >= 1.6 (``<root>/data.pkl`` and one entry per storage
under ``<root>/data/``) and the older stream (magic number, protocol, system info, the pickle, the
storage keys, then each storage as its element count and bytes), which the Lite0 package ships.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from gemsearch.errors import ModelError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2", "LongStorage": "i8",
    "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
}  # fmt: skip


class _StorageType(NamedTuple):
    """What ``torch.FloatStorage`` & co. stand for in the pickle: an element type, nothing callable."""

    dtype: str


class _StorageRef(NamedTuple):
    key: str
    dtype: str
    numel: int


class _PendingTensor(NamedTuple):
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _PendingTensor:
    if not isinstance(storage, _StorageRef):
        raise ModelError("a tensor whose storage is not a storage")
    return _PendingTensor(storage, int(offset), tuple(map(int, size)), tuple(map(int, stride)))


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data  # a saved nn.Parameter: its tensor


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    """Resolves only ``_ALLOWED`` names; storages become references, read once the pickle is done
    (``dtypes``: the element type of each storage the pickle named)."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.dtypes: dict[str, str] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise ModelError(
                f"refusing {module}.{name}: a weights file may name only tensors, storages and dicts"
            ) from None

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ModelError(f"unexpected persistent id {str(pid)[:80]!r}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(kind, _StorageType) or not isinstance(numel, int):
            raise ModelError(f"unexpected storage record {str(pid)[:80]!r}")
        if self.dtypes.setdefault(str(key), kind.dtype) != kind.dtype:
            raise ModelError(f"storage {key} named with two element types")
        if len(pid) > 5 and pid[5] is not None:  # views of storages, saved by torch before 0.4
            raise ModelError("storage views (files of torch < 0.4) are not read; save the state dict again")
        return _StorageRef(str(key), kind.dtype, numel)


def read_state_dict(path: str | Path) -> dict[str, npt.NDArray[Any]]:
    """The tensors of the state dict saved in ``path``, by name, as numpy arrays (copies, C order)."""
    try:
        with open(path, "rb") as f:
            return _read(f)
    except FileNotFoundError as exc:
        raise ModelError(f"{path}: no such weights file") from exc
    except (OSError, EOFError, ValueError, struct.error, pickle.UnpicklingError, zipfile.BadZipFile,
            KeyError, IndexError, TypeError) as exc:  # fmt: skip
        raise ModelError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from exc
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


def _read(f: IO[bytes]) -> dict[str, npt.NDArray[Any]]:
    if zipfile.is_zipfile(f):
        tensors, storages = _read_zip(f)
    else:
        f.seek(0)
        tensors, storages = _read_legacy(f)
    if not isinstance(tensors, Mapping) or not all(
        isinstance(k, str) and isinstance(v, _PendingTensor) for k, v in tensors.items()
    ):
        raise ModelError("expected a state dict of tensors")
    return {name: _materialise(t, storages) for name, t in tensors.items()}


def _read_zip(f: IO[bytes]) -> tuple[Any, Callable[[_StorageRef], npt.NDArray[Any]]]:
    archive = zipfile.ZipFile(f)
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ModelError("a zip file without one <root>/data.pkl: not a torch weights file")
    root = pickles[0][: -len("data.pkl")]
    order = "<"
    if f"{root}byteorder" in archive.namelist():
        order = "<" if archive.read(f"{root}byteorder").strip() == b"little" else ">"
    tensors = _Unpickler(io.BytesIO(archive.read(pickles[0]))).load()
    read: dict[str, npt.NDArray[Any]] = {}  # storages shared by several tensors are read once

    def storage(ref: _StorageRef) -> npt.NDArray[Any]:
        if ref.key not in read:
            data = np.frombuffer(archive.read(f"{root}data/{ref.key}"), dtype=order + ref.dtype)
            read[ref.key] = _sized(data, ref.numel, ref.key)
        return read[ref.key]

    return tensors, storage


def _read_legacy(f: IO[bytes]) -> tuple[Any, Callable[[_StorageRef], npt.NDArray[Any]]]:
    header = [_Unpickler(f).load() for _ in range(3)]  # magic number, protocol version, system info
    if header[0] != _LEGACY_MAGIC or not isinstance(header[2], dict):
        raise ModelError("not a torch weights file (no zip archive, no legacy magic number)")
    order = "<" if header[2].get("little_endian", True) else ">"
    unpickler = _Unpickler(f)
    tensors = unpickler.load()
    keys = _Unpickler(f).load()
    if not isinstance(keys, list) or set(map(str, keys)) != set(unpickler.dtypes):
        raise ModelError("the storage key list does not match the storages the tensors use")
    end = os.fstat(f.fileno()).st_size
    roots: dict[str, npt.NDArray[Any]] = {}
    for key in map(str, keys):
        (numel,) = struct.unpack(order + "q", f.read(8))
        dtype = np.dtype(order + unpickler.dtypes[key])
        if not 0 <= numel * dtype.itemsize <= end - f.tell():
            raise ModelError(f"storage {key}: {numel} elements do not fit in the rest of the file")
        roots[key] = np.frombuffer(f.read(numel * dtype.itemsize), dtype=dtype)

    def storage(ref: _StorageRef) -> npt.NDArray[Any]:
        return _sized(roots[ref.key], ref.numel, ref.key)

    return tensors, storage


def _sized(data: npt.NDArray[Any], numel: int, key: str) -> npt.NDArray[Any]:
    if numel < 0 or data.size != numel:
        raise ModelError(f"storage {key}: expected {numel} elements, the file holds {data.size}")
    return data


def _materialise(t: _PendingTensor, storages: Callable[[_StorageRef], npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """The tensor's elements, after checking that its view stays inside its storage."""
    data = storages(t.storage)
    if len(t.size) != len(t.stride) or min((*t.size, *t.stride, t.offset), default=0) < 0:
        raise ModelError(f"a tensor of storage {t.storage.key} has an invalid size or stride")
    if 0 in t.size:
        return np.zeros(t.size, dtype=data.dtype.newbyteorder("="))
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True))
    if last >= data.size:
        raise ModelError(f"a tensor reaches past the end of storage {t.storage.key}")
    if math.prod(t.size) > data.size - t.offset:  # stride 0 repeats elements: no weights do, bombs do
        raise ModelError(f"a tensor of storage {t.storage.key} has more elements than its storage")
    view = np.lib.stride_tricks.as_strided(
        data[t.offset :], shape=t.size, strides=[s * data.itemsize for s in t.stride], writeable=False
    )
    return np.array(view, dtype=data.dtype.newbyteorder("="), order="C")  # a copy, 0-d stays 0-d
