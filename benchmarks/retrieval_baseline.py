"""Off-the-shelf retrieval quality: how well a pretrained CNN + pooling finds other views of an object.

Builds the seeded multi-view set of scikit-image's photos (crops, rotations, perspective, scale,
colour, JPEG), uses every view as a query against all the others (leave-one-out; positives = the
other views of the same photo) and reports mAP and mP@k for several poolings, single- and
multi-scale, next to a randomly initialised network: its descriptors are nearly constant (the
activations vanish), so its row is the chance floor.

    python benchmarks/retrieval_baseline.py [--views 8] [--max-side 362] [--extra-photos DIR] [--out F]
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gemsearch.metrics import (
    QueryGroundTruth,
    RetrievalScore,
    compute_map,
    format_score_table,
    rank_by_similarity,
)
from gemsearch.preprocess import prepare_file
from gemsearch.samples import available_clusters, build_multiview_set
from gemsearch.trainer import MULTISCALE, NetworkConfig, backbone_spec, build_network, extract_descriptors

DEFAULT_CACHE = Path.home() / ".cache" / "gemsearch" / "samples"


def leave_one_out(clusters: list[int], descriptors: np.ndarray) -> RetrievalScore:
    """Every image queries all the others; its positives are the other images of its cluster."""
    n = len(clusters)
    scores = descriptors @ descriptors.T
    rankings = [r[r != i] for i, r in enumerate(rank_by_similarity(scores))]  # drop the query itself
    gt = [
        QueryGroundTruth(ok=[j for j in range(n) if clusters[j] == clusters[i] and j != i], junk=[])
        for i in range(n)
    ]
    return compute_map(rankings, gt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=8, help="views per source photo")
    parser.add_argument("--max-side", type=int, default=362, help="longer image side fed to the network")
    parser.add_argument("--samples", type=Path, default=DEFAULT_CACHE / "baseline")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--quick", action="store_true", help="only the default model (Lite0-GeM), single-scale"
    )
    parser.add_argument(
        "--extra-photos",
        type=Path,
        default=None,
        help="a folder of more photos, one object each (e.g. wallpapers)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    extra = sorted(p for p in args.extra_photos.iterdir() if p.is_file()) if args.extra_photos else []
    names = [*available_clusters(), *(p.stem for p in extra)]
    sample_set = build_multiview_set(
        args.samples, views_per_image=args.views, holdout=names, extra_photos=extra
    )
    paths = [sample_set.path(i) for i in range(len(sample_set.images))]
    clusters = [im.cluster for im in sample_set.images]
    # the backbone's own input scaling (Lite0: TF-Lite's), at the requested size
    preprocessing = backbone_spec("efficientnet_lite0").preprocessing.model_copy(
        update={"max_side": args.max_side}
    )
    images = [prepare_file(p, preprocessing) for p in paths]
    print(f"{len(images)} views of {len(set(clusters))} photos, longer side {args.max_side} px\n")

    rows: dict[str, dict[str, RetrievalScore]] = {}
    timings: dict[str, float] = {}
    models = [
        ("Lite0-GeM (random init)", "gem", False),
        ("Lite0-MAC", "mac", True),
        ("Lite0-SPoC", "spoc", True),
    ]
    models = [*([] if args.quick else models), ("Lite0-GeM", "gem", True)]
    modes = [("single-scale", (1.0,)), *([] if args.quick else [("multi-scale", MULTISCALE)])]
    for label, pooling, pretrained in models:
        net = build_network(
            NetworkConfig(backbone="efficientnet_lite0", pooling=pooling), pretrained=pretrained
        )
        rows[label] = {}
        for mode, scales in modes:
            start = time.perf_counter()
            desc = extract_descriptors(net, images, scales=scales)
            timings[f"{label} {mode}"] = (time.perf_counter() - start) / len(images)
            rows[label][mode] = leave_one_out(clusters, desc)
    print(format_score_table(rows, decimals=1))
    print("\nmP@1/5/10, ms per image:")
    for label, by_mode in rows.items():
        for mode, score in by_mode.items():
            mp = " ".join(f"{100 * score.mp_at[k]:.1f}" for k in (1, 5, 10))
            print(f"  {label:26s} {mode:13s} mP@1/5/10 {mp}   {1000 * timings[f'{label} {mode}']:.0f} ms")
    if args.out:
        result = {
            "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
            "images": len(images),
            "max_side": args.max_side,
            "results": {
                label: {mode: {"mAP": s.mean_ap, "mP": s.mp_at} for mode, s in by_mode.items()}
                for label, by_mode in rows.items()
            },
        }
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
