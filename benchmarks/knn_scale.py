"""k-NN sizing: load N vectors per configuration, measure load speed, size, memory, latency and recall.

    python benchmarks/knn_scale.py --docs 20000 --configs f32-1280-m16 f32-256-m16 sq-1280-m16
    python benchmarks/knn_scale.py --docs 1000000 --opensearch http://host:9200 --out /data/knn_1m.json

Per configuration, into one index (``knn-scale-<config>-s<seed>``) on the node (started here with
the test harness and ``--heap``, or ``--opensearch URL``):

- load: bulk docs/s through gemsearch's ``BulkWriter`` (``--bulk-clients`` writers side by side) with
  ``refresh_interval`` -1 and 0 replicas during the load, then the refresh and a force-merge to one
  segment, each timed on its own;
- size: the index on disk (``_stats``), and its vector + graph files (segment file sizes: ``vec``,
  ``vex``, ``veq``, ...), next to the k-NN plugin's documented memory formula
  (``gemsearch.plugin.stores.opensearch.sizing``);
- memory: the node's RSS, anonymous and file-backed (``/proc/<pid>``, for a node started here or
  ``--node-pid``), and the heap in use (``_nodes/stats/jvm``), after the queries;
- queries: p50/p99 at k=10 and k=100 for ``ef_search`` k, 2k and 4k (and the index default, 100),
  recall@k against exact brute force (numpy) on ``--queries`` held-out queries.

The vectors are synthetic descriptors made from real Lite0-GeM descriptors of photo regions
(``_scale_data``): vector ``i`` depends only on ``(seed, i)``, so a load resumes where an index's
count stops (run the same command again; ``--fresh`` starts over). Before the configurations, a
realism check compares HNSW recall and neighbour similarities on the real descriptors and on as many
synthetic ones. faiss is not measured: the Maven k-NN zip the harness installs has no native
libraries (writing into a faiss index kills such a node); the faiss, binary-quantised and on-disk
figures in docs/benchmarks.md are the documented formulas, labelled as such.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, bench_manifest, markdown_table, percentiles, status_kb
from _machine import describe, one_line
from _scale_data import BENCH_CACHE, BLOCK, GENERATOR, RealSet, Reducer, Synthetic, exact_top
from _scale_data import neighbour_profile as profile
from _scale_data import real_set as load_real

from gemsearch.plugin.stores.opensearch.bulk import BulkOptions, BulkWriter
from gemsearch.plugin.stores.opensearch.bulk_models import BulkDoc
from gemsearch.plugin.stores.opensearch.index_checks import VECTOR_FIELD, IndexOptions, index_body
from gemsearch.plugin.stores.opensearch.sizing import hnsw_memory_bytes

MB = 2**20
KNN_FILES = ("vec", "vex", "vem", "veq", "vemq")  # lucene's vector, graph and quantised-vector files


@dataclass(frozen=True)
class Config:
    name: str
    dims: int
    m: int = 16
    ef_construction: int = 128
    encoder: str = "none"  # "sq": lucene int7 quantisation inside OpenSearch
    data_type: str = "float"  # "byte": vectors quantised to int8 here before they are sent
    vector_in_source: bool = True

    @property
    def sizing_encoder(self) -> str:
        return "byte" if self.data_type == "byte" else self.encoder


CONFIGS = {c.name: c for c in (
    Config("f32-1280-m16", 1280),
    Config("f32-1280-m32", 1280, m=32),
    Config("f32-512-m16", 512),
    Config("f32-256-m16", 256),
    Config("sq-1280-m16", 1280, encoder="sq"),
    Config("byte-1280-m16", 1280, data_type="byte"),
    Config("f32-1280-m16-derived", 1280, vector_in_source=False),
)}  # fmt: skip
DEFAULT_CONFIGS = ("f32-1280-m16", "f32-256-m16", "sq-1280-m16")
INDEX_DEFAULT_EF = IndexOptions().ef_search


# ----------------------------------------------------------------------------- the node


@contextlib.contextmanager
def node(url: str | None, heap: str, data_dir: Path | None) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A client for ``url``, or for a node started here (its data in ``data_dir`` if given, so a
    later run resumes the same indices)."""
    from opensearchpy import OpenSearch

    started = None
    if url is None:
        sys.path.insert(0, str(REPO / "tests"))
        from support.opensearch_harness import start_node

        settings: dict[str, Any] = {}
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:  # the harness runs the JVM as an unprivileged user
                subprocess.run(["chown", "-R", "gemsearch-opensearch", str(data_dir)], check=False)
            settings["path.data"] = str(data_dir)
        print(f"starting an OpenSearch node (heap {heap}) ...", file=sys.stderr, flush=True)
        started = start_node(heap=heap, settings=settings)
        url = started.url
    client = OpenSearch(hosts=[url], timeout=600)
    try:
        info = {
            "url": url, "version": client.info()["version"]["number"], "started_here": started is not None,
            "heap": heap if started is not None else None,
            "pid": started.process.pid if started is not None and started.process else None,
        }  # fmt: skip
        yield client, info
    finally:
        client.close()
        if started is not None:
            started.stop()


def node_memory(client: Any, pid: int | None) -> dict[str, float]:
    jvm = next(iter(client.nodes.stats(metric="jvm")["nodes"].values()))["jvm"]["mem"]
    out = {"heap_used_mb": round(jvm["heap_used_in_bytes"] / MB, 1),
           "heap_max_mb": round(jvm["heap_max_in_bytes"] / MB, 1)}  # fmt: skip
    if pid is not None:
        for key, field in (("rss_mb", "VmRSS"), ("rss_anon_mb", "RssAnon"), ("rss_file_mb", "RssFile")):
            out[key] = round(status_kb(field, pid) / 1024, 1)
    return out


# ----------------------------------------------------------------------------- one index


def index_name(cfg: Config, seed: int) -> str:
    return f"knn-scale-{cfg.name}-s{seed}"


def ensure_index(client: Any, cfg: Config, seed: int, fresh: bool) -> str:
    name = index_name(cfg, seed)
    meta = {"config": asdict(cfg), "seed": seed, "generator": GENERATOR}
    if fresh:
        client.indices.delete(index=name, params={"ignore_unavailable": "true"})
    if client.indices.exists(index=name):
        stored = client.indices.get_mapping(index=name)[name]["mappings"].get("_meta", {}).get("knn_scale")
        if stored != meta:
            raise SystemExit(f"error: index {name} holds other vectors ({stored}); rerun with --fresh")
        return name
    options = IndexOptions(
        prefix="knn-scale", m=cfg.m, ef_construction=cfg.ef_construction, encoder=cfg.encoder,  # type: ignore[arg-type]
        vector_in_source=cfg.vector_in_source,
    )  # fmt: skip
    body = index_body(bench_manifest(cfg.dims, name=cfg.name), options)
    if cfg.data_type == "byte":
        body["mappings"]["properties"][VECTOR_FIELD]["data_type"] = "byte"
    body["mappings"]["_meta"]["knn_scale"] = meta
    client.indices.create(index=name, body=body)
    return name


def remember_load(client: Any, index: str, loaded: dict[str, Any]) -> dict[str, Any]:
    """Keep the load's figures in the index's ``_meta``: a later run that reuses the complete index
    (``--keep``: more queries, other ``--extra-ef``) reports them instead of an empty load."""
    meta = client.indices.get_mapping(index=index)[index]["mappings"].get("_meta", {})
    client.indices.put_mapping(index=index, body={"_meta": {**meta, "knn_scale_load": loaded}})
    return loaded


def earlier_load(client: Any, index: str, now: dict[str, Any]) -> dict[str, Any]:
    meta = client.indices.get_mapping(index=index)[index]["mappings"].get("_meta", {})
    earlier = meta.get("knn_scale_load")
    return {**earlier, "measured_by_an_earlier_run": True} if earlier else now


def count(client: Any, index: str) -> int:
    client.indices.refresh(index=index)
    return int(client.count(index=index)["count"])


class Vectors:
    """The collection as one configuration indexes it: reduced to its dims, quantised if bytes."""

    def __init__(self, gen: Synthetic, reducer: Reducer, cfg: Config, byte_scale: float) -> None:
        self.gen, self.reducer, self.cfg, self.byte_scale = gen, reducer, cfg, byte_scale

    def rows(self, start: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        for lo, x in self.gen.rows(start, stop):
            yield lo, self.reducer(x, self.cfg.dims)

    def sent(self, x: np.ndarray) -> list[Any]:
        """Query vectors as JSON lists (the search body)."""
        return self.payload(x).tolist()  # type: ignore[no-any-return]

    def payload(self, x: np.ndarray) -> np.ndarray:
        """Rows as the bulk writer sends them: arrays, written in their shortest exact form."""
        if self.cfg.data_type == "byte":
            return quantise(x, self.byte_scale)
        return np.ascontiguousarray(x, dtype=np.float32)


def quantise(x: np.ndarray, scale: float) -> np.ndarray:
    out: np.ndarray = np.clip(np.rint(x * scale), -128, 127).astype(np.int8)
    return out


def resume_point(have: int, clients: int) -> int:
    """Where a load resumes: writers take blocks in order and never more than ``clients`` past the
    lowest unfinished one (``Dealer``), so every block ``clients`` below the count is complete."""
    return max(0, have // BLOCK - clients) * BLOCK


class Dealer:
    """Deals blocks of vectors to the bulk writers, in order, never ``clients`` or more past the
    lowest unfinished block (a writer stuck in retries holds the others back), and stops dealing
    once a writer fails."""

    def __init__(self, rows: Iterator[tuple[int, np.ndarray]], start: int, clients: int) -> None:
        self.rows, self.clients, self.next = rows, clients, start // BLOCK
        self.unfinished: set[int] = set()
        self.stopped = False
        self.cond = threading.Condition()

    def take(self) -> tuple[int, np.ndarray] | None:
        with self.cond:
            while not self.stopped and self.next >= min(self.unfinished, default=self.next) + self.clients:
                self.cond.wait()
            block = None if self.stopped else next(self.rows, None)
            if block is not None:
                self.next = block[0] // BLOCK + 1
                self.unfinished.add(block[0] // BLOCK)
            return block

    def done(self, lo: int) -> None:
        with self.cond:
            self.unfinished.discard(lo // BLOCK)
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def load(client: Any, index: str, vectors: Vectors, start: int, stop: int, clients: int) -> dict[str, Any]:
    """Bulk-load ``start .. stop - 1`` with refreshes off and no replicas, then refresh, then merge.

    ``clients`` bulk writers run side by side, each taking the next block of vectors: one bulk
    request is indexed by one write thread of the node, so one writer leaves its other cores idle."""
    old = client.indices.get_settings(index=index)[index]["settings"]["index"]
    client.indices.put_settings(
        index=index, body={"index": {"refresh_interval": "-1", "number_of_replicas": 0}}
    )
    dealer = Dealer(vectors.rows(start, stop), start, clients)

    def writer() -> int:
        bulk = BulkWriter(client, index, BulkOptions(refresh=False, request_timeout_s=600))
        indexed = 0
        try:
            while (block := dealer.take()) is not None:
                lo, x = block
                docs = (BulkDoc(f"v{lo + i}", {VECTOR_FIELD: v}) for i, v in enumerate(vectors.payload(x)))
                indexed += bulk.write(docs).counts()["indexed"]
                dealer.done(lo)
        except BaseException:
            dealer.stop()  # the other writers finish their block and stop
            raise
        return indexed

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(writer) for _ in range(clients)]
            try:
                indexed = sum(f.result() for f in futures)
            except BaseException:  # a writer failed, or Ctrl-C: stop dealing before the pool waits
                dealer.stop()
                raise
    finally:
        refresh = old.get("refresh_interval", "-1")  # a run killed mid-load left -1: created with 1s
        client.indices.put_settings(index=index, body={"index": {
            "refresh_interval": "1s" if refresh == "-1" else refresh,
            "number_of_replicas": int(old.get("number_of_replicas", 0)),
        }})  # fmt: skip
    load_s = time.perf_counter() - t0
    if indexed != stop - start:
        raise RuntimeError(f"{index}: indexed {indexed} of {stop - start}")
    t0 = time.perf_counter()
    client.indices.refresh(index=index, request_timeout=3600)
    refresh_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    client.indices.forcemerge(index=index, max_num_segments=1, request_timeout=24 * 3600)
    merge_s = time.perf_counter() - t0
    return {
        "loaded": stop - start, "resumed_from": start, "bulk_clients": clients, "load_s": round(load_s, 2),
        "docs_per_s": round((stop - start) / load_s, 1) if stop > start else None,
        "refresh_s": round(refresh_s, 2), "force_merge_s": round(merge_s, 2),
    }  # fmt: skip


def index_size(client: Any, index: str) -> dict[str, Any]:
    stats = client.indices.stats(
        index=index, metric="store,segments", params={"include_segment_file_sizes": "true"}
    )
    prim = stats["_all"]["primaries"]
    files = {ext: v["size_in_bytes"] for ext, v in prim["segments"].get("file_sizes", {}).items()}
    cat = client.cat.indices(index=index, format="json", bytes="b")[0]
    return {
        "store_mb": round(prim["store"]["size_in_bytes"] / MB, 1),
        "cat_store_size_mb": round(int(cat["store.size"]) / MB, 1),
        "segments": prim["segments"]["count"],
        "knn_files_mb": round(sum(files.get(e, 0) for e in KNN_FILES) / MB, 1),
        "search_files_mb": round(sum(files.get(e, 0) for e in search_files(files)) / MB, 1),
        "doc_values_mb": round(files.get("dvd", 0) / MB, 1),
        "stored_fields_mb": round(files.get("fdt", 0) / MB, 1),
        "file_sizes_mb": {e: round(b / MB, 2) for e, b in sorted(files.items())},
    }


def search_files(files: dict[str, int]) -> tuple[str, ...]:
    """The files an HNSW search reads: the graph and the vectors it compares (the quantised copy when
    there is one; the float32 file then serves merges and rescoring only)."""
    return ("veq", "vemq", "vex", "vem") if "veq" in files else ("vec", "vex", "vem")


def search_ids(client: Any, index: str, q: list[Any], k: int, ef: int) -> tuple[list[int], float]:
    knn = {"vector": q, "k": k, "method_parameters": {"ef_search": ef}}
    body = {"size": k, "_source": False, "query": {"knn": {VECTOR_FIELD: knn}}}
    t0 = time.perf_counter()
    hits = client.search(index=index, body=body)["hits"]["hits"]
    return [int(h["_id"][1:]) for h in hits], (time.perf_counter() - t0) * 1000


def ef_values(k: int, extra: Sequence[int] = ()) -> list[int]:
    base = {k, 2 * k, 4 * k} | ({INDEX_DEFAULT_EF} if k < INDEX_DEFAULT_EF else set())
    return sorted(base | {ef for ef in extra if ef >= k})


def query_sweep(
    client: Any,
    index: str,
    queries: list[Any],
    exact: np.ndarray,
    ks: Sequence[int] = (10, 100),
    extra_ef: Sequence[int] = (),
) -> list[dict[str, Any]]:
    for q in queries[:20]:  # warm: the first searches page the graph in
        search_ids(client, index, q, 10, 10)
    rows = []
    for k in ks:
        for ef in ef_values(k, extra_ef):
            times, recalls = [], []
            for q, truth in zip(queries, exact, strict=True):
                found, ms = search_ids(client, index, q, k, ef)
                times.append(ms)
                recalls.append(len(set(found) & set(truth[:k].tolist())) / k)
            rows.append(
                {"k": k, "ef_search": ef, "recall": round(float(np.mean(recalls)), 4), **percentiles(times)}
            )
    return rows


# ----------------------------------------------------------------------------- ground truth


def ground_truth(vectors: Vectors, queries: np.ndarray, docs: int, seed: int, k: int = 100) -> np.ndarray:
    """Exact top-k of every query over the ``docs`` vectors (numpy; cached per size and dims)."""
    key = f"knn-scale-gt-g{GENERATOR}-s{seed}-n{docs}-d{vectors.cfg.dims}-q{len(queries)}-k{k}.npz"
    path = BENCH_CACHE / key
    if path.is_file():
        top: np.ndarray = np.load(path)["top"]
        return top
    t0 = time.perf_counter()
    top = exact_top(queries, vectors.rows(0, docs), min(k, docs))
    print(
        f"  exact top-{k} over {docs:,} vectors: {time.perf_counter() - t0:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, top=top)
    return top


# ----------------------------------------------------------------------------- runs


def run_config(client: Any, info: dict[str, Any], cfg: Config, args: argparse.Namespace,
               gen: Synthetic, reducer: Reducer, byte_scale: float) -> dict[str, Any]:  # fmt: skip
    vectors = Vectors(gen, reducer, cfg, byte_scale)
    t0 = time.perf_counter()
    index = ensure_index(client, cfg, args.seed, args.fresh)
    have = count(client, index)
    if have > args.docs:
        raise SystemExit(f"error: {index} already holds {have:,} vectors, more than --docs; use --fresh")
    # resent vectors keep their ids (overwritten); a complete index is not loaded again
    start = args.docs if have == args.docs else resume_point(have, args.bulk_clients)
    print(f"{cfg.name}: loading {start:,} .. {args.docs:,}", file=sys.stderr, flush=True)
    loaded = load(client, index, vectors, start, args.docs, args.bulk_clients)
    keep = remember_load if start < args.docs else earlier_load
    loaded = keep(client, index, loaded)
    if count(client, index) != args.docs:
        raise RuntimeError(f"{index} holds {count(client, index)} vectors after the load, not {args.docs}")
    queries = vectors.reducer(gen.queries(args.docs, args.queries), cfg.dims)
    exact = ground_truth(vectors, queries, args.docs, args.seed)
    sent = vectors.sent(queries)
    rows = query_sweep(client, index, sent, exact, extra_ef=args.extra_ef)
    size = index_size(client, index)
    files_mb = size["search_files_mb"]
    formula = hnsw_memory_bytes(args.docs, cfg.dims, cfg.m, "lucene", cfg.sizing_encoder)  # type: ignore[arg-type]
    out = {
        "name": cfg.name, "engine": "lucene", "dims": cfg.dims, "m": cfg.m,
        "ef_construction": cfg.ef_construction, "encoder": cfg.sizing_encoder,
        "vector_in_source": cfg.vector_in_source, "index_name": index,
        "load": loaded, "index": size, "memory": node_memory(client, info.get("pid")),
        "formula_memory_mb": round(formula / MB, 1),
        "formula_vs_search_files": round(formula / MB / files_mb, 3) if files_mb else None,
        "queries": rows, "wall_s": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    if not args.keep:
        client.indices.delete(index=index)
    return out


def realism_check(client: Any, real: RealSet, gen: Synthetic, seed: int, queries: int) -> dict[str, Any]:
    """HNSW recall@10 and neighbour similarities on the real descriptors and on as many synthetic ones."""
    n, nq = len(real.indexed), min(queries, len(real.queries))
    synthetic = np.concatenate([x for _, x in gen.rows(0, n)])
    real_queries = real.queries[np.linspace(0, len(real.queries) - 1, nq).astype(int)]
    sets = {"real": (real.indexed, real_queries), "synthetic": (synthetic, gen.queries(n, nq))}
    cfg = Config("realism", real.x.shape[1])
    out: dict[str, Any] = {"vectors": n, "queries": nq}
    for label, (x, q) in sets.items():
        index = f"knn-scale-realism-{label}-s{seed}"
        client.indices.delete(index=index, params={"ignore_unavailable": "true"})
        body = index_body(bench_manifest(cfg.dims, name="realism"), IndexOptions(prefix="knn-scale"))
        client.indices.create(index=index, body=body)
        try:
            writer = BulkWriter(client, index, BulkOptions(refresh=True))
            writer.write(BulkDoc(f"v{i}", {VECTOR_FIELD: v}) for i, v in enumerate(x))
            exact = exact_top(q, iter([(0, x)]), 10)
            rows = query_sweep(client, index, [v.tolist() for v in q], exact, ks=(10,))
        finally:
            client.indices.delete(index=index)
        out[label] = {"recall_at_10": {r["ef_search"]: r["recall"] for r in rows}, **profile(q, x)}
    return out


def byte_scale_of(real: RealSet, reducer: Reducer, dims: int) -> float:
    """int8 scale for byte vectors: the 99.9th percentile of |value| on the real set maps to 127."""
    return float(127.0 / np.percentile(np.abs(reducer(real.indexed, dims)), 99.9))


def formula_only(docs: int, dims: int = 1280, m: int = 16) -> list[dict[str, Any]]:
    """faiss figures this node cannot measure: the documented memory formula, labelled so."""
    rows = [("faiss", "none", 1), ("faiss", "sq", 1), ("faiss", "binary", 1), ("faiss", "binary", 2),
            ("faiss", "binary", 4)]  # fmt: skip
    return [
        {"engine": e, "encoder": enc, "bits": bits, "dims": dims, "m": m, "measured": False,
         "formula_memory_mb": round(hnsw_memory_bytes(docs, dims, m, e, enc, bits) / MB, 1)}  # type: ignore[arg-type]
        for e, enc, bits in rows
    ]  # fmt: skip


# ----------------------------------------------------------------------------- output


def tables(res: dict[str, Any]) -> str:
    size_rows, query_rows = [], []
    for c in res["configs"]:
        if "error" in c:
            size_rows.append(
                [c["name"], "-", "-", "-", "-", "-", "-", "-", "-", f"not run: {c['error'][:100]}"]
            )
            continue
        ld, ix, mem = c["load"], c["index"], c["memory"]
        rss = (
            f"{mem['rss_mb']:,.0f} ({mem['rss_anon_mb']:,.0f} / {mem['rss_file_mb']:,.0f})"
            if "rss_mb" in mem
            else "-"
        )
        size_rows.append([
            c["name"], ld["docs_per_s"] or "-", ld["refresh_s"], ld["force_merge_s"], ix["store_mb"],
            f"{ix['knn_files_mb']} ({ix['search_files_mb']})", c["formula_memory_mb"], rss,
            mem["heap_used_mb"],
            "vector not in _source (derived)" if not c["vector_in_source"] else "",
        ])  # fmt: skip
        for r in c["queries"]:
            query_rows.append([c["name"], r["k"], r["ef_search"], f"{r['recall']:.4f}",
                               f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}"])  # fmt: skip
    head = [
        "config", "load docs/s", "refresh s", "force-merge s", "disk MB", "vector+graph files MB (searched)",
        "formula memory MB (not measured)", "node RSS MB (anon / file)", "heap used MB", "note",
    ]  # fmt: skip
    caption = (f"{res['docs']:,} vectors, {res['queries']} held-out queries, "
               f"OpenSearch {res['opensearch']['version']} (lucene engine)")  # fmt: skip
    query_head = ["config", "k", "ef_search", "recall@k", "p50 / p99 ms"]
    parts = [caption, "", markdown_table(head, size_rows), "", markdown_table(query_head, query_rows)]
    if res.get("formula_only"):
        rows = [[f"{r['engine']} {r['encoder']}" + (f" {r['bits']}-bit" if r["encoder"] == "binary" else ""),
                 r["dims"], r["m"], r["formula_memory_mb"]] for r in res["formula_only"]]  # fmt: skip
        parts += ["", "Not measured (faiss needs the k-NN native libraries, absent from the Maven k-NN zip): "
                  "the documented memory formula 1.1 x (bytes per vector + 8 x m) x vectors", "",
                  markdown_table(["engine / encoder", "dims", "m", "memory MB (formula)"], rows)]  # fmt: skip
    if res.get("realism"):
        r = res["realism"]
        rows = [
            [label, *[f"{v:.4f}" for v in r[label]["recall_at_10"].values()],
             *[r[label].get(f"sim_at_{n}", "-") for n in (1, 10, 100)]]
            for label in ("real", "synthetic")
        ]  # fmt: skip
        efs = list(r["real"]["recall_at_10"])
        parts += ["", f"Realism check ({r['vectors']:,} vectors, {r['queries']} queries, m=16):", "",
                  markdown_table(["descriptors", *[f"recall@10 ef {e}" for e in efs],
                                  "sim of 1st NN", "10th", "100th"], rows)]  # fmt: skip
    return "\n".join(parts)


def write(res: dict[str, Any], out: Path) -> Path:
    machine = res.get("machine") or describe()
    payload = {"benchmark": "knn_scale", **res, "machine": machine}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str))
    md = out.with_suffix(".md")
    md.write_text(f"### knn_scale\n\n{one_line(machine)}\n\n{tables(res)}\n")
    return md


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=20_000, help="vectors per configuration")
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(DEFAULT_CONFIGS))
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries (recall and latency)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic vectors and queries")
    ap.add_argument("--opensearch", default=None, help="URL of a node; default: start one with the harness")
    ap.add_argument("--node-pid", type=int, default=None, help="pid of that node's JVM, for its RSS")
    ap.add_argument("--heap", default="2g", help="heap of a node started here")
    ap.add_argument(
        "--data-dir", type=Path, default=None, help="data folder of a node started here (resumable)"
    )
    ap.add_argument(
        "--index-thread-qty",
        type=int,
        default=None,
        help="knn.algo_param.index_thread_qty (graph-build threads; native engines)",
    )
    ap.add_argument(
        "--extra-ef",
        type=int,
        nargs="*",
        default=[200, 400, 800],
        help="ef_search values swept beside k, 2k, 4k and 100 (those >= k)",
    )
    ap.add_argument(
        "--bulk-clients", type=int, default=2, help="bulk writers side by side (one write thread each)"
    )
    ap.add_argument("--fresh", action="store_true", help="drop the configurations' indices first")
    ap.add_argument(
        "--keep", action="store_true", help="keep the indices (a later run resumes or reuses them)"
    )
    ap.add_argument(
        "--no-realism", dest="realism", action="store_false", help="skip the real-vs-synthetic check"
    )
    ap.add_argument("--realism-queries", type=int, default=432, help="queries of that check (432: all)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "knn_scale.json")
    args = ap.parse_args(argv)
    if args.docs < 100 or args.queries < 1:
        ap.error("--docs must be at least 100 and --queries at least 1")
    t0 = time.perf_counter()
    machine = describe()  # the load average at the start, as the other benchmarks report it
    real = load_real()  # the real descriptors are fixed; --seed varies the synthetic ones
    gen, reducer = Synthetic(real, args.seed), Reducer(real.indexed)
    res: dict[str, Any] = {"docs": args.docs, "queries": args.queries, "seed": args.seed, "configs": [],
                           "real_descriptors": len(real.x), "command": " ".join(sys.argv),
                           "machine": machine}  # fmt: skip
    with node(args.opensearch, args.heap, args.data_dir) as (client, info):
        res["opensearch"] = info
        if args.index_thread_qty:
            client.cluster.put_settings(
                body={"transient": {"knn.algo_param.index_thread_qty": args.index_thread_qty}}
            )
        res["idle_memory"] = node_memory(client, info["pid"] or args.node_pid)
        info["pid"] = info["pid"] or args.node_pid
        if args.realism:
            res["realism"] = realism_check(client, real, gen, args.seed, args.realism_queries)
            print(f"realism check: {res['realism']}", file=sys.stderr, flush=True)
        for name in args.configs:
            cfg = CONFIGS[name]
            scale = byte_scale_of(real, reducer, cfg.dims)
            try:
                res["configs"].append(run_config(client, info, cfg, args, gen, reducer, scale))
            except Exception as exc:  # e.g. an encoder this node lacks: recorded, not fatal
                res["configs"].append({"name": name, "error": f"{type(exc).__name__}: {exc}"[:500]})
            print(f"{name} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            write({**res, "complete": False}, args.out)  # what is measured so far survives a stop
    res["formula_only"] = formula_only(args.docs)
    res["wall_s"], res["complete"] = round(time.perf_counter() - t0, 1), True
    md = write(res, args.out)
    print(md.read_text())
    print(f"(results in {args.out})")


if __name__ == "__main__":
    main()
