"""The Ray Data pipeline of one round: read (tasks) -> decode (tasks) -> embed (actor pool) -> write
(writer actors). Ray Data restarts a dead actor and sends its batch again (without limit), and
retries a failed task. Ray's streaming executor runs the stages together and bounds the blocks queued
between them, so a slow store makes the embedding wait instead of piling up vectors."""

from __future__ import annotations

from typing import Any

from ...manifest import ModelManifest
from ..stores.factory import LocalStoreSpec, OpenSearchStoreSpec
from .decoding import decode_batch
from .embedding import EmbedActor
from .faults import crash_plan
from .layout import Layout
from .options import RayIngestOptions
from .reading import read_batch
from .writing import WriterActor


def staged(
    ds: Any,
    *,
    gate: Any,
    spec: LocalStoreSpec | OpenSearchStoreSpec,
    manifest: ModelManifest,
    model: bytes,
    opts: RayIngestOptions,
    layout: Layout,
) -> Any:
    import ray

    tasks = {"batch_format": "pyarrow", "batch_size": opts.read_rows, "num_cpus": layout.task_cpus}
    ds = ds.map_batches(read_batch, fn_kwargs={"image": opts.image, "gate": gate}, **tasks)
    decoding = {"image": opts.image, "manifest": manifest, "decode": opts.decode}
    ds = ds.map_batches(decode_batch, fn_kwargs=decoding, **tasks)
    ds = ds.map_batches(
        EmbedActor,
        fn_constructor_kwargs={
            "model": model,
            "providers": opts.providers,
            "threads": layout.embed_threads,
            "batch_size": opts.batch_size,
            "crash": crash_plan("embed"),
        },
        batch_format="pyarrow",
        batch_size=opts.embed_rows,
        compute=ray.data.ActorPoolStrategy(size=layout.embed_actors),
        **layout.embed_resources,
    )
    # a LocalStore is a folder on the driver's machine: its one writer runs there
    pinned = {"label_selector": {"ray.io/node-id": layout.driver_node}} if layout.local_store else {}
    return ds.map_batches(
        WriterActor,
        fn_constructor_kwargs={
            "spec": spec,
            "index": opts.index,
            "bulk": opts.bulk,
            "manifest": manifest,
            "decode": opts.decode,
            "crash": crash_plan("write"),
        },
        batch_format="pyarrow",
        batch_size=opts.write_batch,
        compute=ray.data.ActorPoolStrategy(size=layout.writer_actors),
        num_cpus=opts.writer_cpus,
        **pinned,
    )
