"""Stage 3 (an actor pool): each actor holds one onnxruntime session and embeds prepared images,
those of identical shape as one batch (the embedder's grouping; no padding)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..embedding.embedder import OnnxEmbedder
from .faults import CrashPlan
from .rows import rows_of, table_of


def local_model_file(model: bytes) -> Path:
    """The model's bytes as a file on this node (onnxruntime opens files), written once per node
    and content: actors on another machine than the driver cannot read the driver's path."""
    folder = Path(tempfile.gettempdir()) / "gemsearch-ray-models"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(model).hexdigest()}.onnx"
    if not path.is_file():
        part = path.with_suffix(f".{os.getpid()}.part")
        part.write_bytes(model)
        os.replace(part, path)
    return path


class EmbedActor:
    """A Ray Data callable class: one session per actor, loaded once, used for every batch."""

    def __init__(
        self,
        model: bytes,
        providers: tuple[str, ...] | None,
        threads: int,
        batch_size: int,
        crash: CrashPlan | None = None,
    ) -> None:
        self.embedder = OnnxEmbedder(
            local_model_file(model), providers=providers, threads=threads, batch_size=batch_size
        )
        self.crash = crash or CrashPlan()

    def __call__(self, table: pa.Table) -> pa.Table:
        self.crash.tick()
        rows = rows_of(table)
        todo = [row for row in rows if row["fate"] is None]
        arrays = [
            np.frombuffer(r["pixels"], dtype=r["dtype"]).reshape(3, r["height"], r["width"]) for r in todo
        ]
        vectors = self.embedder.embed_prepared(arrays) if arrays else None
        for i, row in enumerate(todo):
            assert vectors is not None
            row.update(pixels=None, vector=vectors[i].astype(np.float32).tobytes())
        return table_of(rows)
