"""LocalStore at scale: upsert rate, search latency (p50/p99) and peak memory at 10k/100k(/1M) vectors.

    python benchmarks/local_store_scale.py                      # 10k and 100k, 512 dims
    python benchmarks/local_store_scale.py --million            # adds 1M (a 2 GB vectors file)
    python benchmarks/local_store_scale.py --sizes 5000 --dim 64 --queries 20

Each size runs in a fresh process so its peak RSS is its own. Vectors are random unit vectors made
batch by batch (never all in memory); metadata ``{"shard": i % 10, "year": 2000 + i % 25}`` gives a
10% term filter and a 20% range filter. Results go to ``--out`` (JSON) and a markdown table on stdout.
RSS counts the mapped vectors file pages the kernel keeps resident (reclaimable page cache);
``anon`` is the process's own memory, which stays flat as the store grows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gemsearch.manifest import ModelManifest, PoolingSpec
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.protocols import Record

FILTERS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "term 10%": {"shard": 3},
    "range 20%": {"year": {"gte": 2005, "lt": 2010}},
}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fill(store: LocalStore, size: int, dim: int, batch: int) -> float:
    """Upsert ``size`` vectors; seconds spent inside upsert."""
    rng, spent = np.random.default_rng(0), 0.0
    for start in range(0, size, batch):
        vectors = _unit_rows(rng, min(batch, size - start), dim)
        records = [
            Record(
                id=f"doc-{start + i}",
                vector=v,
                metadata={"shard": (start + i) % 10, "year": 2000 + (start + i) % 25},
            )
            for i, v in enumerate(vectors)
        ]
        t0 = time.perf_counter()
        store.upsert(records)
        spent += time.perf_counter() - t0
    return spent


def _latencies(
    store: LocalStore, queries: np.ndarray, k: int, filters: dict[str, Any] | None
) -> dict[str, float]:
    store.search(queries[0], k=k, filters=filters)  # warm: maps the file, loads what is cached
    times = []
    for q in queries:
        t0 = time.perf_counter()
        store.search(q, k=k, filters=filters)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def run_one(size: int, dim: int, batch: int, n_queries: int, k: int, workdir: Path) -> dict[str, Any]:
    folder = workdir / f"store-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    manifest = ModelManifest(
        name="bench", version=hashlib.sha256(b"bench").hexdigest(), backbone="random",
        pooling=PoolingSpec(kind="gem", p=3.0), output_dim=dim,
    )  # fmt: skip
    with LocalStore(folder) as store:
        store.ensure_index(manifest)
        upsert_s = _fill(store, size, dim, batch)
    t0 = time.perf_counter()
    with LocalStore(folder, read_only=True) as reader:  # the query side: a separate, read-only open
        open_s = time.perf_counter() - t0
        queries = _unit_rows(np.random.default_rng(1), n_queries, dim)
        search = {name: _latencies(reader, queries, k, f) for name, f in FILTERS.items()}
        count = reader.count()
    disk = sum(p.stat().st_size for p in folder.iterdir())
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "vectors": size, "dim": dim, "count": count, "batch": batch, "k": k,
        "upsert_per_s": size / upsert_s, "open_s": open_s, "search": search,
        "peak_rss_mb": _status_kb("VmHWM") / 1024, "anon_rss_mb": _status_kb("RssAnon") / 1024,
        "disk_mb": disk / 2**20,
    }  # fmt: skip


def _table(results: list[dict[str, Any]]) -> str:
    head = "| vectors | dim | upsert/s | " + " | ".join(f"search {n} p50/p99 ms" for n in FILTERS)
    lines = [head + " | peak RSS MB | anon MB | disk MB |", "|" + "---|" * (7 + len(FILTERS) - 1)]
    for r in results:
        cells = [f"{r['search'][n]['p50_ms']:.1f} / {r['search'][n]['p99_ms']:.1f}" for n in FILTERS]
        lines.append(
            f"| {r['vectors']:,} | {r['dim']} | {r['upsert_per_s']:,.0f} | " + " | ".join(cells)
            + f" | {r['peak_rss_mb']:,.0f} | {r['anon_rss_mb']:,.0f} | {r['disk_mb']:,.0f} |"
        )  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--million", action="store_true", help="also 1,000,000 vectors (2 GB at 512 dims)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1000, help="records per upsert")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--workdir", type=Path, default=None, help="where the stores are built (default: a temp dir)"
    )
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/local_store_scale.json"))
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: run one size, print JSON
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gemsearch-bench-"))
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.dim, args.batch, args.queries, args.k, workdir)))
        return
    results = []
    for size in [*args.sizes, *([1_000_000] if args.million else [])]:
        opts = {
            "--one": size,
            "--dim": args.dim,
            "--batch": args.batch,
            "--queries": args.queries,
            "--k": args.k,
        }
        cmd = [
            sys.executable,
            __file__,
            *(str(x) for kv in opts.items() for x in kv),
            "--workdir",
            str(workdir),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.splitlines()[-1]))
        print(f"{size:,} vectors done", file=sys.stderr)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    print(_table(results))
    print(f"\n(results in {args.out})")


if __name__ == "__main__":
    main()
