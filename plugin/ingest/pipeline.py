"""Ingest: read, identify, skip what is already stored, decode, embed and write, as one pipeline.

Stages (threads share the work; onnxruntime, PIL decoding and the store's network I/O release the GIL):

1. read + hash (worker pool): the bytes of each file and its document id (sha256 unless given);
2. existence check (main thread, in chunks): ids already in the store are skipped before any
   decoding, so rerunning a killed ingest resumes it cheaply; an id taken by an earlier input of
   this run waits for that input's fate (a failure releases the id to the next one, in a round
   after the first);
3. decode + resize (worker pool, a bounded window ahead of the model, so memory stays flat);
4. embed (main thread): images of identical shape run as one batch;
5. write (a writer thread, so the store's latency overlaps embedding).

Every input read ends with exactly one ledger line: indexed, skipped (with a reason), failed (with a
reason code), rejected by the store (dead-letter file) or pending (not acknowledged when the run
stopped; a rerun retries it).
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
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field

from ...errors import GemsearchError, ImageError, SourceError, StoreError
from ...image_refs import image_ref_of, printable_path
from ...parallel import bounded_map
from ...protocols import FloatRows, Outcome, Record, VectorStore
from ..embedding.embedder import InputArray, OnnxEmbedder, bulk_parallel_runs
from ..embedding.sessions import default_threads
from ..inputs.images import ImageLoadConfig, load_image_bytes, read_image_file
from ..inputs.items import SourceItem, document_id
from ..inputs.sources import DEFAULT_IMAGE_EXTENSIONS, Shard, iter_sources, parse_shard, shard_of
from ..stores.factory import LocalStoreSpec, OpenSearchStoreSpec, open_store
from .report import Fate, IngestReport, Ledger

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
class _Input:
    """One input of the run: its place in the ledger (``seq``) and what the source gave."""

    seq: int
    entry: SourceItem | SourceError


@dataclass
class _Read:
    input: _Input
    item: SourceItem
    id: str
    data: bytes


@dataclass
class _Failed:
    input: _Input
    id: str | None  # set when the input had claimed this id (a decode failure releases it)
    reason: str
    message: str
    skipped: bool = False  # left out by the source's policy, not a failure


@dataclass
class _Prepared:
    input: _Input
    item: SourceItem
    id: str
    array: InputArray


class _Claims:
    """The ids taken in this run. The first input with an id takes it; a later one with the same id
    waits until the first one's fate is known: if that failed (or the store rejected it) the id is
    released and a waiting input gets its turn in the next round, so a failure never claims an id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken: set[str] = set()
        self._waiting: dict[str, list[_Input]] = {}

    def take(self, doc_id: str, inp: _Input) -> bool:
        with self._lock:
            if doc_id in self._taken:
                self._waiting.setdefault(doc_id, []).append(inp)
                return False
            self._taken.add(doc_id)
            return True

    def release(self, doc_id: str) -> None:
        with self._lock:
            self._taken.discard(doc_id)

    def settle(self) -> tuple[list[_Input], list[_Input]]:
        """After a round: (inputs to retry, as their id was released; duplicates of a stored id)."""
        with self._lock:
            retry: list[_Input] = []
            duplicates: list[_Input] = []
            for doc_id, waiting in self._waiting.items():
                (duplicates if doc_id in self._taken else retry).extend(waiting)
            self._waiting.clear()
            return sorted(retry, key=lambda i: i.seq), duplicates


@dataclass
class _Run:
    """What every stage of one ingest run shares."""

    embedder: OnnxEmbedder
    store: VectorStore
    opts: IngestOptions
    report: IngestReport
    ledger: Ledger
    claims: _Claims
    writer: _StoreWriter


def ingest(
    items: Iterable[SourceItem | SourceError],
    embedder: OnnxEmbedder,
    store: VectorStore,
    options: IngestOptions | None = None,
    *,
    progress: Callable[[int], object] | None = None,
) -> IngestReport:
    """Embed ``items`` with ``embedder`` and write them into ``store`` (created or checked for the
    model first). A ``SourceError`` among the items (a bad manifest row, an unusable folder entry)
    is recorded as failed, or skipped when the source left it out by policy. Every input read gets
    exactly one ledger line, also when the run stops early (``pending`` for what was not written).
    Returns the report; raises only for errors that stop the whole run (the store is unreachable,
    the index does not fit the model), after recording what was done."""
    opts = options or IngestOptions()
    report = IngestReport(dead_letter_path=store.dead_letter_path)
    ledger = Ledger(report, opts.ledger_path, on_record=progress)
    start = time.perf_counter()
    try:
        store.ensure_index(embedder.manifest)
        paused = store.bulk_load() if opts.pause_refresh else contextlib.nullcontext()
        with paused:  # the writer finishes (and refreshes) before the settings are restored
            _run_rounds(items, embedder, store, opts, report, ledger)
    except BaseException as exc:
        report.stopped_by = report.stopped_by or _stop_reason(exc)
        raise
    finally:
        ledger.close_open(Fate.PENDING, "not written: the run stopped")
        report.wall_s = time.perf_counter() - start
        ledger.close()
    return report


def _stop_reason(exc: BaseException) -> str:
    if isinstance(exc, GemsearchError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


def _run_rounds(
    items: Iterable[SourceItem | SourceError],
    embedder: OnnxEmbedder,
    store: VectorStore,
    opts: IngestOptions,
    report: IngestReport,
    ledger: Ledger,
) -> None:
    """Round one takes every input; each later round, the inputs whose id a failure released."""
    claims = _Claims()
    writer = _StoreWriter(store, ledger, opts.write_batch, claims)
    run = _Run(embedder, store, opts, report, ledger, claims, writer)
    inputs: Iterable[_Input] = _counted(items, run)
    try:
        while True:
            _pipeline(inputs, run)
            writer.drain()  # every outcome is known: the claims are final for this round
            retry, duplicates = run.claims.settle()
            for inp in duplicates:
                ledger.record(inp.seq, None, Fate.SKIPPED, "duplicate")
            if not retry:
                break
            inputs = retry
    except BaseException:
        writer.abort()
        raise
    finally:
        writer.close()
        if writer.error is not None and report.stopped_by is None:
            report.stopped_by = str(writer.error)
    if writer.error is not None:
        raise writer.error


def _pipeline(inputs: Iterable[_Input], run: _Run) -> None:
    opts, embedder = run.opts, run.embedder
    with ThreadPoolExecutor(opts.workers, thread_name_prefix="gemsearch-ingest") as pool:
        read = bounded_map(pool, partial(_read, opts.image), inputs, opts.window)
        fresh = _fresh(read, run)
        prepared = bounded_map(pool, partial(_decode, embedder, opts.image), fresh, opts.window)
        waiting: dict[int, _Prepared] = {}
        for keys, vectors in embedder.run_grouped(_arrays(prepared, waiting, run)):
            batch = [_record(waiting.pop(key), vector) for key, vector in zip(keys, vectors, strict=True)]
            run.report.embedded += len(batch)
            run.writer.put(batch)


def _record(p: _Prepared, vector: FloatRows) -> tuple[Record, int]:
    ref = image_ref_of(p.item.path)
    return Record(id=p.id, vector=vector, image_ref=ref, metadata=dict(p.item.metadata)), p.input.seq


def _counted(items: Iterable[SourceItem | SourceError], run: _Run) -> Iterator[_Input]:
    for seq, entry in enumerate(items):
        run.report.read += 1
        run.ledger.open(seq, _source_name(entry))
        yield _Input(seq, entry)


def _source_name(entry: SourceItem | SourceError) -> str:
    if isinstance(entry, SourceError):
        return str(entry.origin or entry)
    return printable_path(entry.path)


def _read(cfg: ImageLoadConfig, inp: _Input) -> _Read | _Failed:
    entry = inp.entry
    if isinstance(entry, SourceError):  # a bad manifest row or folder entry, handed over by the source
        return _Failed(inp, None, entry.reason, str(entry), skipped=entry.skipped)
    roots = [entry.root] if entry.root is not None else None
    try:
        data = read_image_file(entry.path, cfg, roots)
    except ImageError as exc:
        return _Failed(inp, None, exc.reason, str(exc))
    except OSError as exc:  # whatever the OS says about one file is that file's failure
        return _Failed(inp, None, "unreadable", f"{printable_path(entry.path)}: {exc.strerror or exc}")
    return _Read(inp, entry, document_id(entry, data), data)


def _fresh(read: Iterable[_Read | _Failed], run: _Run) -> Iterator[_Read]:
    """The inputs that still need embedding; records the failed and the already-present ones and
    holds back later inputs with an id an earlier one has taken (see ``_Claims``)."""
    chunk: list[_Read] = []

    def flush() -> Iterator[_Read]:
        ids = [r.id for r in chunk]
        present = run.store.existing_ids(ids) if run.opts.skip_existing else set()
        for r in chunk:
            if r.id in present:
                run.ledger.record(r.input.seq, r.id, Fate.SKIPPED, "present")
            elif run.claims.take(r.id, r.input):
                yield r
        chunk.clear()

    for entry in read:
        if isinstance(entry, _Failed):
            _record_failure(entry, run)
            continue
        chunk.append(entry)
        if len(chunk) >= run.opts.check_chunk:
            yield from flush()
    if chunk:
        yield from flush()


def _record_failure(failure: _Failed, run: _Run) -> None:
    fate = Fate.SKIPPED if failure.skipped else Fate.FAILED
    run.ledger.record(failure.input.seq, failure.id, fate, failure.reason)
    if failure.id is not None:
        run.claims.release(failure.id)
    log.log(logging.INFO if failure.skipped else logging.WARNING, "%s", failure.message)


def _decode(embedder: OnnxEmbedder, cfg: ImageLoadConfig, r: _Read) -> _Prepared | _Failed:
    name = printable_path(r.item.path)
    try:
        image = load_image_bytes(r.data, cfg, name=name)
        return _Prepared(r.input, r.item, r.id, embedder.prepare(image))
    except ImageError as exc:
        return _Failed(r.input, r.id, exc.reason, str(exc))
    except GemsearchError as exc:  # e.g. an image too small to shrink: a per-image failure
        return _Failed(r.input, r.id, "bad_image", f"{name}: {exc}")
    except (MemoryError, ValueError, OSError) as exc:  # one image's trouble is never the run's
        return _Failed(r.input, r.id, "bad_image", f"{name}: {type(exc).__name__}: {exc}")


def _arrays(
    prepared: Iterable[_Prepared | _Failed], waiting: dict[int, _Prepared], run: _Run
) -> Iterator[tuple[int, InputArray]]:
    for key, entry in enumerate(prepared):
        if isinstance(entry, _Failed):
            _record_failure(entry, run)
            continue
        waiting[key] = entry
        yield key, entry.array


_Batch = list[tuple[Record, int]]  # records with the ledger seq of their input


class _StoreWriter:
    """Writes record batches on its own thread; the bounded queue makes embedding wait for a slow
    store instead of piling up vectors. The first store error stops the run. Ids the store rejects
    are released (another input with that id may still be good)."""

    def __init__(self, store: VectorStore, ledger: Ledger, batch: int, claims: _Claims | None = None) -> None:
        self.store, self.ledger, self.batch = store, ledger, batch
        self.claims = claims
        self.error: GemsearchError | None = None
        self._aborted = False
        self._buffer: _Batch = []
        self._queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=2)
        self._wrote = False
        self._thread = threading.Thread(target=self._loop, name="gemsearch-writer", daemon=True)
        self._thread.start()

    def put(self, records: _Batch) -> None:
        if self.error is not None:
            raise self.error
        self._buffer.extend(records)
        if len(self._buffer) >= self.batch:
            self._queue.put(self._buffer)
            self._buffer = []

    def drain(self) -> None:
        """Write what is buffered and wait until every queued batch has its outcome."""
        if self._buffer:
            self._queue.put(self._buffer)
            self._buffer = []
        self._queue.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """The run is stopping: batches not yet written are left pending, not written."""
        self._aborted = True
        self._buffer = []

    def close(self) -> None:
        if self._buffer:
            self._queue.put(self._buffer)
            self._buffer = []
        self._queue.put(None)
        self._thread.join()
        if self._wrote and self.error is None and not self._aborted:
            try:
                self.store.refresh()
            except StoreError as exc:  # durable already; only visibility waits for the next refresh
                log.warning("final refresh failed: %s", exc)

    def _loop(self) -> None:
        while (batch := self._queue.get()) is not None:
            try:
                if self.error is None and not self._aborted:
                    self._write_batch(batch)
            finally:
                self._queue.task_done()  # left-over inputs get their pending line from the ledger
        self._queue.task_done()

    def _write_batch(self, batch: _Batch) -> None:
        try:
            self._write(batch)
        except GemsearchError as exc:
            self.error = exc
        except BaseException as exc:  # a store bug must not hang the pipeline: stop it with the cause
            self.error = StoreError(f"writing to the store failed: {exc!r}")

    def _write(self, batch: _Batch) -> None:
        self._wrote = True
        outcome = self.store.write([r for r, _ in batch], refresh=False)
        seq_of = {r.id: seq for r, seq in batch}
        for item in outcome.items:
            fate = _FATES[item.outcome]
            if item.id in seq_of:
                self.ledger.record(seq_of.pop(item.id), item.id, fate, item.reason)
            if fate is Fate.REJECTED and self.claims is not None:
                self.claims.release(item.id)
        if not outcome.complete or seq_of:
            raise StoreError(
                f"the cluster did not acknowledge {outcome.counts()['pending'] + len(seq_of)} documents "
                "after retrying; stopping (rerun the same command to resume)"
            )


_FATES = {Outcome.INDEXED: Fate.INDEXED, Outcome.REJECTED: Fate.REJECTED, Outcome.PENDING: Fate.PENDING}


def read_sources(
    specs: Sequence[str],
    shard: Shard | None = None,
    extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS,
    stdin: TextIO | None = None,
) -> Iterator[SourceItem | SourceError]:
    """The items of ``specs`` (see ``iter_sources``) with the entries a source cannot hand over (bad
    manifest rows, unusable folder entries) passed along as ``SourceError`` so the ingest records
    them instead of stopping. A folder entry belongs to the shard of its path; a bad row has no
    shard key, so only shard 0 (or an unsharded run) reports it and N workers count each once."""
    problems: list[SourceError] = []

    def keep(problem: SourceError) -> None:
        if _in_shard(problem, shard):
            problems.append(problem)

    for item in iter_sources(specs, shard, extensions, on_bad_row=keep, stdin=stdin):
        yield from problems
        problems.clear()
        yield item
    yield from problems


def _in_shard(problem: SourceError, shard: Shard | None) -> bool:
    if shard is None or shard.count == 1:
        return True
    if problem.key is None:
        return shard.index == 0
    return shard_of(problem.key, shard.count) == shard.index


def ingest_collection(
    sources: Sequence[str],
    model: str | os.PathLike[str] | OnnxEmbedder,
    store: VectorStore | LocalStoreSpec | OpenSearchStoreSpec | str | os.PathLike[str],
    *,
    shard: str | Shard | None = None,
    extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS,
    options: IngestOptions | None = None,
    progress: Callable[[int], object] | None = None,
) -> IngestReport:
    """What ``gemsearch ingest`` does, for pipelines: ``sources`` are folders, JSONL/CSV manifests or
    path lists; ``model`` an ONNX file or an embedder; ``store`` a VectorStore or a LocalStore folder
    (opened, and closed afterwards) or a ``StoreSpec``; ``shard`` e.g. ``"2/8"``."""
    embedder = (
        model if isinstance(model, OnnxEmbedder) else OnnxEmbedder(model, parallel_runs=bulk_parallel_runs())
    )
    part = parse_shard(shard) if isinstance(shard, str) else shard
    items = read_sources(sources, part, extensions)
    if isinstance(store, (str, os.PathLike)):
        store = LocalStoreSpec(path=Path(store))
    if isinstance(store, (LocalStoreSpec, OpenSearchStoreSpec)):
        with open_store(store) as opened:
            return ingest(items, embedder, opened, options, progress=progress)
    return ingest(items, embedder, store, options, progress=progress)
