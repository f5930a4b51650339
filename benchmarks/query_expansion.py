"""Alpha query expansion: mAP of plain queries vs alpha-QE on the multi-view benchmark set.

    python benchmarks/query_expansion.py                 # Lite0-GeM (the default model), 8 views per photo
    python benchmarks/query_expansion.py --views 12 --crop 0.5 --extra-photos wallpapers/

The set is ``gemsearch.samples``' multi-view set of scikit-image's photos (every cluster held out: view
0 of each is its query, the other views the database). The database goes into a LocalStore through
the ONNX embedder; each query runs through ``gemsearch.plugin.query.Searcher`` (optionally a centred
crop of ``--crop`` of each side) with ``expand=None`` and with alpha-QE for each (n, alpha), ranking
the whole database; mAP and mP@k come from ``gemsearch.metrics.compute_map``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from _common import SAMPLES_CACHE, markdown_table
from _common import write_results as write


def run(args: argparse.Namespace) -> dict[str, Any]:
    from PIL import Image

    from gemsearch.exporters.default_model import ensure_default_model
    from gemsearch.metrics import compute_map
    from gemsearch.plugin.embedding.embedder import OnnxEmbedder
    from gemsearch.plugin.ingest.pipeline import ingest
    from gemsearch.plugin.inputs.sources import SourceItem, document_id
    from gemsearch.plugin.query import QueryExpansion, Searcher
    from gemsearch.plugin.stores.local.store import LocalStore
    from gemsearch.samples import available_clusters, build_multiview_set

    extra = sorted(p for p in args.extra_photos.iterdir() if p.is_file()) if args.extra_photos else []
    names = [*available_clusters(), *(p.stem for p in extra)]
    folder = f"bench-v{args.views}-s512" + (f"-extra{len(extra)}" if extra else "")
    s = build_multiview_set(
        SAMPLES_CACHE / folder, views_per_image=args.views, holdout=names, max_side=512, extra_photos=extra
    )
    embedder = OnnxEmbedder(ensure_default_model())
    database = s.database_paths()
    position = {document_id(SourceItem(path=p), p.read_bytes()): i for i, p in enumerate(database)}
    settings: list[tuple[str, QueryExpansion | None]] = [("no expansion", None)]
    settings += [
        (f"alpha-QE n={n} alpha={a:g}", QueryExpansion(n=n, alpha=a)) for n in args.n for a in args.alpha
    ]
    tmp = Path(tempfile.mkdtemp(prefix="gemsearch-qe-"))
    out: dict[str, Any] = {}
    try:
        with LocalStore(tmp / "store") as store:
            ingest([SourceItem(path=p) for p in database], embedder, store)
            searcher = Searcher(embedder, store)
            for label, qe in settings:
                rankings = []
                for path in s.query_paths():
                    box = None
                    if args.crop < 1:
                        with Image.open(path) as im:
                            w, h = im.size
                        m = (1 - args.crop) / 2
                        box = (w * m, h * m, w * (1 - m), h * (1 - m))
                    hits = searcher.search(path, crop=box, k=len(database), expand=qe).hits
                    rankings.append([position[h.id] for h in hits])
                score = compute_map(rankings, s.ground_truth)
                out[label] = {"mAP": score.mean_ap, "mP@k": score.mp_at}
                print(f"{label}: mAP {score.mean_ap:.4f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--crop", type=float, default=1.0, help="centred query crop (fraction of each side)")
    ap.add_argument("--n", type=int, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--alpha", type=float, nargs="+", default=[1.0, 3.0])
    ap.add_argument("--extra-photos", type=Path, help="a folder of more photos, one object each (wallpapers)")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    res = run(args)
    rows = [
        [label, f"{r['mAP'] * 100:.2f}", *(f"{r['mP@k'][k] * 100:.1f}" for k in (1, 5))]
        for label, r in res.items()
    ]
    md = markdown_table(["query", "mAP %", "mP@1 %", "mP@5 %"], rows)
    results = {
        "model": "lite0-gem (default)", "views": args.views, "crop": args.crop,
        "extra_photos": str(args.extra_photos) if args.extra_photos else None, "results": res,
    }  # fmt: skip
    paths = write("query_expansion", results, md, args.out_dir)
    print(md)
    print(f"\n(results in {paths[0]})")


if __name__ == "__main__":
    main()
