"""Ingest end to end: into the stores vs embedding only; on real photos vs the PyTorch loops.

Images/s into OpenSearch and into the LocalStore vs embedding only; on real photos, images/s and
peak memory of ``gemsearch ingest`` vs the plain PyTorch loops.

    python benchmarks/ingest_throughput.py                          # 200 images, Lite0-GeM, 2 rounds
    python benchmarks/ingest_throughput.py --images 500 --opensearch http://host:9200
    python benchmarks/ingest_throughput.py --wallpapers             # real photos (Debian wallpapers)
    python benchmarks/ingest_throughput.py --photos DIR --repeats 3 # real photos of your own

All three runs use the same pipeline, ``gemsearch.plugin.ingest.pipeline.ingest``, with the same exported
model and images: into a store that keeps the vectors in memory (embed-only: no store cost), into a
fresh LocalStore folder, and into a fresh OpenSearch index (``OpenSearchStore``, bulk writes on the
pipeline's writer thread; creating the index and the final refresh are part of the run). The
store must not be the bottleneck: the target is end-to-end images/s >= 0.8x embed-only. Runs
alternate and repeat ``--repeats`` times; medians are reported.

With ``--photos DIR`` or ``--wallpapers`` (full-size photos, 1280-5120 px, shrunk to ``--max-side``)
it compares instead, each run in a fresh process so its peak memory is its own: cirtorch's PyTorch
loop (``DataLoader`` workers, eager forward per image) and the same with one intra-op thread, against
``gemsearch ingest`` at its default settings into a LocalStore, with draft and with exact decoding.
It prints images/s, the ratio to the best PyTorch loop and the peak RSS of each path (targets:
>= 2.5x at <= 1 GB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import markdown_table, measure, opensearch, sample_paths, write_results
from _machine import usable_cores
from embed_throughput import _KeepVectors, onnx_model

TARGET = 0.8
TARGET_VS_TORCH, TARGET_PEAK_MB = 2.5, 1024


def _ingest(embedder: Any, store: Any, paths: list[Path], workers: int) -> dict[str, Any]:
    from gemsearch.plugin.ingest.pipeline import IngestOptions, ingest
    from gemsearch.plugin.inputs.sources import SourceItem

    tag = uuid.uuid4().hex[:6]  # fresh ids every run: nothing is skipped as already stored
    items = [SourceItem(path=p, id=f"{tag}-{i}") for i, p in enumerate(paths)]
    with measure() as usage:
        report = ingest(items, embedder, store, IngestOptions(workers=workers))
    if report.embedded != len(paths) or not report.ok:
        raise RuntimeError(f"ingest did not store every image: {report.to_dict()}")
    return {"images_per_s": round(len(paths) / usage.wall_s, 3), **usage.as_dict()}


def run(args: argparse.Namespace, client: Any) -> dict[str, list[dict[str, Any]]]:
    from gemsearch.plugin.embedding.embedder import OnnxEmbedder, bulk_parallel_runs
    from gemsearch.plugin.stores.local.store import LocalStore
    from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions
    from gemsearch.plugin.stores.opensearch.store import OpenSearchStore

    embedder = OnnxEmbedder(  # as `gemsearch ingest` runs it
        onnx_model("lite0-gem", "single-scale", args.max_side), parallel_runs=bulk_parallel_runs()
    )
    paths, _ = sample_paths(args.images)
    embedder.embed_prepared([embedder.prepare(_open(paths[0]))])  # warm the session
    tmp = Path(tempfile.mkdtemp(prefix="gemsearch-ingest-"))
    prefix = f"bench-ingest-{uuid.uuid4().hex[:8]}"

    def local() -> dict[str, Any]:
        folder = tmp / uuid.uuid4().hex[:6]
        with LocalStore(folder) as store:
            result = _ingest(embedder, store, paths, args.workers)
        shutil.rmtree(folder, ignore_errors=True)
        return result

    def remote() -> dict[str, Any]:
        store = OpenSearchStore(client, options=IndexOptions(prefix=prefix))
        try:
            return _ingest(embedder, store, paths, args.workers)
        finally:
            client.indices.delete(index=f"{prefix}-*", params={"expand_wildcards": "all"})

    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "embed only": lambda: _ingest(embedder, _KeepVectors(), paths, args.workers),
        "LocalStore": local,
        "OpenSearch": remote,
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    _ingest(embedder, OpenSearchStore(client, options=IndexOptions(prefix=prefix)), paths[:8], 1)  # warm node
    client.indices.delete(index=f"{prefix}-*", params={"expand_wildcards": "all"})
    try:
        for rep in range(args.repeats):
            for name, fn in runs.items():
                results[name].append(fn())
                print(f"{name} #{rep + 1} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def _open(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def summarise(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    base = statistics.median(r["images_per_s"] for r in results["embed only"])
    rows = []
    for name, runs in results.items():
        median = statistics.median(r["images_per_s"] for r in runs)
        typical = min(runs, key=lambda r: abs(r["images_per_s"] - median))
        rows.append({
            "target": name, **typical, "images_per_s": round(median, 3),
            "runs_images_per_s": [r["images_per_s"] for r in runs],
            "ratio_vs_embed_only": round(median / base, 3),
        })  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    body = [
        [r["target"], f"{r['images_per_s']:.2f}", f"{r['ratio_vs_embed_only']:.2f}x",
         f"{100 * r['cpu_util']:.0f}%", f"{r['peak_rss_mb']:,.0f}"]
        for r in rows
    ]  # fmt: skip
    return markdown_table(["ingest into", "images/s", "vs embed only", "CPU util", "peak RSS MB"], body)


def run_real_photos(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every path over the same photos, alternating, each run in a fresh process; median images/s."""
    from _real_photos import INGEST_PATHS, TORCH_PATHS

    paths = [*TORCH_PATHS, *INGEST_PATHS]
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    for rep in range(args.repeats):
        for path in paths:
            case = {"path": path, "photos": str(args.photos), "images": args.images, "workers": args.workers,
                    "max_side": args.max_side}  # fmt: skip
            cmd = [sys.executable, __file__, "--case", json.dumps(case)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{path}: {proc.stderr.strip()[-2000:]}")
            runs[path].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(
                f"{path} #{rep + 1}: {runs[path][-1]['images_per_s']} images/s", file=sys.stderr, flush=True
            )
    rows = []
    for path, results in runs.items():
        median = statistics.median(r["images_per_s"] for r in results)
        row = dict(min(results, key=lambda r: abs(r["images_per_s"] - median)))
        rows.append({**row, "path": path, "images_per_s": round(median, 3),
                     "runs_images_per_s": [r["images_per_s"] for r in results]})  # fmt: skip
    best = max(r["images_per_s"] for r in rows if r["path"] in TORCH_PATHS)
    for r in rows:
        r["ratio_vs_best_torch"] = round(r["images_per_s"] / best, 3)
    return rows


def real_photos_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        child = r.get("child_peak_rss_mb")
        body.append([
            r["path"], f"{r['images_per_s']:.2f}", f"{r['ratio_vs_best_torch']:.2f}x",
            f"{100 * r['cpu_util']:.0f}%", f"{r['peak_rss_mb']:,.0f}",
            "-" if child is None else f"{child:,.0f}",
        ])  # fmt: skip
    header = [
        "path",
        "images/s",
        "vs best PyTorch loop",
        "CPU util",
        "peak RSS MB",
        "DataLoader worker peak MB",
    ]
    return markdown_table(header, body)


def main_real_photos(args: argparse.Namespace) -> None:
    from _real_photos import photo_paths, wallpapers

    if args.wallpapers:
        args.photos = wallpapers()
    args.images = args.images if args.images_given else len(photo_paths(args.photos, None))
    rows = run_real_photos(args)
    md = real_photos_table(rows)
    results = {
        "photos": str(args.photos), "images": args.images, "workers": args.workers, "max_side": args.max_side,
        "repeats": args.repeats, "target_ratio": TARGET_VS_TORCH, "target_peak_rss_mb": TARGET_PEAK_MB,
        "results": rows,
    }  # fmt: skip
    paths = write_results("ingest_real_photos", results, md, args.out_dir)
    print(md)
    print(f"\n(results in {paths[0]})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=None, help="images per run (default 200; real photos: all)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=usable_cores(), help="read/decode threads")
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--opensearch", default=None, help="URL of a node; default: start one")
    ap.add_argument("--photos", type=Path, help="real photos: compare with the PyTorch loops on this folder")
    ap.add_argument(
        "--wallpapers", action="store_true", help="real photos: Debian's wallpapers (apt-get download)"
    )
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one real-photo path, print JSON
    args = ap.parse_args(argv)
    if args.case:
        from _real_photos import photo_paths, run_path

        case = json.loads(args.case)
        photos = photo_paths(Path(case["photos"]), case["images"])
        print(json.dumps(run_path(case["path"], photos, case["workers"], case["max_side"])))
        return
    args.images_given = args.images is not None
    if args.photos or args.wallpapers:
        main_real_photos(args)
        return
    args.images = args.images or 200
    with opensearch(args.opensearch) as (client, info):
        rows = summarise(run(args, client))
    md = table(rows)
    results = {
        "opensearch": info, "model": "lite0-gem single-scale", "images": args.images,
        "workers": args.workers, "max_side": args.max_side, "target_ratio": TARGET, "results": rows,
    }  # fmt: skip
    paths = write_results("ingest_throughput", results, md, args.out_dir)
    print(md)
    print(f"\n(results in {paths[0]})")


if __name__ == "__main__":
    main()
