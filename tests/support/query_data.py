"""Test data for the query, CLI, HTTP and browser tests: real photos, a tiny real ONNX model, stores.

The photos are scikit-image's colour photos (shrunk small); each gets metadata with a string, a
number and a group, so filter tests can be worked out by hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gemsearch._sample_photos import cluster_sources, load_photos
from gemsearch.manifest import ModelManifest
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.protocols import Record, VectorStore
from support.onnx_models import make_tiny_model

PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket")


@dataclass(frozen=True)
class Photo:
    id: str
    path: Path
    name: str
    metadata: dict[str, Any]


def write_photos(folder: Path, max_side: int = 160, names: Sequence[str] = PHOTOS) -> list[Photo]:
    """Write the photos as JPEG files; ids are the sha256 of the bytes, as ingest makes them."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = []
    for i, src in enumerate(load_photos(cluster_sources(list(names)), max_side)):
        path = folder / f"{src.source}.jpg"
        src.image.save(path, quality=92)
        doc_id = hashlib.sha256(path.read_bytes()).hexdigest()
        meta = {"name": src.source, "group": "even" if i % 2 == 0 else "odd", "year": 2000 + i}
        photos.append(Photo(doc_id, path, src.source, meta))
    return photos


def tiny_model(path: Path, name: str = "tiny", dim: int = 32, seed: int = 1) -> ModelManifest:
    return make_tiny_model(path, name=name, dim=dim, seed=seed)


def fill_store(store: VectorStore, embedder: OnnxEmbedder, photos: Sequence[Photo]) -> None:
    """Embed every photo and upsert it with its metadata (image_ref: the absolute path)."""
    from PIL import Image

    store.ensure_index(embedder.manifest)
    images = []
    for p in photos:
        with Image.open(p.path) as im:
            images.append(im.convert("RGB"))
    vectors = embedder.embed(images)
    store.upsert(
        [
            Record(id=p.id, vector=v, image_ref=str(p.path), metadata=p.metadata)
            for p, v in zip(photos, vectors, strict=True)
        ]
    )
