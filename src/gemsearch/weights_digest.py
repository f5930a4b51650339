"""The weights' part of the model version: one sha256 over named arrays, computed the same way by the
torch exporter and by the torch-free builder of the default model.

The format (unchanged since the first exports, so existing versions stay valid): for each array in
the order of its name, the line ``name:torch.<dtype>:<shape>`` (e.g. ``features.0.0.conv.weight:
torch.float32:(32, 3, 3, 3)``; floating arrays are hashed as float32, integers and booleans as they
are; the dtype tag keeps the spelling of the first exports) followed by its bytes in C order, little
endian; then, when the model has a learned whitening folded into the graph, ``whitening:<shape>`` and
the float32 bytes of its weight and of its bias.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

NamedArray = tuple[str, npt.ArrayLike]


def weights_sha256(arrays: Iterable[NamedArray], folded: Sequence[npt.ArrayLike] | None = None) -> str:
    """sha256 (hex) of ``arrays`` (name, values) and of the folded whitening ``(weight, bias)``."""
    digest = hashlib.sha256()
    for name, values in sorted(arrays, key=lambda item: item[0]):
        a = np.asarray(values)
        if a.dtype.kind == "f":
            a = a.astype(np.float32)
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)  # (ascontiguousarray would make 0-d 1-d)
        digest.update(f"{name}:torch.{a.dtype.name}:{tuple(a.shape)}".encode())
        digest.update(a.tobytes(order="C"))
    for part in folded or ():
        w = np.asarray(part)
        digest.update(f"whitening:{w.shape}".encode())
        digest.update(w.astype("<f4", copy=False).tobytes(order="C"))
    return digest.hexdigest()
