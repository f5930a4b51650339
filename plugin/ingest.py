"""Ingest: read, identify, skip what is already stored, decode, embed and write, as one pipeline.

Stages (threads share the work; onnxruntime, PIL decoding and the store's network I/O release the GIL):

1. read + hash (worker pool): the bytes of each file and its document id (sha256 unless given);
2. existence check (main thread, in chunks): ids already in the store, or seen earlier in this
   run, are skipped before any decoding, so rerunning a killed ingest resumes it cheaply;
3. decode + resize (worker pool, a bounded window ahead of the model, so memory stays flat);
4. embed (main thread): images of identical shape run as one batch;
5. write (a writer thread, so the store's latency overlaps embedding).

Every input ends in the ledger as indexed, skipped, failed (with a reason code), rejected by the
store (dead-letter file) or pending (not acknowledged when the run stopped; a rerun retries it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field

from ..errors import GemsearchError, ImageError, SourceError, StoreError
from ..protocols import Record, VectorStore
from ._bulk_models import Outcome
from ._parallel import bounded_map
from ._source_item import SourceItem, document_id
from .images import ImageLoadConfig, load_image_bytes, read_image_file
from .index_admin import bulk_load_settings
from .ingest_report import Fate, IngestReport, Ledger
from .onnx_embedder import InputArray, OnnxEmbedder, bulk_parallel_runs
from .onnx_model import default_threads
from .sources import DEFAULT_IMAGE_EXTENSIONS, Shard, iter_sources, parse_shard

log = logging.getLogger(__name__)


class IngestOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(default_factory=default_threads, ge=1, description="read/decode threads")
    window: int = Field(32, ge=1, description="images read or decoded ahead of the model, per stage")
    check_chunk: int = Field(64, ge=1, description="ids per existence check against the store")
    write_batch: int = Field(256, ge=1, description="documents per store write")
    skip_existing: bool = Field(True, description="skip ids already in the store (resume; re-ingest no-op)")
    image: ImageLoadConfig = ImageLoadConfig()
    ledger_path: Path | None = Field(None, description="JSONL file with each input's fate")
    pause_refresh: bool = Field(
        False,
        description="OpenSearch: refresh_interval -1 during the load, restored after (one writer per index)",
    )


@dataclass
class _Read:
    item: SourceItem
    id: str
    data: bytes


@dataclass
class _Failed:
    source: str
    id: str | None
    reason: str
    message: str


@dataclass
class _Prepared:
    item: SourceItem
    id: str
    array: InputArray


def ingest(
    items: Iterable[SourceItem | SourceError],
    embedder: OnnxEmbedder,
    store: VectorStore,
    options: IngestOptions | None = None,
    *,
    progress: Callable[[int], object] | None = None,
) -> IngestReport:
    """Embed ``items`` with ``embedder`` and write them into ``store`` (created or checked for the
    model first). A ``SourceError`` among the items (a bad manifest row) is recorded as failed.
    Returns the report; raises only for errors that stop the whole run (the store is unreachable,
    the index does not fit the model), after recording what was done."""
    opts = options or IngestOptions()
    report = IngestReport(
        dead_letter_path=getattr(getattr(store, "bulk_options", None), "dead_letter_path", None)
    )
    ledger = Ledger(report, opts.ledger_path)
    tick = progress or (lambda n: None)
    start = time.perf_counter()
    store.ensure_index(embedder.manifest)
    paused_refresh = contextlib.ExitStack()
    if opts.pause_refresh and store_supports_bulk(store):
        paused_refresh.enter_context(bulk_load_settings(store.client, store.index))  # type: ignore[attr-defined]
    with paused_refresh:  # the writer finishes (and refreshes) before the setting is restored
        writer = _StoreWriter(store, ledger, opts.write_batch, tick)
        try:
            _pipeline(items, embedder, store, opts, report, ledger, writer, tick)
        except GemsearchError as exc:
            report.stopped_by = str(exc)
            raise
        finally:
            writer.close()
            if writer.error is not None and report.stopped_by is None:
                report.stopped_by = str(writer.error)
            report.wall_s = time.perf_counter() - start
            ledger.close()
    if writer.error is not None:
        raise writer.error
    return report


def _pipeline(
    items: Iterable[SourceItem | SourceError],
    embedder: OnnxEmbedder,
    store: VectorStore,
    opts: IngestOptions,
    report: IngestReport,
    ledger: Ledger,
    writer: _StoreWriter,
    tick: Callable[[int], object],
) -> None:
    with ThreadPoolExecutor(opts.workers, thread_name_prefix="gemsearch-ingest") as pool:
        read = bounded_map(pool, partial(_read, opts.image), _counted(items, report), opts.window)
        fresh = _fresh(read, store, ledger, opts, tick)
        prepared = bounded_map(pool, partial(_decode, embedder, opts.image), fresh, opts.window)
        waiting: dict[int, _Prepared] = {}
        for keys, vectors in embedder.run_grouped(_arrays(prepared, waiting, ledger, tick)):
            records, sources = [], []
            for key, vector in zip(keys, vectors, strict=True):
                p = waiting.pop(key)
                sources.append(_source_name(p.item))
                records.append(
                    Record(
                        id=p.id,
                        vector=vector,
                        image_ref=str(p.item.path.absolute()),
                        metadata=dict(p.item.metadata),
                    )
                )
            report.embedded += len(records)
            writer.put(records, sources)


def store_supports_bulk(store: Any) -> bool:
    """Whether ``store`` reports per-document outcomes (``OpenSearchStore``) or only succeeds/fails."""
    return hasattr(store, "write") and hasattr(store, "refresh")


def _counted(
    items: Iterable[SourceItem | SourceError], report: IngestReport
) -> Iterator[SourceItem | SourceError]:
    for item in items:
        report.read += 1
        yield item


def _source_name(item: SourceItem) -> str:
    return str(item.path)


def _read(cfg: ImageLoadConfig, item: SourceItem | SourceError) -> _Read | _Failed:
    if isinstance(item, SourceError):  # a bad manifest row, handed over by the source
        return _Failed(str(item), None, "bad_row", str(item))
    roots = [item.root] if item.root is not None else None
    try:
        data = read_image_file(item.path, cfg, roots)
    except ImageError as exc:
        return _Failed(_source_name(item), item.id, exc.reason, str(exc))
    return _Read(item, document_id(item, data), data)


def _fresh(
    read: Iterable[_Read | _Failed],
    store: VectorStore,
    ledger: Ledger,
    opts: IngestOptions,
    tick: Callable[[int], object],
) -> Iterator[_Read]:
    """The inputs that still need embedding; records the failed and the already-present ones."""
    seen: set[str] = set()
    chunk: list[_Read] = []

    def flush() -> Iterator[_Read]:
        present = store.existing_ids([r.id for r in chunk]) if opts.skip_existing else set()
        for r in chunk:
            if r.id in present or r.id in seen:
                ledger.record(
                    _source_name(r.item), r.id, Fate.SKIPPED, "present" if r.id in present else "duplicate"
                )
                tick(1)
            else:
                seen.add(r.id)
                yield r
        chunk.clear()

    for entry in read:
        if isinstance(entry, _Failed):
            _record_failure(entry, ledger, tick)
            continue
        chunk.append(entry)
        if len(chunk) >= opts.check_chunk:
            yield from flush()
    if chunk:
        yield from flush()


def _record_failure(failure: _Failed, ledger: Ledger, tick: Callable[[int], object]) -> None:
    ledger.record(failure.source, failure.id, Fate.FAILED, failure.reason)
    log.warning("%s", failure.message)
    tick(1)


def _decode(embedder: OnnxEmbedder, cfg: ImageLoadConfig, r: _Read) -> _Prepared | _Failed:
    try:
        image = load_image_bytes(r.data, cfg, name=str(r.item.path))
        return _Prepared(r.item, r.id, embedder.prepare(image))
    except ImageError as exc:
        return _Failed(_source_name(r.item), r.id, exc.reason, str(exc))
    except GemsearchError as exc:  # e.g. an image too small to shrink: a per-image failure
        return _Failed(_source_name(r.item), r.id, "bad_image", f"{r.item.path}: {exc}")


def _arrays(
    prepared: Iterable[_Prepared | _Failed],
    waiting: dict[int, _Prepared],
    ledger: Ledger,
    tick: Callable[[int], object],
) -> Iterator[tuple[int, InputArray]]:
    for key, entry in enumerate(prepared):
        if isinstance(entry, _Failed):
            _record_failure(entry, ledger, tick)
            continue
        waiting[key] = entry
        yield key, entry.array


class _StoreWriter:
    """Writes record batches on its own thread; the bounded queue makes embedding wait for a slow
    store instead of piling up vectors. The first store error stops the run."""

    def __init__(self, store: VectorStore, ledger: Ledger, batch: int, tick: Callable[[int], object]) -> None:
        self.store, self.ledger, self.batch, self.tick = store, ledger, batch, tick
        self.error: GemsearchError | None = None
        self._buffer: list[tuple[Record, str]] = []
        self._queue: queue.Queue[list[tuple[Record, str]] | None] = queue.Queue(maxsize=2)
        self._bulk = store_supports_bulk(store)
        self._wrote = False
        self._thread = threading.Thread(target=self._loop, name="gemsearch-writer", daemon=True)
        self._thread.start()

    def put(self, records: list[Record], sources: list[str]) -> None:
        if self.error is not None:
            raise self.error
        self._buffer.extend(zip(records, sources, strict=True))
        if len(self._buffer) >= self.batch:
            self._queue.put(self._buffer)
            self._buffer = []

    def close(self) -> None:
        if self._buffer:
            self._queue.put(self._buffer)
            self._buffer = []
        self._queue.put(None)
        self._thread.join()
        if self._bulk and self._wrote and self.error is None:
            try:
                self.store.refresh()  # type: ignore[attr-defined]
            except StoreError as exc:  # durable already; only visibility waits for the next refresh
                log.warning("final refresh failed: %s", exc)

    def _loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self.error is not None:
                self._record_all(batch, Fate.PENDING, "not written: the run stopped")
                continue
            try:
                self._write(batch)
            except GemsearchError as exc:
                self.error = exc
                self._record_all(batch, Fate.PENDING, str(exc))
            except Exception as exc:  # a store bug must not hang the pipeline: stop it with the cause
                self.error = StoreError(f"writing to the store failed: {exc!r}")
                self._record_all(batch, Fate.PENDING, repr(exc))

    def _write(self, batch: list[tuple[Record, str]]) -> None:
        records = [r for r, _ in batch]
        source_of = {r.id: s for r, s in batch}
        self._wrote = True
        if not self._bulk:
            self.store.upsert(records)
            self._record_all(batch, Fate.INDEXED)
            return
        outcome = self.store.write(records, refresh=False)  # type: ignore[attr-defined]
        fates = {
            Outcome.INDEXED: Fate.INDEXED,
            Outcome.REJECTED: Fate.REJECTED,
            Outcome.PENDING: Fate.PENDING,
        }
        for item in outcome.items:
            self.ledger.record(source_of.get(item.id, item.id), item.id, fates[item.outcome], item.reason)
            self.tick(1)
        reported = {item.id for item in outcome.items}
        unreported = [(r, s) for r, s in batch if r.id not in reported]
        self._record_all(unreported, Fate.PENDING, "not acknowledged by the cluster")
        if not outcome.complete or unreported:
            raise StoreError(
                f"the cluster did not acknowledge {outcome.counts()['pending'] + len(unreported)} documents "
                "after retrying; stopping (rerun the same command to resume)"
            )

    def _record_all(self, batch: list[tuple[Record, str]], fate: Fate, reason: str | None = None) -> None:
        for record, source in batch:
            self.ledger.record(source, record.id, fate, reason)
            self.tick(1)


def read_sources(
    specs: Sequence[str],
    shard: Shard | None = None,
    extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS,
    stdin: TextIO | None = None,
) -> Iterator[SourceItem | SourceError]:
    """The items of ``specs`` (see ``iter_sources``) with bad manifest rows passed along as
    ``SourceError`` so the ingest records them instead of stopping. Bad rows have no shard key:
    only shard 0 (or an unsharded run) reports them, so N workers count each once."""
    bad: list[SourceError] = []
    report_bad = shard is None or shard.index == 0
    for item in iter_sources(specs, shard, extensions, on_bad_row=bad.append, stdin=stdin):
        if report_bad:
            yield from bad
        bad.clear()
        yield item
    if report_bad:
        yield from bad


def ingest_collection(
    sources: Sequence[str],
    model: str | os.PathLike[str] | OnnxEmbedder,
    store: VectorStore | str | os.PathLike[str],
    *,
    shard: str | Shard | None = None,
    extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS,
    options: IngestOptions | None = None,
    progress: Callable[[int], object] | None = None,
) -> IngestReport:
    """What ``gemsearch ingest`` does, for pipelines: ``sources`` are folders, JSONL/CSV manifests or
    path lists; ``model`` an ONNX file or an embedder; ``store`` a VectorStore or a LocalStore folder
    (opened, and closed afterwards); ``shard`` e.g. ``"2/8"``."""
    from .local_store import LocalStore

    embedder = (
        model if isinstance(model, OnnxEmbedder) else OnnxEmbedder(model, parallel_runs=bulk_parallel_runs())
    )
    part = parse_shard(shard) if isinstance(shard, str) else shard
    items = read_sources(sources, part, extensions)
    if isinstance(store, (str, os.PathLike)):
        with LocalStore(store) as local:
            return ingest(items, embedder, local, options, progress=progress)
    return ingest(items, embedder, store, options, progress=progress)
