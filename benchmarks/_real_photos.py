"""Real photos for the ingest benchmark: full-size Debian wallpapers, and one path per process.

``wallpapers()`` fetches Debian's wallpaper packages with ``apt-get download`` (no root needed) and
keeps one JPEG per wallpaper at its largest rendering, unshrunk: 30 photos of 1280-5120 px, the
sizes cameras and phones produce, which the model shrinks to 1024 px as cirtorch's test does.

``run_path`` runs one path of the comparison and returns its images/s and peak memory: the plain
PyTorch loops of ``embed_throughput`` (cirtorch's ``extract_vectors``) in this process, or the
``gemsearch ingest`` command (default settings, into a fresh LocalStore), in either decode mode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import BENCH_CACHE, run_with_peak_rss

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
    """images/s and peak memory of one path over ``photos``: a PyTorch loop in this process, or the
    ``gemsearch ingest`` command in a process of its own (its peak RSS is the whole command's; this
    process has imported torch to find the model)."""
    from embed_throughput import onnx_model, run_torch

    if path in TORCH_PATHS:
        usage, _, _ = run_torch("lite0-gem", "single-scale", photos, workers, max_side, path)
        return {"images_per_s": round(len(photos) / usage.wall_s, 3), **usage.as_dict()}
    return run_ingest_command(onnx_model("lite0-gem", "single-scale", max_side), photos, INGEST_PATHS[path])


def run_ingest_command(model: Path, photos: list[Path], decode: str) -> dict[str, Any]:
    """``gemsearch ingest`` of ``photos`` (listed in a file) into a fresh LocalStore at the defaults;
    images/s from the run's own wall time (the report's, without the start-up), peak RSS the
    command's own (``run_with_peak_rss``)."""
    work = Path(tempfile.mkdtemp(prefix="gemsearch-real-"))
    try:
        listing = work / "photos.txt"
        listing.write_text("".join(f"{p}\n" for p in photos))
        cmd = [sys.executable, "-m", "gemsearch.cli", "ingest", str(listing), "--model", str(model)]
        cmd += ["--store", str(work / "store"), "--json", "--no-progress", "--no-skip-existing"]
        cmd += ["--exact-decode"] if decode == "exact" else []
        with (work / "out.json").open("w") as out, (work / "err.txt").open("w") as err:
            code, peak_mb, cpu_s = run_with_peak_rss(cmd, work, stdout=out, stderr=err)
        if code != 0:
            raise RuntimeError((work / "err.txt").read_text()[-2000:])
        report = json.loads((work / "out.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    embedded, wall = report["embedded"], report["wall_s"]
    cores = len(os.sched_getaffinity(0))
    return {
        "images_per_s": round(embedded / wall, 3), "wall_s": round(wall, 3), "cpu_s": round(cpu_s, 3),
        "cpu_util": round(cpu_s / wall / cores, 3), "peak_rss_mb": round(peak_mb, 1),
        "child_peak_rss_mb": None, "embedded": embedded,
    }  # fmt: skip
