"""Crop-and-search latency, p50/p99, split into decode, embed and k-NN, on OpenSearch and the LocalStore.

    python benchmarks/query_latency.py                              # 100 queries, 10k distractors
    python benchmarks/query_latency.py --queries 500 --distractors 100000 --opensearch http://host:9200

Each store holds the benchmark set (ingested with the Lite0-GeM ONNX model) plus ``--distractors``
vectors near the real ones (see ``_common.distractors``). A query is one image file of the set and
a seeded random box covering 30-90% of each side; ``gemsearch.plugin.query.Searcher.search`` reads
and decodes the file (decode), cuts and shrinks the box and runs the model (embed), and asks the
store for the top 10 (k-NN). Its own per-step timings are reported, with the total per query.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import distractors, lite0_descriptors, markdown_table, opensearch, percentiles, sample_paths
from _common import write_results as write
from embed_throughput import onnx_model

STEPS = ("decode", "embed", "knn", "total")


Query = tuple[Path, tuple[float, float, float, float]]


def boxes(paths: Sequence[Path], n: int, seed: int = 0) -> list[Query]:
    """``n`` (image, box) queries: random boxes covering 30-90% of each side, inside the image."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = {}
    for p in set(paths):
        with Image.open(p) as im:
            sizes[p] = im.size
    out = []
    for i in range(n):
        path = paths[i % len(paths)]
        w, h = sizes[path]
        bw, bh = rng.uniform(0.3, 0.9) * w, rng.uniform(0.3, 0.9) * h
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        out.append((path, (x, y, x + bw, y + bh)))
    return out


def fill(store: Any, embedder: Any, paths: Sequence[Path], n_distractors: int) -> None:
    """The benchmark set through ingest, then the distractor vectors in batches."""
    from gemsearch.plugin.ingest.pipeline import ingest
    from gemsearch.plugin.inputs.sources import SourceItem
    from gemsearch.protocols import Record

    ingest([SourceItem(path=p) for p in paths], embedder, store)
    real, _ = lite0_descriptors()
    vectors = distractors(real, n_distractors, np.random.default_rng(7))
    for start in range(0, n_distractors, 1000):
        batch = vectors[start : start + 1000]
        store.upsert([Record(id=f"d{start + i}", vector=v) for i, v in enumerate(batch)])
    store.refresh()


def measure_queries(searcher: Any, queries: list[Query]) -> dict[str, Any]:
    for path, box in queries[:10]:  # warm: caches, the graph, the session, the JIT
        searcher.search(path, crop=box, k=10)
    times: dict[str, list[float]] = {s: [] for s in STEPS}
    for path, box in queries:
        t0 = time.perf_counter()
        result = searcher.search(path, crop=box, k=10)
        times["total"].append((time.perf_counter() - t0) * 1000)
        times["decode"].append(result.timings.decode_ms)
        times["embed"].append(result.timings.embed_ms)
        times["knn"].append(result.timings.knn_ms)
        if len(result.hits) != 10:
            raise RuntimeError(f"a query returned {len(result.hits)} hits, not 10")
    return {s: percentiles(t) for s, t in times.items()}


def run(args: argparse.Namespace, client: Any) -> dict[str, Any]:
    from gemsearch.plugin.embedding.embedder import OnnxEmbedder
    from gemsearch.plugin.query import Searcher
    from gemsearch.plugin.stores.local.store import LocalStore
    from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions
    from gemsearch.plugin.stores.opensearch.store import OpenSearchStore

    embedder = OnnxEmbedder(onnx_model("lite0-gem", "single-scale", args.max_side))
    paths, _ = sample_paths()
    queries = boxes(paths, args.queries)
    out: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="gemsearch-query-"))
    try:
        with LocalStore(tmp / "store") as local:
            fill(local, embedder, paths, args.distractors)
            out["LocalStore"] = measure_queries(Searcher(embedder, local), queries)
        print("LocalStore done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    prefix = f"bench-query-{uuid.uuid4().hex[:8]}"
    try:
        remote = OpenSearchStore(client, options=IndexOptions(prefix=prefix))
        fill(remote, embedder, paths, args.distractors)
        out["OpenSearch"] = measure_queries(Searcher(embedder, remote), queries)
        print("OpenSearch done", file=sys.stderr, flush=True)
    finally:
        client.indices.delete(index=f"{prefix}-*", params={"expand_wildcards": "all"})
    return out


def table(res: dict[str, Any]) -> str:
    rows = [
        [store, *(f"{steps[s]['p50_ms']:.1f} / {steps[s]['p99_ms']:.1f}" for s in STEPS)]
        for store, steps in res.items()
    ]
    return markdown_table(["store", *(f"{s} p50 / p99 ms" for s in STEPS)], rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--distractors", type=int, default=10_000)
    ap.add_argument("--max-side", type=int, default=1024)
    ap.add_argument("--opensearch", default=None, help="URL of a node; default: start one")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    with opensearch(args.opensearch) as (client, info):
        res = run(args, client)
    md = table(res)
    results = {
        "opensearch": info, "model": "lite0-gem single-scale", "queries": args.queries,
        "distractors": args.distractors, "max_side": args.max_side, "k": 10, "results": res,
    }  # fmt: skip
    paths = write("query_latency", results, md, args.out_dir)
    print(md)
    print(f"\n(results in {paths[0]})")


if __name__ == "__main__":
    main()
