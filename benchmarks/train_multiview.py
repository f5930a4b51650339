"""Does fine-tuning help? Off-the-shelf GeM vs fine-tuned GeM vs fine-tuned GeM + Lw, on real photos.

Builds the seeded multi-view set of scikit-image's photos (plus, optionally, a folder of more photos,
one object each), holds out whole objects for testing, fine-tunes EfficientNet-Lite0 + GeM (the one
ImageNet-pretrained CNN available offline) on the views of the other objects with ``gemsearch
train``'s loop, learns Lw on the training views, and scores the held-out views: each one, cut to
a random crop (``--query-crop`` of its width and height, as a user would crop a region to search
for), queries all the other held-out views; its positives are the other views of its object.

    python benchmarks/train_multiview.py [--wallpapers | --extra-photos DIR] [--epochs 5] [--out-dir DIR]

``--wallpapers`` adds ~30 landscape/nature photos from Debian's wallpaper packages
(``apt-get download`` + ``dpkg-deb -x`` into the cache; no root install): without them the eight
scikit-image objects leave too few held-out objects for the test to tell the models apart.

Sized for a few minutes on 2 CPU cores: small images, few epochs, small query/pool sizes.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from _common import markdown_table, write_results
from _real_photos import wallpapers
from PIL import Image

from gemsearch.metrics import (
    QueryGroundTruth,
    RetrievalScore,
    compute_map,
    format_score_table,
    rank_by_similarity,
)
from gemsearch.preprocess import Box
from gemsearch.samples import SampleSet, available_clusters, build_multiview_set
from gemsearch.trainer.models.embedder import TorchEmbedder
from gemsearch.trainer.models.loading import load_model
from gemsearch.trainer.models.model import RetrievalModel
from gemsearch.trainer.training.config import DataSource, TrainConfig
from gemsearch.trainer.training.data import load_source
from gemsearch.trainer.training.loop import train
from gemsearch.trainer.training.whitening_fit import fit_whitening

DEFAULT_CACHE = Path.home() / ".cache" / "gemsearch" / "samples"


def wallpaper_photos(cache: Path) -> Path:
    """One photo per wallpaper of Debian's packages (``_real_photos.wallpapers``), shrunk to 800 px,
    in ``cache/photos``."""
    photos = cache / "photos"
    if photos.is_dir() and any(photos.iterdir()):
        return photos
    full = wallpapers(cache)
    photos.mkdir()
    for src in sorted(full.glob("*.jpg")):
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.thumbnail((800, 800), Image.Resampling.LANCZOS)
            im.save(photos / src.name, quality=92)
    return photos


def leave_one_out(clusters: list[int], queries: np.ndarray, database: np.ndarray) -> RetrievalScore:
    """Query i searches every image but its own source; positives: the other images of its cluster."""
    n = len(clusters)
    rankings = [r[r != i] for i, r in enumerate(rank_by_similarity(queries @ database.T))]
    gt = [
        QueryGroundTruth(ok=[j for j in range(n) if clusters[j] == clusters[i] and j != i]) for i in range(n)
    ]
    return compute_map(rankings, gt)


def query_boxes(sample_set: SampleSet, images: list[int], side: float, seed: int) -> list[Box | None]:
    """A random box of ``side`` x each side of every image (None: the whole image), seeded."""
    if side >= 1:
        return [None] * len(images)
    rng = np.random.default_rng(seed)
    boxes: list[Box | None] = []
    for i in images:
        w, h = sample_set.images[i].width, sample_set.images[i].height
        x, y = rng.uniform(0, 1 - side, size=2)
        boxes.append((x * w, y * h, (x + side) * w, (y + side) * h))
    return boxes


def score(
    model: RetrievalModel, sample_set: SampleSet, max_side: int, whiten: bool, crop: float, seed: int
) -> RetrievalScore:
    """Every held-out view, cut to a random crop, queries all the other held-out views (full)."""
    test = sample_set.split("test")
    paths = [sample_set.path(i) for i in test]
    embedder = TorchEmbedder(model, max_side=max_side, whiten=whiten)
    database = embedder.embed(paths)
    queries = embedder.embed(paths, boxes=query_boxes(sample_set, test, crop, seed)) if crop < 1 else database
    return leave_one_out([sample_set.images[i].cluster for i in test], queries, database)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra-photos", type=Path, help="a folder of more photos, one object each")
    parser.add_argument("--wallpapers", action="store_true", help="add Debian's wallpaper photos")
    parser.add_argument("--views", type=int, default=8, help="views per source photo")
    parser.add_argument("--holdout", type=float, default=0.35, help="fraction of objects held out")
    parser.add_argument("--image-size", type=int, default=160, help="training image side")
    parser.add_argument("--test-size", type=int, default=224, help="test (and Lw) image side")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--margin", type=float, default=0.7)
    parser.add_argument("--query-size", type=int, default=48)
    parser.add_argument("--pool-size", type=int, default=200)
    parser.add_argument("--neg-num", type=int, default=5)
    parser.add_argument("--lw-dims", type=int, default=None, help="reduce Lw to this many dimensions")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--query-crop",
        type=float,
        default=0.35,
        help="query = a random crop of this side fraction (1: whole)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (on a busy shared machine 1 is much faster)"
    )
    parser.add_argument("--work", type=Path, default=DEFAULT_CACHE / "train-multiview")
    parser.add_argument("--out-dir", type=Path, help="where train_multiview.json/.md go (default: results/)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    if args.wallpapers:
        args.extra_photos = wallpaper_photos(args.work / "wallpapers")
    extra = sorted(p for p in args.extra_photos.iterdir() if p.is_file()) if args.extra_photos else []
    n_objects = len(available_clusters()) + len(extra)
    sample_set = build_multiview_set(
        args.work / "set", views_per_image=args.views, seed=args.seed, max_side=512,
        holdout=max(2, round(args.holdout * n_objects)), extra_photos=extra,
    )  # fmt: skip
    n_test = len(sample_set.params.test_clusters)
    print(
        f"{len(sample_set.images)} views of {n_objects} objects: {n_objects - n_test} for training, "
        f"{n_test} held out ({len(sample_set.split('test'))} test views)\n"
    )
    rows: dict[str, dict[str, RetrievalScore]] = {}
    timings: dict[str, float] = {}
    off_the_shelf = load_model("efficientnet_lite0-gem")
    rows["Lite0-GeM off-the-shelf"] = {
        "mAP": score(off_the_shelf, sample_set, args.test_size, False, args.query_crop, args.seed)
    }

    config = TrainConfig(
        directory=args.work / f"run-{int(time.time())}", train_data=sample_set.root / "train",
        backbone="efficientnet_lite0", image_size=args.image_size, test_image_size=args.test_size,
        epochs=args.epochs, lr=args.lr, margin=args.margin, query_size=args.query_size,
        pool_size=args.pool_size, neg_num=args.neg_num, batch_size=5, workers=0, seed=args.seed,
        device="cpu",
    )  # fmt: skip
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    result = train(config)
    timings["training"] = time.perf_counter() - start
    tuned = result.model
    rows["Lite0-GeM fine-tuned"] = {
        "mAP": score(tuned, sample_set, args.test_size, False, args.query_crop, args.seed)
    }

    train_set = load_source(DataSource(path=sample_set.root / "train"))
    start = time.perf_counter()
    for label, model in (("off-the-shelf", off_the_shelf), ("fine-tuned", tuned)):
        model.whitening = {"ss": fit_whitening(model, train_set, dims=args.lw_dims, max_side=args.test_size)}
        rows[f"Lite0-GeM {label} + Lw"] = {
            "mAP": score(model, sample_set, args.test_size, True, args.query_crop, args.seed)
        }
    timings["Lw (both models)"] = time.perf_counter() - start

    order = ["off-the-shelf", "off-the-shelf + Lw", "fine-tuned", "fine-tuned + Lw"]
    table = {f"Lite0-GeM {k}": rows[f"Lite0-GeM {k}"]["mAP"] for k in order}
    print(format_score_table({k: {"mAP": v} for k, v in table.items()}, decimals=1))
    print("\nper epoch:", *(json.dumps(m) for m in result.metrics), sep="\n  ")
    print(f"\ntraining {timings['training']:.0f} s, Lw {timings['Lw (both models)']:.0f} s")
    markdown = markdown_table(
        ["model", "mAP", "mP@1", "mP@5", "mP@10"],
        [
            [k, *(f"{100 * x:.1f}" for x in (v.mean_ap, v.mp_at[1], v.mp_at[5], v.mp_at[10]))]
            for k, v in table.items()
        ],
    )
    results = {
        "torch_threads": torch.get_num_threads(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "objects": {"train": n_objects - n_test, "test": n_test, "test_views": len(sample_set.split("test"))},
        "results": {k: {"mAP": v.mean_ap, "mP": v.mp_at} for k, v in table.items()},
        "epochs": result.metrics,
        "seconds": timings,
    }
    json_path, _ = write_results("train_multiview", results, markdown, args.out_dir)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
