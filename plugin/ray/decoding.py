"""Stage 2 (Ray tasks, CPU): decode the admitted images and shrink them as the model's manifest says."""

from __future__ import annotations

import pyarrow as pa

from ...errors import GemsearchError, ImageError
from ...manifest import ModelManifest
from ...preprocess import DecodeMode
from ..embedding.embedder import prepare_image
from ..inputs.images import ImageLoadConfig, load_scaled_image_bytes
from .rows import Row, finished, rows_of, table_of


def decode_batch(
    table: pa.Table, *, image: ImageLoadConfig, manifest: ModelManifest, decode: DecodeMode
) -> pa.Table:
    # the same decoding as the single-process path's embedder in this mode (the index records it)
    side = manifest.input.max_side if decode == "draft" else None
    return table_of([_decode(row, image, manifest, side) for row in rows_of(table)])


def _decode(row: Row, cfg: ImageLoadConfig, manifest: ModelManifest, draft_side: int | None) -> Row:
    if row["fate"] is not None:
        return row
    name = row["source"]
    try:
        array = prepare_image(manifest, load_scaled_image_bytes(row["data"], cfg, name, draft_side))
    except ImageError as exc:
        return finished(row, "failed", exc.reason, str(exc), of_bytes=True)
    except GemsearchError as exc:  # e.g. an image too small to shrink: a per-image failure
        return finished(row, "failed", "bad_image", f"{name}: {exc}")
    except (MemoryError, ValueError, OSError) as exc:  # one image's trouble is never the run's
        return finished(row, "failed", "bad_image", f"{name}: {type(exc).__name__}: {exc}")
    _, height, width = array.shape
    return {**row, "data": None, "pixels": array.tobytes(), "height": height, "width": width,
            "dtype": str(array.dtype)}  # fmt: skip
