"""Store-only speed: bulk docs/s with precomputed vectors, search latency and memory, by collection size.

    python benchmarks/bulk_load.py                                  # 1k and 10k docs, 1280 dims
    python benchmarks/bulk_load.py --sizes 1000 10000 100000        # the full scaling table
    python benchmarks/bulk_load.py --opensearch http://host:9200    # an existing node (else one is started)

For each size, the same seeded random unit vectors go into a fresh index three ways, ``--repeats``
times each in rotated order (medians reported):
``OpenSearchStore.write`` (our ``BulkWriter``: 500 docs per request, per-item retries, one refresh at
the end), the same with ``refresh_interval`` off while loading, and opensearch-py's ``helpers.bulk``
at its defaults (the baseline; its time includes the same final refresh). Then k-NN search latency
(k=10) through ``OpenSearchStore.search`` and the node's heap, and the same size in the LocalStore
(``benchmarks/local_store_scale.py``, one process per size so its peak memory is its own).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    REPO,
    bench_manifest,
    jvm_memory_mb,
    markdown_table,
    opensearch,
    percentiles,
    unit_rows,
    write_results,
)

from gemsearch.plugin.stores.opensearch.bulk import BulkOptions
from gemsearch.plugin.stores.opensearch.index_checks import VECTOR_FIELD, IndexOptions, index_body
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore
from gemsearch.protocols import Record

BATCH = 1000  # vectors generated at a time, so memory stays flat however many are loaded


def _vectors(size: int, dim: int) -> Iterator[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(0)
    for start in range(0, size, BATCH):
        for i, v in enumerate(unit_rows(rng, min(BATCH, size - start), dim)):
            yield start + i, v


def _meta(i: int) -> dict[str, int]:
    return {"shard": i % 10, "year": 2000 + i % 25}


def load_ours(client: Any, prefix: str, size: int, dim: int, manage_refresh: bool) -> dict[str, Any]:
    store = OpenSearchStore(client, options=IndexOptions(prefix=prefix), bulk=BulkOptions())
    store.ensure_index(bench_manifest(dim))
    records = (Record(id=f"doc-{i}", vector=v, metadata=_meta(i)) for i, v in _vectors(size, dim))
    t0 = time.perf_counter()
    with store.bulk_load() if manage_refresh else contextlib.nullcontext():
        report = store.write(records)
    seconds = time.perf_counter() - t0
    counts = report.counts()
    if counts["indexed"] != size:
        raise RuntimeError(f"our bulk writer indexed {counts} of {size}")
    return {"docs_per_s": size / seconds, "seconds": seconds, "requests": report.requests, "store": store}


def load_helpers_bulk(client: Any, prefix: str, size: int, dim: int) -> dict[str, Any]:
    """opensearch-py's ``helpers.bulk`` at its defaults into an index with the same mapping."""
    from opensearchpy import helpers

    manifest = bench_manifest(dim)
    options = IndexOptions(prefix=prefix)
    index = manifest.index_name(prefix)
    client.indices.create(index=index, body=index_body(manifest, options))
    actions = (
        {"_index": index, "_id": f"doc-{i}", "_source": {VECTOR_FIELD: v.tolist(), "metadata": _meta(i)}}
        for i, v in _vectors(size, dim)
    )
    t0 = time.perf_counter()
    ok, errors = helpers.bulk(client, actions)
    client.indices.refresh(index=index)
    seconds = time.perf_counter() - t0
    if ok != size or errors:
        raise RuntimeError(f"helpers.bulk indexed {ok} of {size}: {errors}")
    return {"docs_per_s": size / seconds, "seconds": seconds}


def search_latency(store: OpenSearchStore, dim: int, queries: int) -> dict[str, float]:
    qs = unit_rows(np.random.default_rng(1), queries + 5, dim)
    for q in qs[:5]:  # warm: the first searches load the graph
        store.search(q, k=10)
    times = []
    for q in qs[5:]:
        t0 = time.perf_counter()
        store.search(q, k=10)
        times.append((time.perf_counter() - t0) * 1000)
    return percentiles(times)


LOADERS = ("helpers_bulk", "ours_refresh_off", "ours")


def _load(client: Any, loader: str, prefix: str, size: int, dim: int) -> dict[str, Any]:
    if loader == "helpers_bulk":
        return load_helpers_bulk(client, prefix, size, dim)
    return load_ours(client, prefix, size, dim, manage_refresh=loader == "ours_refresh_off")


def opensearch_size(
    client: Any, info: dict[str, Any], size: int, dim: int, queries: int, repeats: int = 1
) -> dict[str, Any]:
    """Each loader ``repeats`` times, the order rotated each round (so none always goes first)."""
    tag = uuid.uuid4().hex[:8]
    out: dict[str, Any] = {"vectors": size, "dim": dim}
    runs: dict[str, list[float]] = {name: [] for name in LOADERS}
    try:
        for rep in range(repeats):
            order = LOADERS[rep % len(LOADERS) :] + LOADERS[: rep % len(LOADERS)]
            for loader in order:
                prefix = f"bench-{rep}{loader.replace('_', '')[:6]}-{tag}"
                result = _load(client, loader, prefix, size, dim)
                runs[loader].append(result["docs_per_s"])
                if loader == "ours" and rep == repeats - 1:
                    out["search"] = search_latency(result["store"], dim, queries)
                    out["memory"] = jvm_memory_mb(client, info.get("pid"))
                    stats = client.indices.stats(index=result["store"].index, metric="store")
                    out["index_mb"] = round(stats["_all"]["primaries"]["store"]["size_in_bytes"] / 2**20, 1)
                client.indices.delete(index=f"{prefix}-*", params={"expand_wildcards": "all"})
    finally:
        client.indices.delete(index=f"bench-*-{tag}-*", params={"expand_wildcards": "all"})
    for loader, values in runs.items():
        out[f"{loader}_docs_per_s"] = float(np.median(values))
        out[f"{loader}_runs"] = [round(v, 1) for v in values]
    out["ratio_vs_helpers_bulk"] = out["ours_docs_per_s"] / out["helpers_bulk_docs_per_s"]
    return out


def local_store_size(size: int, dim: int, queries: int) -> dict[str, Any]:
    """One LocalStore size in a fresh process (its peak RSS is its own)."""
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "local_store_scale.py"), "--one", str(size),
        "--dim", str(dim), "--queries", str(queries),
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def table(opensearch_rows: list[dict[str, Any]], local_rows: list[dict[str, Any]]) -> str:
    rows: list[list[Any]] = []
    for r in opensearch_rows:
        rows.append([
            "OpenSearch (lucene HNSW)", r["vectors"], r["dim"], round(r["helpers_bulk_docs_per_s"]),
            round(r["ours_docs_per_s"]), round(r["ours_refresh_off_docs_per_s"]),
            f"{r['ratio_vs_helpers_bulk']:.2f}x",
            f"{r['search']['p50_ms']:.1f} / {r['search']['p99_ms']:.1f}",
            f"heap {r['memory']['heap_used_mb']:,.0f}"
            + (f", RSS {r['memory']['node_rss_mb']:,.0f}" if "node_rss_mb" in r["memory"] else ""),
            r["index_mb"],
        ])  # fmt: skip
    for r in local_rows:
        s = r["search"]["none"]
        rows.append([
            "LocalStore (exact)", r["vectors"], r["dim"], "-", round(r["upsert_per_s"]), "-", "-",
            f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f}",
            f"peak RSS {r['peak_rss_mb']:,.0f} (anon {r['anon_rss_mb']:,.0f})", round(r["disk_mb"], 1),
        ])  # fmt: skip
    header = [
        "store", "vectors", "dim", "helpers.bulk docs/s", "ours docs/s", "ours, refresh off docs/s",
        "ours / helpers.bulk", "k-NN p50 / p99 ms", "memory MB", "disk MB",
    ]  # fmt: skip
    return markdown_table(header, rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--local-sizes", type=int, nargs="+", default=None, help="default: --sizes + 100k")
    ap.add_argument("--dim", type=int, default=1280, help="Lite0-GeM's dimension by default")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2, help="loads per loader and size (median reported)")
    ap.add_argument("--opensearch", default=None, help="URL of a node; default: start one")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    local_sizes = args.local_sizes or sorted({*args.sizes, 100_000})
    with opensearch(args.opensearch) as (client, info):
        opensearch_size(client, info, 300, args.dim, 5)  # warm the node (JIT, first index) for all three
        os_rows = []
        for size in args.sizes:
            os_rows.append(opensearch_size(client, info, size, args.dim, args.queries, args.repeats))
            print(f"OpenSearch {size:,} docs done", file=sys.stderr, flush=True)
    local_rows = []
    for size in local_sizes:
        local_rows.append(local_store_size(size, args.dim, args.queries))
        print(f"LocalStore {size:,} docs done", file=sys.stderr, flush=True)
    md = table(os_rows, local_rows)
    results = {"opensearch": info, "opensearch_results": os_rows, "local_store_results": local_rows}
    paths = write_results("bulk_load", results, md, args.out_dir)
    print(md)
    print(f"\n(results in {paths[0]})")


if __name__ == "__main__":
    main()
