"""How many actors each stage gets and what they ask Ray for, from the options and the cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ..stores.factory import LocalStoreSpec, OpenSearchStoreSpec
from .options import RayIngestOptions
from .runtime import cluster_gpus


@dataclass(frozen=True)
class Layout:
    embed_actors: int
    embed_resources: dict[str, float]  # num_cpus / num_gpus / memory of one embedding actor
    embed_threads: int
    writer_actors: int
    task_cpus: float  # of one read or decode task
    local_store: bool  # the writer and the gate must run on the driver's node
    driver_node: str


def plan(ray: Any, opts: RayIngestOptions, spec: LocalStoreSpec | OpenSearchStoreSpec) -> Layout:
    """GPUs in the cluster: ``actors_per_gpu`` actors per GPU, each a share of one GPU and one CPU;
    otherwise CPU actors of ``embed_threads`` threads, one per two such CPU shares so the read and
    decode tasks keep the other half. A LocalStore (one SQLite file, one writer) gets one writer,
    on the driver's node (the folder is there). The actors never take every CPU: a read/decode
    task must always fit, or the pipeline would wait for ever."""
    gpus = cluster_gpus(ray)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    local, node = isinstance(spec, LocalStoreSpec), ray.get_runtime_context().get_node_id()
    memory = float(opts.embed_memory_mb * 2**20)  # also keeps Ray from fusing decoding into the actors
    writers = 1 if local else opts.writer_actors
    if gpus:
        count = opts.embed_actors or gpus * opts.actors_per_gpu
        resources = {"num_gpus": 1.0 / opts.actors_per_gpu, "num_cpus": 1.0, "memory": memory}
    else:
        count = opts.embed_actors or max(1, int(cpus // (2 * opts.embed_threads)))
        resources = {"num_cpus": float(opts.embed_threads), "memory": memory}
    spare = cpus - count * resources["num_cpus"] - writers * opts.writer_cpus
    if spare <= 0:
        raise ConfigError(
            f"{count} embedding actors and {writers} writer actors take all {cpus:g} CPUs of the Ray "
            "cluster, leaving none to read and decode: use fewer actors or threads per actor"
        )
    task_cpus = min(opts.task_cpus, spare)
    return Layout(count, resources, opts.embed_threads, writers, task_cpus, local, node)
