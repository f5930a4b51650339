"""What the k-NN index costs in quality: recall@10 and mAP of OpenSearch HNSW vs exact search.

    python benchmarks/knn_recall.py                               # 5k distractors, ef_search sweep
    python benchmarks/knn_recall.py --distractors 50000 --opensearch http://host:9200

The collection is the benchmark set (Lite0-GeM descriptors of the multi-view scikit-image set)
plus ``--distractors`` synthetic vectors that lie among the real ones (mixtures of two real
descriptors plus noise; see ``_common.distractors``). The same vectors go into one index per
setting: the defaults (m=16, ef_construction=128), a higher-recall build (m=32,
ef_construction=256) and the lucene scalar quantizer (``sq`` encoder, int7). For each setting and
each ``ef_search`` of the sweep:

- recall@10: share of the exact top 10 (numpy inner product over the same float32 vectors) that the
  index returns, over the real images and as many fresh distractor-like queries;
- mAP@100: every real image queries the index (leave-one-out; positives = the other views of its
  photo), top 100, against the same truncation of the exact ranking;
- p50/p99 search latency through ``OpenSearchStore.search``.

fp16 vectors: the faiss engine's ``sq`` fp16 encoder needs the native libraries that the Maven
k-NN zip (the node the harness starts) does not carry, so it is not measured on such a node; the
exact ranking over vectors rounded to float16 gives the quality fp16 storage itself would cost.
The k-NN plugin lifts ``ef_search`` to k when it is smaller, so for mAP@100 values below 100 act
as 100.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    bench_manifest,
    distractors,
    lite0_descriptors,
    markdown_table,
    opensearch,
    percentiles,
    write_results,
)
from opensearchpy.exceptions import TransportError

from gemsearch.errors import StoreError
from gemsearch.metrics import QueryGroundTruth, compute_map, rank_by_similarity
from gemsearch.plugin.stores.opensearch.bulk import BulkOptions
from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions, index_body
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore
from gemsearch.protocols import Record

SETTINGS: dict[str, dict[str, Any]] = {
    "default (m=16, ef_construction=128)": {"m": 16, "ef_construction": 128},
    "higher recall (m=32, ef_construction=256)": {"m": 32, "ef_construction": 256},
    "lucene sq int7 (m=16, ef_construction=128)": {"m": 16, "ef_construction": 128, "encoder": "sq"},
}
EF_SEARCH = (10, 25, 50, 100, 200, 400)
MAP_K = 100


class Collection:
    """The indexed vectors, the queries and the exact answers they are measured against."""

    def __init__(self, n_distractors: int, n_queries: int, seed: int = 0) -> None:
        real, clusters = lite0_descriptors()
        rng = np.random.default_rng(seed)
        self.real, self.clusters = real, clusters
        self.vectors = np.concatenate([real, distractors(real, n_distractors, rng)])
        extra = distractors(real, max(0, n_queries - len(real)), np.random.default_rng(seed + 1))
        self.queries = np.concatenate([real, extra])[:n_queries]
        self.exact10 = rank_by_similarity(self.queries @ self.vectors.T, 10)
        self.gt = [
            QueryGroundTruth(ok=[j for j, c in enumerate(clusters) if c == ci and j != i], junk=[])
            for i, ci in enumerate(clusters)
        ]

    def ids(self) -> list[str]:
        return [f"v{i}" for i in range(len(self.vectors))]

    def exact_map(self, vectors: np.ndarray) -> float:
        """mAP@100 of the exact ranking over ``vectors`` (the real images query, leave-one-out)."""
        top = rank_by_similarity(vectors[: len(self.real)] @ vectors.T, MAP_K + 1)
        return compute_map([r[r != i][:MAP_K] for i, r in enumerate(top)], self.gt).mean_ap

    def recall(self, found: Sequence[Sequence[int]], exact: np.ndarray | None = None) -> float:
        exact = self.exact10 if exact is None else exact
        return float(np.mean([len(set(f[:10]) & set(e)) / 10 for f, e in zip(found, exact, strict=True)]))


def build_index(client: Any, coll: Collection, prefix: str, setting: dict[str, Any]) -> OpenSearchStore:
    options = IndexOptions(prefix=prefix, m=setting["m"], ef_construction=setting["ef_construction"])
    manifest = bench_manifest(coll.vectors.shape[1])
    if setting.get("encoder"):  # not an IndexOptions field: create the index with the encoder ourselves
        body = index_body(manifest, options)
        body["mappings"]["properties"]["embedding"]["method"]["parameters"]["encoder"] = {"name": "sq"}
        client.indices.create(index=manifest.index_name(prefix), body=body)
    store = OpenSearchStore(client, options=options, bulk=BulkOptions())
    store.ensure_index(manifest)
    with store.bulk_load():
        report = store.write(Record(id=i, vector=v) for i, v in zip(coll.ids(), coll.vectors, strict=True))
    if report.counts()["indexed"] != len(coll.vectors):
        raise RuntimeError(f"indexed {report.counts()} of {len(coll.vectors)}")
    return store


def sweep(store: OpenSearchStore, coll: Collection, ef: int) -> dict[str, Any]:
    times, found = [], []
    for q in coll.queries:
        t0 = time.perf_counter()
        hits = store.search(q, k=10, ef_search=ef)
        times.append((time.perf_counter() - t0) * 1000)
        found.append([int(h.id[1:]) for h in hits])
    rankings = []
    for i, q in enumerate(coll.real):
        hits = store.search(q, k=MAP_K + 1, ef_search=ef)
        rankings.append(np.asarray([int(h.id[1:]) for h in hits if h.id != f"v{i}"][:MAP_K], dtype=np.int64))
    return {
        "ef_search": ef,
        "recall_at_10": round(coll.recall(found), 4),
        "map_at_100": round(compute_map(rankings, coll.gt).mean_ap, 4),
        **percentiles(times),
    }


def segments(client: Any, index: str) -> int:
    return len(client.cat.segments(index=index, format="json"))


def run(client: Any, coll: Collection, ef_values: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": {}}
    for name, setting in SETTINGS.items():
        prefix = f"bench-knn-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        try:
            store = build_index(client, coll, prefix, setting)
        except (StoreError, TransportError, RuntimeError) as exc:  # e.g. an encoder this node lacks
            out["settings"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            client.indices.delete(index=f"{prefix}-*", params={"expand_wildcards": "all"})
            continue
        try:
            build_s = time.perf_counter() - t0
            store.search(coll.queries[0], k=10)  # warm
            rows = [sweep(store, coll, ef) for ef in ef_values]
            out["settings"][name] = {
                **setting, "build_s": round(build_s, 1), "segments": segments(client, str(store.index)),
                "sweep": rows,
            }  # fmt: skip
        finally:
            client.indices.delete(index=f"{prefix}-*", params={"expand_wildcards": "all"})
        print(f"{name} done", file=sys.stderr, flush=True)
    half = coll.vectors.astype(np.float16).astype(np.float32)
    exact16 = rank_by_similarity(coll.queries.astype(np.float16).astype(np.float32) @ half.T, 10)
    out["exact"] = {"map_at_100": round(coll.exact_map(coll.vectors), 4)}
    out["exact_fp16"] = {
        "map_at_100": round(coll.exact_map(half), 4),
        "recall_at_10": round(coll.recall(exact16.tolist()), 4),
    }
    return out


def table(res: dict[str, Any], default_ef: int) -> str:
    rows: list[list[Any]] = []
    for name, r in res["settings"].items():
        if "error" in r:
            rows.append([name, "-", "-", "-", "-", f"not supported here: {r['error'][:120]}"])
            continue
        for s in r["sweep"]:
            mark = " (index default)" if s["ef_search"] == default_ef else ""
            rows.append([
                name, f"{s['ef_search']}{mark}", f"{s['recall_at_10']:.4f}", f"{s['map_at_100']:.4f}",
                f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f}", f"build {r['build_s']} s, {r['segments']} segments",
            ])  # fmt: skip
    rows.append(["exact float32 (numpy)", "-", "1.0000", f"{res['exact']['map_at_100']:.4f}", "-", "oracle"])
    f16 = res["exact_fp16"]
    rows.append([
        "exact fp16 vectors (numpy)", "-", f"{f16['recall_at_10']:.4f}", f"{f16['map_at_100']:.4f}", "-",
        "faiss sq fp16 needs the native k-NN libraries (absent from the Maven k-NN zip): not run",
    ])  # fmt: skip
    header = ["index", "ef_search", "recall@10", "mAP@100", "k-NN p50 / p99 ms", "note"]
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--distractors", type=int, default=5000)
    ap.add_argument("--queries", type=int, default=200, help="recall@10 queries (the real images first)")
    ap.add_argument("--ef-search", type=int, nargs="+", default=list(EF_SEARCH))
    ap.add_argument("--opensearch", default=None, help="URL of a node; default: start one")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    coll = Collection(args.distractors, args.queries)
    with opensearch(args.opensearch) as (client, info):
        res = run(client, coll, args.ef_search)
    res = {
        "opensearch": info, "vectors": len(coll.vectors), "real_images": len(coll.real),
        "queries": len(coll.queries), "dim": coll.vectors.shape[1], **res,
    }  # fmt: skip
    md = table(res, IndexOptions().ef_search)
    paths = write_results("knn_recall", res, md, args.out_dir)
    print(md)
    print(f"\n(results in {paths[0]})")


if __name__ == "__main__":
    main()
