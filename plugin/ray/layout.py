"""How many actors each stage gets and what they ask Ray for, from the options and the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..stores.factory import LocalStoreSpec, OpenSearchStoreSpec
from .options import RayIngestOptions
from .runtime import cluster_gpus


@dataclass(frozen=True)
class Layout:
    embed_actors: int
    embed_resources: dict[str, float]  # num_cpus / num_gpus / memory of one embedding actor
    embed_threads: int
    writer_actors: int


def plan(ray: Any, opts: RayIngestOptions, spec: LocalStoreSpec | OpenSearchStoreSpec) -> Layout:
    """GPUs in the cluster: ``actors_per_gpu`` actors per GPU, each a share of one GPU and one CPU;
    otherwise CPU actors of ``embed_threads`` threads, one per two such CPU shares so the read and
    decode tasks keep the other half. A LocalStore (one SQLite file, one writer) gets one writer."""
    gpus = cluster_gpus(ray)
    memory = float(opts.embed_memory_mb * 2**20)  # also keeps Ray from fusing decoding into the actors
    writers = 1 if isinstance(spec, LocalStoreSpec) else opts.writer_actors
    if gpus:
        count = opts.embed_actors or gpus * opts.actors_per_gpu
        share = 1.0 / opts.actors_per_gpu
        return Layout(
            count, {"num_gpus": share, "num_cpus": 1.0, "memory": memory}, opts.embed_threads, writers
        )
    cpus = int(ray.cluster_resources().get("CPU", 1))
    count = opts.embed_actors or max(1, cpus // (2 * opts.embed_threads))
    return Layout(
        count, {"num_cpus": float(opts.embed_threads), "memory": memory}, opts.embed_threads, writers
    )
