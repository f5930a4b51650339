"""Draft vs exact JPEG decoding: how far the descriptors move and what it does to mAP.

    python benchmarks/decode_modes.py --extra-photos DIR [--views 4] [--photo-side 4000]

Builds the seeded multi-view set of scikit-image's photos plus the photos of ``--extra-photos``
(full-size photos, e.g. Debian's wallpapers; views are cut from them at up to ``--photo-side`` px
and saved as JPEG), embeds every view with the runtime's ONNX embedder (Lite0-GeM, 1024 px) in
both decode modes and reports: the cosine between each view's two descriptors (min, mean), the
leave-one-out mAP of each mode, and images/s. Draft decoding only changes JPEGs larger than the
model's input, so the scikit-image views (512 px) embed identically in both modes; the large views
carry the comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import SAMPLES_CACHE, markdown_table, write_results
from embed_throughput import onnx_model

from gemsearch.metrics import QueryGroundTruth, compute_map, rank_by_similarity


def leave_one_out_map(clusters: list[int], x: np.ndarray) -> float:
    n = len(clusters)
    rankings = [r[r != i] for i, r in enumerate(rank_by_similarity(x @ x.T))]
    gt = [
        QueryGroundTruth(ok=[j for j in range(n) if clusters[j] == clusters[i] and j != i]) for i in range(n)
    ]
    return float(compute_map(rankings, gt).mean_ap)


def embed_all(model: Path, paths: list[Path], decode: str) -> tuple[np.ndarray, float]:
    from gemsearch.plugin.embedding.embedder import OnnxEmbedder

    embedder = OnnxEmbedder(model, decode=decode)  # type: ignore[arg-type]
    start = time.perf_counter()
    x = np.concatenate([embedder.embed(p) for p in paths])
    return x, len(paths) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extra-photos", type=Path, required=True, help="a folder of full-size photos")
    ap.add_argument("--views", type=int, default=4, help="views per photo")
    ap.add_argument(
        "--photo-side", type=int, default=4000, help="photos shrunk to this side before cutting views"
    )
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    from gemsearch.samples import available_clusters, build_multiview_set

    extra = sorted(p for p in args.extra_photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    names = [*available_clusters(), *(p.stem for p in extra)]
    folder = SAMPLES_CACHE / f"decode-v{args.views}-s{args.photo_side}-{len(extra)}"
    s = build_multiview_set(
        folder, views_per_image=args.views, holdout=names, extra_photos=extra, max_side=args.photo_side
    )
    paths = [s.path(i) for i in range(len(s.images))]
    clusters = [im.cluster for im in s.images]
    model = onnx_model("lite0-gem", "single-scale", args.max_side)
    print(f"{len(paths)} views of {len(set(clusters))} photos", file=sys.stderr, flush=True)
    out: dict[str, Any] = {}
    for mode in ("exact", "draft"):
        x, speed = embed_all(model, paths, mode)
        out[mode] = {"x": x, "images_per_s": round(speed, 2), "mAP": leave_one_out_map(clusters, x)}
        print(f"{mode} done", file=sys.stderr, flush=True)
    cos = np.sum(out["exact"]["x"] * out["draft"]["x"], axis=1)
    large = [i for i, p in enumerate(paths) if _long_side(p) > args.max_side]
    rows = [
        [mode, f"{100 * r['mAP']:.2f}", f"{r['images_per_s']:.2f}"] for mode, r in out.items()
    ]  # fmt: skip
    md = markdown_table(["decode", "mAP %", "images/s (one at a time)"], rows)
    md += (
        f"\n\n{len(paths)} views ({len(large)} larger than {args.max_side} px); cosine draft vs exact over "
        f"the large views: min {cos[large].min():.5f}, mean {cos[large].mean():.5f}; "
        f"mAP draft - exact: {100 * (out['draft']['mAP'] - out['exact']['mAP']):+.2f} points"
    )
    results = {
        "views": len(paths), "large_views": len(large), "photos": len(set(clusters)),
        "max_side": args.max_side, "photo_side": args.photo_side,
        "map": {m: r["mAP"] for m, r in out.items()},
        "images_per_s": {m: r["images_per_s"] for m, r in out.items()},
        "cosine_large": {"min": float(cos[large].min()), "mean": float(cos[large].mean())},
    }  # fmt: skip
    paths_out = write_results("decode_modes", results, md, args.out_dir)
    print(md)
    print(f"\n(results in {paths_out[0]})")


def _long_side(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as im:
        return max(im.size)


if __name__ == "__main__":
    main()
