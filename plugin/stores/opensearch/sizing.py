"""Sizing a k-NN index before building it: memory, disk and primary shards for N vectors.

Memory follows the k-NN plugin's documented estimates: an HNSW graph with its vectors needs about
``1.1 * (bytes_per_vector + 8 * m)`` bytes per vector (``bytes_per_vector`` is ``4 * d`` for float32,
``2 * d`` for faiss's fp16 ``sq``, ``d`` for byte vectors and lucene's int7 ``sq``, ``d * bits / 8`` for
faiss binary quantisation), per copy of a shard. For faiss that memory is native memory outside the
heap; for lucene it is the page cache holding the mapped vector and graph files (the node's RSS).

Disk adds what memory does not hold: the vector at full precision twice (the vector file and a
doc-values copy) next to any quantised copy, and the vector's JSON in ``_source`` unless it is
derived (``vector_in_source=False``), which Lucene's stored fields compress poorly
(``SOURCE_BYTES_PER_DIM``, measured by ``benchmarks/knn_scale.py``).
Measured recall and latency come from that benchmark's results (``MeasuredBand``), never from here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ....errors import ConfigError

Encoder = Literal["none", "sq", "byte", "binary"]

OVERHEAD = 1.1  # the k-NN documentation's allowance on top of vectors + graph links
LINK_BYTES = 8  # per HNSW link and per unit of m, as documented
# lucene's graph file on disk is delta-encoded: 24-29 bytes per vector at m=16 (the vex files of the
# reference runs, 20k to 1M vectors), about 2 bytes per unit of m
LINK_DISK_BYTES = 2
# JSON text of a vector in _source, per dimension after Lucene's stored-field compression: the
# bulk writer sends float32 in its shortest form (about 11 characters), which compresses poorly.
# Measured by benchmarks/knn_scale.py (the fdt file / docs / dims; 1280 dims, 4,096 vectors,
# OpenSearch 2.19.1; 15.7 when vectors were sent as Python floats' 17-digit repr).
SOURCE_BYTES_PER_DIM = 8.4
SOURCE_BYTES_PER_DIM_BYTE = 2.0  # byte vectors: small integers as text
DOC_OVERHEAD_BYTES = 200  # id, seq_no, version, image_ref and a little metadata, per document
SHARD_MAX_GIB = 30.0  # the usual guidance: shards of 10-30 GiB
SHARD_MIN_GIB = 10.0
GIB = 2**30


class SizingInput(BaseModel):
    """What an index will hold and how it is built."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    docs: int = Field(ge=1)
    dims: int = Field(ge=1, le=16000)
    replicas: int = Field(0, ge=0)
    engine: Literal["lucene", "faiss"] = "lucene"
    encoder: Encoder = "none"
    bits: int = Field(1, description="bits per dimension of faiss binary quantisation (1, 2 or 4)")
    m: int = Field(16, ge=2, le=512)
    vector_in_source: bool = True
    # OpenSearch 3.x derives the vector instead of keeping it in _source and keeps no doc-values
    # copy of it (measured at 1M vectors on 3.5.0: the index is its vector and graph files)
    opensearch_major: int = Field(2, ge=1, le=9)

    @property
    def keeps_source(self) -> bool:
        return self.vector_in_source and self.opensearch_major < 3

    @model_validator(mode="after")
    def _supported(self) -> SizingInput:
        if self.encoder == "binary" and self.engine != "faiss":
            raise ValueError("binary quantisation is a faiss encoder (--engine faiss)")
        if self.encoder == "binary" and self.bits not in (1, 2, 4):
            raise ValueError("binary quantisation takes 1, 2 or 4 bits per dimension")
        return self


def vector_bytes(dims: int, engine: str, encoder: Encoder, bits: int = 1) -> float:
    """Bytes one vector takes in the searched structure (the graph's vectors)."""
    if encoder == "none":
        return 4.0 * dims
    if encoder == "sq":  # lucene: int7 in a byte; faiss: fp16
        return 2.0 * dims if engine == "faiss" else float(dims)
    if encoder == "byte":
        return float(dims)
    return dims * bits / 8.0  # faiss binary quantisation


def hnsw_memory_bytes(docs: int, dims: int, m: int, engine: str = "lucene", encoder: Encoder = "none",
                      bits: int = 1) -> float:  # fmt: skip
    """The documented estimate ``1.1 * (bytes_per_vector + 8 * m) * docs`` for one copy."""
    return OVERHEAD * (vector_bytes(dims, engine, encoder, bits) + LINK_BYTES * m) * docs


def disk_bytes_per_doc(s: SizingInput) -> float:
    """One copy of one document on disk: the vector file, the doc-values copy of the vector, the
    quantised copy, the links, the vector's JSON in ``_source`` and the rest of the document."""
    raw = float(s.dims) if s.encoder == "byte" else 4.0 * s.dims  # what was sent, at full precision
    quantised = vector_bytes(s.dims, s.engine, s.encoder, s.bits) if s.encoder in ("sq", "binary") else 0.0
    links = LINK_DISK_BYTES * s.m
    per_dim = SOURCE_BYTES_PER_DIM_BYTE if s.encoder == "byte" else SOURCE_BYTES_PER_DIM
    source = per_dim * s.dims if s.keeps_source else 0.0
    copies = 2 if s.opensearch_major < 3 else 1  # the vector file, and 2.x's doc-values copy
    return copies * raw + quantised + links + source + DOC_OVERHEAD_BYTES


def primary_shards(primary_disk_bytes: float, max_gib: float = SHARD_MAX_GIB) -> int:
    """Fewest primaries that keep each under ``max_gib`` (one below ``SHARD_MIN_GIB`` in all)."""
    return max(1, math.ceil(primary_disk_bytes / (max_gib * GIB)))


class MeasuredBand(BaseModel):
    """Recall and latency of the closest configuration that ``benchmarks/knn_scale.py`` measured."""

    source: str
    config: str
    docs: int
    dims: int
    rows: list[dict[str, Any]]
    knn_files_mb: float | None = None
    note: str


class SizingPlan(BaseModel):
    """The plan ``gemsearch index plan`` prints; every number says whether it is a formula or measured."""

    input: SizingInput
    memory_per_copy_bytes: float
    memory_total_bytes: float
    disk_per_copy_bytes: float
    disk_total_bytes: float
    primary_shards: int
    shard_size_bytes: float
    measured: MeasuredBand | None = None
    notes: list[str] = []


def plan(s: SizingInput, measured: MeasuredBand | None = None) -> SizingPlan:
    """Memory, disk and shards for ``s`` (formulas), with the measured band when one is given."""
    copies = 1 + s.replicas
    memory = hnsw_memory_bytes(s.docs, s.dims, s.m, s.engine, s.encoder, s.bits)
    disk = disk_bytes_per_doc(s) * s.docs
    shards = primary_shards(disk)
    notes = []
    if s.engine == "faiss":
        notes.append("faiss needs the k-NN native libraries (a full OpenSearch distribution)")
    else:
        notes.append("lucene: the graph and vectors are memory-mapped files; keep this much page cache free")
    if s.opensearch_major >= 3:
        notes.append("OpenSearch 3.x: the vector is derived, not kept in _source, and has no doc-values copy")
    elif s.vector_in_source:
        notes.append(
            f"the vector in _source is about {SOURCE_BYTES_PER_DIM * s.dims / 1024:.0f} KiB per document on "
            "disk; a derived source (k-NN 2.19+, where an index asks for it; OpenSearch 3.0+ by default) "
            "leaves it out: plan without the vector in _source there"
        )
    return SizingPlan(
        input=s, memory_per_copy_bytes=memory, memory_total_bytes=memory * copies,
        disk_per_copy_bytes=disk, disk_total_bytes=disk * copies, primary_shards=shards,
        shard_size_bytes=disk / shards, measured=measured, notes=notes,
    )  # fmt: skip


# ----------------------------------------------------------------------------- measurements


def load_measurements(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """The results files of ``benchmarks/knn_scale.py`` among ``paths`` (unreadable ones are errors)."""
    out = []
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read k-NN measurements from {path}: {exc}") from exc
        if data.get("benchmark") != "knn_scale":
            raise ConfigError(f"{path} is not a results file of benchmarks/knn_scale.py")
        data["_path"] = str(path)
        out.append(data)
    return out


def closest_measured(s: SizingInput, results: Sequence[dict[str, Any]]) -> MeasuredBand | None:
    """The measured configuration nearest to ``s``: same engine and encoder, then dims, m, size (the
    smallest run at least as large, else the largest), where the vector is kept."""
    best: tuple[tuple[float, ...], dict[str, Any], dict[str, Any]] | None = None
    for data in results:
        for cfg in data.get("configs", []):
            if "error" in cfg or cfg.get("engine") != s.engine or cfg.get("encoder") != s.encoder:
                continue
            source = float(cfg.get("vector_in_source", True) != s.vector_in_source)
            # the smallest run that holds at least s.docs (recall falls with size), else the largest
            size = (0, data["docs"]) if data["docs"] >= s.docs else (1, -data["docs"])
            key = (abs(math.log(cfg["dims"] / s.dims)), abs(cfg["m"] - s.m), *size, source)
            if best is None or key < best[0]:
                best = (key, data, cfg)
    if best is None:
        return None
    _, data, cfg = best
    exact = cfg["dims"] == s.dims and cfg["m"] == s.m
    node = data.get("opensearch")  # a results file has the node's info, the shipped digest its version
    version = node.get("version") if isinstance(node, dict) else node
    note = f"measured at {data['docs']:,} vectors" + (f" on OpenSearch {version}" if version else "")
    if not exact:
        note += f" ({cfg['dims']} dims, m={cfg['m']})"
    if s.docs > data["docs"]:
        note += f"; recall falls and latency grows with size: the best case for {s.docs:,}"
    return MeasuredBand(
        source=Path(data["_path"]).name, config=cfg["name"], docs=data["docs"], dims=cfg["dims"],
        rows=cfg["queries"], note=note,
        knn_files_mb=cfg.get("search_files_mb", cfg.get("index", {}).get("search_files_mb")),
    )  # fmt: skip


BANDS_FILE = Path(__file__).with_name("knn_measured.json")  # shipped: plans work from a wheel too
BAND_FIELDS = ("name", "engine", "dims", "m", "encoder", "vector_in_source", "queries")


def band_digest(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the planner keeps of ``benchmarks/reference/knn_scale_*.json``: per run its size, node
    and machine, per configuration its recall/latency rows and searched file size."""
    runs = []
    for data in results:
        configs = [
            {**{f: cfg[f] for f in BAND_FIELDS}, "search_files_mb": cfg["index"]["search_files_mb"]}
            for cfg in data["configs"]
            if "error" not in cfg
        ]
        runs.append({
            "benchmark": "knn_scale", "_path": Path(data["_path"]).name, "docs": data["docs"],
            "opensearch": data["opensearch"]["version"], "machine": data["machine"], "configs": configs,
        })  # fmt: skip
    return {"generated_from": "benchmarks/reference/knn_scale_*.json", "runs": runs}


def packaged_measurements() -> list[dict[str, Any]]:
    """The reference measurements shipped with gemsearch (``band_digest`` of the committed runs)."""
    try:
        runs: list[dict[str, Any]] = json.loads(BANDS_FILE.read_text(encoding="utf-8"))["runs"]
    except (OSError, ValueError, KeyError):  # a broken install: plans keep their formulas
        return []
    return runs


def _size(n_bytes: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{n_bytes / 1024:,.1f} KiB"


def describe(p: SizingPlan) -> list[str]:
    """The plan as lines of text, each number labelled formula or measured."""
    s = p.input
    enc = (
        ""
        if s.encoder == "none"
        else f", encoder {s.encoder}" + (f" {s.bits}-bit" if s.encoder == "binary" else "")
    )
    copies = 1 + s.replicas
    lines = [
        f"{s.docs:,} vectors x {s.dims} dims, {s.engine} HNSW m={s.m}{enc}, {s.replicas} replica(s)",
        f"memory (graph + vectors, formula 1.1 x (bytes/vector + 8 x m) x docs): "
        f"{_size(p.memory_per_copy_bytes)} per copy, {_size(p.memory_total_bytes)} for {copies} copies",
        f"disk (formula: full vectors + quantised copy + links + _source + doc): "
        f"{_size(p.disk_per_copy_bytes)} per copy, {_size(p.disk_total_bytes)} in all",
        f"primary shards: {p.primary_shards} (about {_size(p.shard_size_bytes)} each; aim for "
        f"{SHARD_MIN_GIB:.0f}-{SHARD_MAX_GIB:.0f} GiB)",
    ]
    lines += [f"note: {n}" for n in p.notes]
    if p.measured is None:
        lines.append("expected recall/latency: no measurement of this engine and encoder "
                     "(run benchmarks/knn_scale.py; see docs/benchmarks.md)")  # fmt: skip
        return lines
    m = p.measured
    lines.append(f"expected recall and latency, measured ({m.source}, config {m.config}; {m.note}):")
    for r in m.rows:
        lines.append(
            f"  k={r['k']:<3} ef_search={r['ef_search']:<4} recall@{r['k']} {r['recall']:.3f}  "
            f"p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms"
        )
    if m.knn_files_mb is not None:
        lines.append(
            f"  graph + searched vector files measured there: {m.knn_files_mb:,.1f} MB at {m.docs:,} vectors"
        )
    return lines
