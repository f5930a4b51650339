"""Stage 4 (a few actors): write embedded documents with the store's own writer (OpenSearch bulk
requests with retries and the dead-letter file; the LocalStore's durable batches), each outcome
into the row. Writing an id again is an overwrite, so a batch retried after a crash is harmless."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from ...errors import GemsearchError
from ...manifest import ModelManifest
from ...preprocess import DecodeMode
from ...protocols import Record
from ..stores.factory import LocalStoreSpec, OpenSearchStoreSpec, open_store
from ..stores.opensearch.bulk_models import BulkOptions
from ..stores.opensearch.index_checks import IndexOptions
from .faults import CrashPlan
from .rows import Row, finished, metadata_of, rows_of, table_of

log = logging.getLogger(__name__)


class WriterActor:
    """A Ray Data callable class holding one open store (a LocalStore's single writer)."""

    def __init__(
        self,
        spec: LocalStoreSpec | OpenSearchStoreSpec,
        index: IndexOptions | None,
        bulk: BulkOptions | None,
        manifest: ModelManifest,
        decode: DecodeMode,
        crash: CrashPlan | None = None,
    ) -> None:
        self.store = open_store(spec, index=index, bulk=bulk)
        self.store.ensure_index(manifest, decode=decode)
        self.crash = crash or CrashPlan()

    def __call__(self, table: pa.Table) -> pa.Table:
        self.crash.tick()
        rows = rows_of(table)
        todo = [row for row in rows if row["fate"] is None]
        fates = self._write(todo) if todo else {}
        for row in todo:
            fate, reason = fates.get(row["doc_id"], ("pending", "not acknowledged by the store"))
            row.update(finished(row, fate, reason))
        return table_of(rows)

    def _write(self, rows: list[Row]) -> dict[str, tuple[str, str | None]]:
        records = [
            Record(
                id=r["doc_id"],
                vector=np.frombuffer(r["vector"], dtype=np.float32).copy(),
                image_ref=r["image_ref"],
                metadata=metadata_of(r),
            )
            for r in rows
        ]
        try:
            outcome = self.store.write(records, refresh=False)
        except GemsearchError as exc:  # the whole batch is unacknowledged: pending, the run stops
            log.error("writing %d documents failed: %s", len(records), exc)
            return {r.id: ("pending", str(exc)) for r in records}
        return {item.id: (item.outcome.value, item.reason) for item in outcome.items}

    def __del__(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()
