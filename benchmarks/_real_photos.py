"""Real photos for the ingest benchmark: full-size Debian wallpapers, and one path per process.

``wallpapers()`` fetches Debian's wallpaper packages with ``apt-get download`` (no root needed) and
keeps one JPEG per wallpaper at its largest rendering, unshrunk: 30 photos of 1280-5120 px, the
sizes cameras and phones produce, which the model shrinks to 1024 px as cirtorch's test does.

``run_path`` runs one path of the comparison in this process and returns its images/s and peak
memory: the plain PyTorch loops of ``embed_throughput`` (cirtorch's ``extract_vectors``) or
``gemsearch ingest`` as the command runs it (default settings, into a fresh LocalStore), in either
decode mode.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from _common import BENCH_CACHE, measure

PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds")
TORCH_PATHS = ("torch", "torch-1thread")  # cirtorch's loop: DataLoader workers; one intra-op thread
INGEST_PATHS = {"gemsearch ingest": "draft", "gemsearch ingest --exact-decode": "exact"}


def wallpapers(cache: Path = BENCH_CACHE / "wallpapers") -> Path:
    """A folder of full-size wallpaper photos (fetched once)."""
    photos = cache / "full"
    if photos.is_dir() and any(photos.iterdir()):
        return photos
    debs, tree = cache / "debs", cache / "tree"
    debs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", *PACKAGES], cwd=debs, check=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    sources = sorted((tree / "usr/share/backgrounds/mate/nature").glob("*.jpg"))
    for folder in sorted((tree / "usr/share/wallpapers").iterdir()):
        sizes = sorted((folder / "contents/images").glob("*.jpg"), key=lambda p: p.stat().st_size)
        sources += sizes[-1:]  # one file per wallpaper: its largest rendering
    photos.mkdir()
    for src in sources:
        name = src.parents[2].name if src.parent.name == "images" else src.stem
        shutil.copyfile(src, photos / f"{name}.jpg")
    return photos


def photo_paths(folder: Path, n: int | None) -> list[Path]:
    """The JPEGs of ``folder``, sorted; the first ``n`` (repeated if fewer)."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    if not paths:
        raise SystemExit(f"{folder}: no JPEG photos")
    if n is None:
        return paths
    return (paths * -(-n // len(paths)))[:n]


def run_path(path: str, photos: list[Path], workers: int, max_side: int) -> dict[str, Any]:
    """images/s and peak memory of one path over ``photos``, in this process."""
    from embed_throughput import onnx_model, run_torch

    if path in TORCH_PATHS:
        usage, _, _ = run_torch("lite0-gem", "single-scale", photos, workers, max_side, path)
        return {"images_per_s": round(len(photos) / usage.wall_s, 3), **usage.as_dict()}
    from gemsearch.plugin.embedding.embedder import OnnxEmbedder, bulk_parallel_runs
    from gemsearch.plugin.ingest.pipeline import IngestOptions, ingest
    from gemsearch.plugin.inputs.sources import SourceItem
    from gemsearch.plugin.stores.local.store import LocalStore

    model = onnx_model("lite0-gem", "single-scale", max_side)
    embedder = OnnxEmbedder(model, parallel_runs=bulk_parallel_runs(), decode=INGEST_PATHS[path])  # type: ignore[arg-type]
    items = [SourceItem(path=p, id=f"img-{i}") for i, p in enumerate(photos)]  # repeats are not skipped
    folder = Path(tempfile.mkdtemp(prefix="gemsearch-real-")) / uuid.uuid4().hex[:6]
    try:
        with measure() as usage, LocalStore(folder) as store:
            report = ingest(items, embedder, store, IngestOptions())
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    if report.embedded != len(photos) or not report.ok:
        raise RuntimeError(f"ingest did not store every photo: {report.to_dict()}")
    return {
        "images_per_s": round(len(photos) / usage.wall_s, 3),
        **usage.as_dict(),
        "child_peak_rss_mb": None,
    }
