"""The square regions of R-MAC (Tolias et al.), placed exactly as cirtorch's ``rmac`` places them.

On level ``l`` (1..L) the side is ``floor(2 w / (l + 1))`` with ``w = min(h, w)``; along the longer
axis ``l + extra`` regions are spread evenly, where ``extra`` (1..6) is chosen so that neighbouring
regions overlap by about 40 %. The arithmetic is done in float32 like cirtorch's (its ``steps`` are a
float32 tensor), so ties and floors fall the same way.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

_OVERLAP = 0.4
_STEPS = np.arange(2, 8, dtype=np.float32)  # candidate region counts along the longer axis


def _extra_regions(height: int, width: int) -> tuple[int, int]:
    """(extra along h, extra along w): the long axis gets 1..6 more regions, the short one none."""
    side = min(height, width)
    b = np.float32(max(height, width) - side) / (_STEPS - np.float32(1))
    idx = int(
        np.argmin(
            np.abs((np.float32(side * side) - np.float32(side) * b) / np.float32(side * side) - _OVERLAP)
        )
    )
    if height < width:
        return 0, idx + 1
    if height > width:
        return idx + 1, 0
    return 0, 0


def _starts(length: int, size: int, count: int) -> list[int]:
    """``count`` region starts along an axis of ``length`` for regions of ``size``."""
    half = math.floor(size / 2 - 1)
    step = 0.0 if count == 1 else (length - size) / (count - 1)
    centres = np.floor(np.float32(half) + np.arange(count, dtype=np.float32) * np.float32(step))
    return [int(c) - half for c in centres]


@lru_cache(maxsize=256)
def rmac_regions(height: int, width: int, levels: int = 3) -> tuple[tuple[int, int, int], ...]:
    """``(top, left, size)`` of every R-MAC region of an ``height x width`` map, level by level,
    row-major within a level (the global region is not included)."""
    extra_h, extra_w = _extra_regions(height, width)
    side = min(height, width)
    regions: list[tuple[int, int, int]] = []
    for level in range(1, levels + 1):
        size = math.floor(2 * side / (level + 1))
        if size == 0:
            continue
        tops = _starts(height, size, level + extra_h)
        lefts = _starts(width, size, level + extra_w)
        regions.extend((top, left, size) for top in tops for left in lefts)
    return tuple(regions)
