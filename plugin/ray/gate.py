"""The gate every input passes before decoding: the store's existence check and the run's claims.

One actor per run. Read tasks send it the ids of a batch; it answers, per input, ``fresh`` (decode
and embed it), ``present`` (the store holds the id: skipped) or the seq of the earlier input that
holds the id (this one waits for that one's fate). Asking again for the same input gets the same
answer, so a retried read task changes nothing. Only ids travel to the gate, never image bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...manifest import ModelManifest
from ...preprocess import DecodeMode
from ...protocols import VectorStore
from ..stores.factory import LocalStoreSpec, OpenSearchStoreSpec, open_store
from ..stores.opensearch.index_checks import IndexOptions

FRESH = -1
PRESENT = -2


class Gate:
    """Holds the store open for existence checks (a LocalStore read-only: its one writer is the
    writer actor) and, per id, the seq of the input that holds it in this run."""

    def __init__(
        self,
        spec: LocalStoreSpec | OpenSearchStoreSpec,
        index: IndexOptions | None,
        manifest: ModelManifest,
        skip_existing: bool,
        decode: DecodeMode,
    ) -> None:
        self.skip_existing = skip_existing
        self._holders: dict[str, int] = {}
        self._store: VectorStore | None = None
        if skip_existing:
            local = isinstance(spec, LocalStoreSpec)
            self._store = open_store(spec, read_only=local, index=index)
            if not local:
                # finds the model version's index (checked by the driver)
                self._store.ensure_index(manifest, decode=decode)

    def admit(self, ids: Sequence[str], seqs: Sequence[int]) -> list[int]:
        """Per input: FRESH, PRESENT or the seq of the input holding its id."""
        present = self._store.existing_ids(set(ids)) if self._store is not None else set()
        verdicts = []
        for doc_id, seq in zip(ids, seqs, strict=True):
            holder = self._holders.get(doc_id, seq)
            if holder != seq:  # a duplicate in this run, also once the holder's write is stored
                verdicts.append(holder)
            elif doc_id in present:
                verdicts.append(PRESENT)
            else:
                self._holders[doc_id] = seq
                verdicts.append(FRESH)
        return verdicts

    def hand_over(self, doc_id: str, seq: int) -> None:
        """The holder of ``doc_id`` failed or was rejected: ``seq`` (waiting for it) holds it now."""
        self._holders[doc_id] = seq

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
