"""Shared pieces of the Ray ingest tests: a collection of real photos with transformed copies and
broken files, Ray's import (a failure in CI, a skip elsewhere), and comparing two stores."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import ImageOps

from gemsearch.plugin.ingest.report import IngestReport
from gemsearch.protocols import VectorStore
from support.ingest_helpers import PHOTOS, photo

BROKEN = {"empty.jpg": b"", "text.png": b"not an image\n" * 30}


def import_ray() -> ModuleType:
    if os.environ.get("CI") == "true":
        import ray  # CI installs gemsearch[dev], which has Ray: a missing Ray is a failure there

        return ray
    return pytest.importorskip("ray")


def write_photos(folder: Path) -> dict[str, int]:
    """scikit-image photos, transformed copies of each (rotated, mirrored, shrunk, re-encoded), an
    exact duplicate file and broken files; returns {file name: 1} of the inputs that must index."""
    good: dict[str, int] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        base = photo(name)
        base.thumbnail((160, 160))
        variants = {
            "orig": base,
            "rot90": base.rotate(90, expand=True),
            "mirror": ImageOps.mirror(base),
            "small": base.resize((max(8, base.width // 2), max(8, base.height // 2))),
        }
        for kind, image in variants.items():
            path = folder / name / f"{kind}.{'png' if kind == 'mirror' else 'jpg'}"
            path.parent.mkdir(exist_ok=True)
            image.save(path, "PNG" if kind == "mirror" else "JPEG", quality=85)
            good[str(path)] = 1
    jpeg = io.BytesIO()
    photo("coffee").resize((120, 80)).save(jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    for name, data in BROKEN.items():
        (folder / name).write_bytes(data)
    (folder / "zz-copy.jpg").write_bytes((folder / "coffee" / "orig.jpg").read_bytes())  # a duplicate
    return good


def counts(report: IngestReport) -> dict[str, Any]:
    """The report's counts, without timings and paths."""
    d = report.to_dict()
    return {k: v for k, v in d.items() if k not in {"wall_s", "images_per_s", "ledger", "dead_letter"}}


def assert_same_documents(a: VectorStore, b: VectorStore, ids: set[str]) -> None:
    """Both stores hold exactly ``ids``, with vectors equal within 1e-6 and the same image refs."""
    assert a.count() == b.count() == len(ids)
    assert a.existing_ids(ids) == b.existing_ids(ids) == ids
    for doc_id in ids:
        ra, rb = a.get(doc_id), b.get(doc_id)
        assert ra is not None and rb is not None
        np.testing.assert_allclose(ra.vector, rb.vector, atol=1e-6, rtol=0)
        assert ra.image_ref == rb.image_ref


def sha_ids(files: dict[str, int]) -> set[str]:
    return {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in files}
