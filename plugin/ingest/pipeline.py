"""Ingest: read, identify, skip what is already stored, decode, embed and write, as one pipeline.

Stages (threads share the work; onnxruntime, PIL decoding and the store's network I/O release the GIL):

1. read + hash (worker pool): the bytes of each file and its document id (sha256 unless given);
   a record's image is already in memory (``ingest_records``) and only hashed;
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

With ``update_metadata``, stage 2 writes the metadata of the inputs already in the store onto their
documents (``skipped`` as ``metadata_updated``) instead of only skipping them: no decoding, no model.

Progress is counted twice: ``progress`` once per input when it is embedded or ends without being
embedded (the model's work), ``written`` per document the store has answered for (the write
backlog is the difference).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...errors import GemsearchError, ImageError, SourceError
from ...image_refs import image_ref_of, printable_path
from ...models_cache import resolve_model
from ...parallel import bounded_map
from ...protocols import FloatRows, Record, VectorStore
from ..embedding.embedder import InputArray, OnnxEmbedder, bulk_parallel_runs
from ..embedding.sessions import default_threads
from ..inputs.images import ImageLoadConfig, read_image_file
from ..inputs.items import SourceItem, document_id
from ..inputs.records import iter_records, record_image
from ..inputs.sources import DEFAULT_IMAGE_EXTENSIONS, Shard, parse_shard, read_sources
from ..stores.factory import LocalStoreSpec, OpenSearchStoreSpec, open_store
from .claims import Claims
from .ledger import Ledger
from .report import Fate, IngestReport
from .writer import StoreWriter

log = logging.getLogger(__name__)

StoreArg: TypeAlias = VectorStore | LocalStoreSpec | OpenSearchStoreSpec | str | os.PathLike[str]
"""A store as the Python API takes it: opened (yours to close), or a spec or LocalStore folder
(opened for the run and closed after)."""


class IngestOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: int = Field(default_factory=default_threads, ge=1, description="read/decode threads")
    # each input read holds its file's bytes until decoded: (2 * window + check_chunk) files at most
    window: int = Field(8, ge=1, description="images read or decoded ahead of the model, per stage")
    check_chunk: int = Field(16, ge=1, description="ids per existence check against the store")
    write_batch: int = Field(256, ge=1, description="documents per store write")
    skip_existing: bool = Field(True, description="skip ids already in the store (resume; re-ingest no-op)")
    image: ImageLoadConfig = ImageLoadConfig()
    ledger_path: Path | None = Field(None, description="JSONL file with each input's fate")
    pause_refresh: bool = Field(
        False,
        description="OpenSearch: refresh_interval -1 during the load, restored after (one writer per index)",
    )
    update_metadata: bool = Field(
        False,
        description="ids already stored: write the input's metadata onto the document (no decode, no model)",
    )

    @model_validator(mode="after")
    def _updates_need_the_existence_check(self) -> IngestOptions:
        if self.update_metadata and not self.skip_existing:
            raise ValueError(
                "update_metadata needs skip_existing (re-embedding overwrites the metadata anyway)"
            )
        return self


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
    data: bytes | Image.Image  # a file's bytes, or a record's image as it was handed over


@dataclass
class _Failed:
    input: _Input
    id: str | None  # set when the input had claimed this id (a decode failure releases it)
    reason: str
    message: str
    skipped: bool = False  # left out by the source's policy, not a failure
    of_the_bytes: bool = False  # the bytes themselves failed to decode: identical bytes fail too


@dataclass
class _Prepared:
    input: _Input
    item: SourceItem
    id: str
    array: InputArray


@dataclass
class _Run:
    """What every stage of one ingest run shares."""

    embedder: OnnxEmbedder
    store: VectorStore
    opts: IngestOptions
    report: IngestReport
    ledger: Ledger
    claims: Claims[_Input]
    writer: StoreWriter


def ingest(
    items: Iterable[SourceItem | SourceError],
    embedder: OnnxEmbedder,
    store: VectorStore,
    options: IngestOptions | None = None,
    *,
    progress: Callable[[int], object] | None = None,
    written: Callable[[int], object] | None = None,
) -> IngestReport:
    """Embed ``items`` with ``embedder`` and write them into ``store`` (created or checked for the
    model first). A ``SourceError`` among the items (a bad manifest row, an unusable folder entry)
    is recorded as failed, or skipped when the source left it out by policy. Every input read gets
    exactly one ledger line, also when the run stops early (``pending`` for what was not written).
    ``progress(n)``: ``n`` more inputs were embedded or ended without embedding (once per input);
    ``written(n)``: the store answered for ``n`` more embedded documents (indexed or rejected).
    Returns the report; raises only for errors that stop the whole run (the store is unreachable,
    the index does not fit the model), after recording what was done."""
    opts = options or IngestOptions()
    report = IngestReport(dead_letter_path=store.dead_letter_path)
    ledger = Ledger(report, opts.ledger_path, on_done=progress, on_written=written)
    with ledger.run():
        store.ensure_index(embedder.manifest, decode=embedder.decode)
        paused = store.bulk_load() if opts.pause_refresh else contextlib.nullcontext()
        with paused:  # the writer finishes (and refreshes) before the settings are restored
            _run_rounds(items, embedder, store, opts, report, ledger)
    return report


def _run_rounds(
    items: Iterable[SourceItem | SourceError],
    embedder: OnnxEmbedder,
    store: VectorStore,
    opts: IngestOptions,
    report: IngestReport,
    ledger: Ledger,
) -> None:
    """Round one takes every input; each later round, the inputs whose id a failure released."""
    claims = Claims[_Input]()
    writer = StoreWriter(store, ledger, opts.write_batch, claims)
    run = _Run(embedder, store, opts, report, ledger, claims, writer)
    inputs: Iterable[_Input] = _counted(items, run)
    try:
        while True:
            _pipeline(inputs, run)
            writer.drain()  # every outcome is known: the claims are final for this round
            retry, duplicates, failed = run.claims.settle()
            for inp, doc_id, reason in failed:
                ledger.record(inp.seq, doc_id, Fate.FAILED, reason)
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
            run.ledger.embedded([seq for _, seq in batch])
            run.writer.put(batch)


def _record(p: _Prepared, vector: FloatRows) -> tuple[Record, int]:
    ref = image_ref_of(p.item.path) if p.item.path is not None else None
    return Record(id=p.id, vector=vector, image_ref=ref, metadata=dict(p.item.metadata)), p.input.seq


def _counted(items: Iterable[SourceItem | SourceError], run: _Run) -> Iterator[_Input]:
    for seq, entry in enumerate(items):
        run.report.read += 1
        run.ledger.open(seq, _source_name(entry))
        yield _Input(seq, entry)


def _source_name(entry: SourceItem | SourceError) -> str:
    if isinstance(entry, SourceError):
        return str(entry.origin or entry)
    return printable_path(entry.path) if entry.path is not None else entry.origin


def _read(cfg: ImageLoadConfig, inp: _Input) -> _Read | _Failed:
    entry = inp.entry
    if isinstance(entry, SourceError):  # a bad manifest row or folder entry, handed over by the source
        return _Failed(inp, None, entry.reason, str(entry), skipped=entry.skipped)
    if entry.path is None:  # a record's image, in memory: only its id to compute
        return _in_memory(cfg, inp, entry)
    roots = [entry.root] if entry.root is not None else None
    try:
        data = read_image_file(entry.path, cfg, roots)
    except ImageError as exc:
        return _Failed(inp, None, exc.reason, str(exc))
    except (OSError, ValueError) as exc:  # whatever the OS says about one file is that file's failure
        return _Failed(inp, None, "unreadable", f"{printable_path(entry.path)}: {exc}")
    return _Read(inp, entry, document_id(entry, data), data)


def _in_memory(cfg: ImageLoadConfig, inp: _Input, item: SourceItem) -> _Read | _Failed:
    data = item.content
    if data is None:
        return _Failed(inp, None, "bad_record", f"{item.origin}: neither a path nor an image")
    if isinstance(data, Image.Image) and data.width * data.height > cfg.max_pixels:
        # refused before hashing: the id of a PIL image hashes its pixels, which would load them all
        pixels = data.width * data.height
        why = f"{data.width}x{data.height} = {pixels} pixels, over the cap of {cfg.max_pixels}"
        return _Failed(inp, None, "too_many_pixels", f"{item.name}: {why}")
    try:
        return _Read(inp, item, document_id(item, data), data)  # a PIL image's pixels are hashed
    except Exception as exc:  # a lazily opened image whose data is damaged: this record's failure
        return _Failed(inp, None, "corrupt", f"{item.name}: unusable image: {type(exc).__name__}: {exc}")


def _fresh(read: Iterable[_Read | _Failed], run: _Run) -> Iterator[_Read]:
    """The inputs that still need embedding; records the failed and the already-present ones and
    holds back later inputs with an id an earlier one has taken (see ``_Claims``)."""
    chunk: list[_Read] = []

    def flush() -> Iterator[_Read]:
        ids = [r.id for r in chunk]
        present = run.store.existing_ids(ids) if run.opts.skip_existing else set()
        updates = (
            [r for r in chunk if r.id in present and r.item.metadata] if run.opts.update_metadata else []
        )
        if updates:
            _update_metadata(updates, run)
        updated = {r.input.seq for r in updates}
        for r in chunk:
            if r.id in present:
                reason = "metadata_updated" if r.input.seq in updated else "present"
                run.ledger.record(r.input.seq, r.id, Fate.SKIPPED, reason)
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


def _update_metadata(updates: list[_Read], run: _Run) -> None:
    """Write the metadata of inputs whose documents are stored; a store error stops the run (their
    ledger lines are then ``pending``)."""
    n = run.store.update_metadata([(r.id, dict(r.item.metadata)) for r in updates], refresh=False)
    run.writer.needs_refresh()
    wanted = len({r.id for r in updates})
    if n < wanted:
        log.warning("%d documents were deleted before their metadata was updated", wanted - n)


def _record_failure(failure: _Failed, run: _Run) -> None:
    fate = Fate.SKIPPED if failure.skipped else Fate.FAILED
    run.ledger.record(failure.input.seq, failure.id, fate, failure.reason)
    if failure.id is not None:
        content_id = isinstance(failure.input.entry, SourceItem) and failure.input.entry.id is None
        doomed = failure.reason if content_id and failure.of_the_bytes else None
        run.claims.release(failure.id, doomed)
    log.log(logging.INFO if failure.skipped else logging.WARNING, "%s", failure.message)


def _decode(embedder: OnnxEmbedder, cfg: ImageLoadConfig, r: _Read) -> _Prepared | _Failed:
    name = r.item.name
    try:
        if isinstance(r.data, Image.Image):
            array = embedder.prepare(record_image(r.data, cfg, name))
        else:
            array = embedder.prepare_bytes(r.data, cfg, name)
        return _Prepared(r.input, r.item, r.id, array)
    except ImageError as exc:
        return _Failed(r.input, r.id, exc.reason, str(exc), of_the_bytes=True)
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


def ingest_collection(
    sources: Sequence[str],
    model: str | os.PathLike[str] | OnnxEmbedder,
    store: StoreArg,
    *,
    shard: str | Shard | None = None,
    extensions: Iterable[str] | None = DEFAULT_IMAGE_EXTENSIONS,
    options: IngestOptions | None = None,
    progress: Callable[[int], object] | None = None,
    written: Callable[[int], object] | None = None,
) -> IngestReport:
    """What ``gemsearch ingest`` does, for pipelines: ``sources`` are folders, JSONL/CSV manifests or
    path lists; ``model`` an ONNX file or an embedder; ``store`` a VectorStore or a LocalStore folder
    (opened, and closed afterwards) or a ``StoreSpec``; ``shard`` e.g. ``"2/8"``; ``progress`` and
    ``written`` as for ``ingest``."""
    part = parse_shard(shard) if isinstance(shard, str) else shard
    items = read_sources(sources, part, extensions)
    return _ingest_into(items, model, store, options, progress, written)


def ingest_records(
    records: Iterable[Mapping[str, Any]],
    model: str | os.PathLike[str] | OnnxEmbedder,
    store: StoreArg,
    *,
    options: IngestOptions | None = None,
    progress: Callable[[int], object] | None = None,
    written: Callable[[int], object] | None = None,
) -> IngestReport:
    """``ingest_collection`` for images a pipeline holds in memory: ``records`` is any iterable
    (read lazily, never kept) of dicts ``{"id": str, "image": bytes | path | PIL.Image.Image,
    "metadata": {...}}``, ``id`` and ``metadata`` optional (without an id, the sha256 of the bytes
    as for files). A bad record is one failed input (``bad_record``) and the run goes on; ids the
    store holds are skipped before decoding. See ``gemsearch.plugin.inputs.records``."""
    return _ingest_into(iter_records(records), model, store, options, progress, written)


def _ingest_into(
    items: Iterable[SourceItem | SourceError],
    model: str | os.PathLike[str] | OnnxEmbedder,
    store: StoreArg,
    options: IngestOptions | None,
    progress: Callable[[int], object] | None,
    written: Callable[[int], object] | None,
) -> IngestReport:
    """``ingest`` with the model and the store given as the Python API takes them."""
    embedder = (
        model
        if isinstance(model, OnnxEmbedder)
        else OnnxEmbedder(resolve_model(model), parallel_runs=bulk_parallel_runs())
    )
    if isinstance(store, (str, os.PathLike)):
        store = LocalStoreSpec(path=Path(store))
    if isinstance(store, (LocalStoreSpec, OpenSearchStoreSpec)):
        with open_store(store) as opened:
            return ingest(items, embedder, opened, options, progress=progress, written=written)
    return ingest(items, embedder, store, options, progress=progress, written=written)
