"""``ingest_dataset``: the ingest on Ray Data — read and decode in tasks, embed in an actor pool,
write with a few writer actors, and keep the ledger on the driver.

Ray executes at least once (a task is retried, a dead actor restarted and its batch sent again);
the results are exactly once because ids are content hashes or manifest ids, writes overwrite by
id, the gate skips what the store holds before decoding, and the driver records the first outcome
of each input. A killed driver leaves the store with whole batches only: rerunning resumes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ...errors import ConfigError, StoreError
from ...manifest import ModelManifest
from ...models_cache import resolve_model
from ..embedding.sessions import read_manifest
from ..ingest.ledger import Ledger
from ..ingest.report import IngestReport
from ..inputs.sources import DEFAULT_IMAGE_EXTENSIONS, Shard, parse_shard
from ..stores.factory import LocalStoreSpec, OpenSearchStoreSpec, open_store
from .gate import Gate
from .layout import Layout, plan
from .listing import dataset_of_rows, listed_rows, normalised
from .options import RayIngestOptions
from .runtime import RayRunError, connect
from .stages import staged
from .tally import Tally

StoreArg = LocalStoreSpec | OpenSearchStoreSpec | str | os.PathLike[str]


def ingest_dataset(
    data: Any,
    model: str | os.PathLike[str],
    store: StoreArg,
    *,
    options: RayIngestOptions | None = None,
    shard: str | Shard | None = None,
    extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS,
    progress: Callable[[int], object] | None = None,
    written: Callable[[int], object] | None = None,
) -> IngestReport:
    """Ingest ``data`` on Ray: a ``ray.data.Dataset`` (``path`` or ``bytes`` column, optional ``id``,
    other columns metadata) or our sources (folders, manifests, path lists; ``shard`` as "I/N").
    ``model``: an ONNX file or a cached model name; ``store``: a LocalStore folder or a store spec.
    Returns the same report as ``ingest_collection``; raises after recording what was done when the
    store stops acknowledging."""
    opts = options or RayIngestOptions()
    spec = LocalStoreSpec(path=Path(store)) if isinstance(store, (str, os.PathLike)) else store
    path = resolve_model(model)
    manifest = read_manifest(path)
    ray = connect(opts.address)
    layout = plan(ray, opts, spec)
    report = IngestReport()
    ledger = Ledger(report, opts.ledger_path, on_done=progress, on_written=written)
    with ledger.run():
        first = _first_round(ray, data, shard, extensions, opts)
        with _target(spec, opts, manifest, report):
            _rounds(ray, first, spec, manifest, Path(path).read_bytes(), opts, layout, Tally(ledger, report))
    return report


def _first_round(
    ray: Any, data: Any, shard: str | Shard | None, extensions: Iterable[str] | None, opts: RayIngestOptions
) -> Any:
    if isinstance(data, ray.data.Dataset):
        if shard is not None:
            raise ConfigError("a shard selects from our sources; split a Ray Dataset with Ray instead")
        return normalised(ray, data)
    if isinstance(data, (str, os.PathLike)):
        data = [data]
    part = parse_shard(shard) if isinstance(shard, str) else shard
    rows = listed_rows([os.fspath(s) for s in data], part, extensions)
    return dataset_of_rows(ray, rows, opts.read_rows)


@contextlib.contextmanager
def _target(
    spec: LocalStoreSpec | OpenSearchStoreSpec,
    opts: RayIngestOptions,
    manifest: ModelManifest,
    report: IngestReport,
) -> Iterator[None]:
    """The store, created or checked for the model on the driver; a LocalStore is closed again
    before the run (its one writer is the writer actor); OpenSearch is refreshed once at the end."""
    with open_store(spec, index=opts.index, bulk=opts.bulk) as store:
        store.ensure_index(manifest, decode=opts.decode)
        report.dead_letter_path = store.dead_letter_path
        if isinstance(spec, LocalStoreSpec):
            store.close()
            yield
            return
        paused = store.bulk_load() if opts.pause_refresh else contextlib.nullcontext()
        with paused:
            yield
        store.refresh()


def _rounds(
    ray: Any,
    first: Any,
    spec: LocalStoreSpec | OpenSearchStoreSpec,
    manifest: ModelManifest,
    model: bytes,
    opts: RayIngestOptions,
    layout: Layout,
    tally: Tally,
) -> None:
    """Round one runs every input; a later round, the inputs whose id a failure handed on."""
    where = {"label_selector": {"ray.io/node-id": layout.driver_node}} if layout.local_store else {}
    gate = (
        ray.remote(Gate)
        .options(num_cpus=0, max_restarts=-1, max_task_retries=-1, **where)
        .remote(spec, opts.index, manifest, opts.skip_existing, opts.decode)
    )
    try:
        ds = first
        while True:
            pipeline = staged(
                ds, gate=gate, spec=spec, manifest=manifest, model=model, opts=opts, layout=layout
            )
            _collect(ray, pipeline, tally)
            _stop_if_unacknowledged(tally)
            retry = tally.settle()
            if not retry:
                return
            ray.get([gate.hand_over.remote(r["doc_id"], r["seq"]) for r in retry])
            ds = dataset_of_rows(ray, retry, opts.read_rows)
    finally:
        with contextlib.suppress(Exception):
            ray.get(gate.close.remote())
        ray.kill(gate)


def _collect(ray: Any, pipeline: Any, tally: Tally) -> None:
    """Run the round, recording each finished row; a failure Ray could not retry away (an error in
    a stage, a lost node with nothing to restart on) ends the run with its first line."""
    try:
        for batch in pipeline.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                tally.add(row)
    except ray.exceptions.RayError as exc:
        raise RayRunError(
            f"the Ray run failed: {_root_cause(exc)}; rerun the same command to resume"
        ) from exc


def _root_cause(exc: BaseException) -> str:
    """The first line of the innermost error (Ray wraps a stage's error in two layers)."""
    inner: BaseException = exc
    while True:
        nxt = getattr(inner, "cause", None)
        nxt = nxt if isinstance(nxt, BaseException) and nxt is not inner else inner.__cause__
        if nxt is None:
            break
        inner = nxt
    text = next((line for line in str(inner).splitlines() if line.strip()), "")
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def _stop_if_unacknowledged(tally: Tally) -> None:
    if tally.pending:
        raise StoreError(
            f"the store did not acknowledge {len(tally.pending)} documents ({tally.pending[0]}); "
            "stopping (rerun the same command to resume)"
        )
