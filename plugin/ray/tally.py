"""The driver's side of a Ray ingest: one final ledger line per input, whatever Ray re-executed.

Stages may run twice (a retried task, a restarted actor); their finished rows reach the driver
here, and the first row of an input decides its fate: a repeated one is dropped. Inputs that waited
for an earlier input with the same id are settled after each round, as the single-process
pipeline's claims do: a duplicate of an indexed id is skipped, identical bytes that failed to decode
fail the same way, and otherwise (the holder failed or was rejected) the first waiting input is
retried in the next round.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from ..ingest.ledger import Ledger
from ..ingest.report import Fate, IngestReport
from .rows import Row

log = logging.getLogger(__name__)
_EMBEDDED = frozenset({Fate.INDEXED.value, Fate.REJECTED.value, Fate.PENDING.value})


class Tally:
    def __init__(self, ledger: Ledger, report: IngestReport) -> None:
        self.ledger, self.report = ledger, report
        self.pending: list[str] = []  # why documents were not acknowledged
        self._done: set[int] = set()
        self._waiting: defaultdict[str, list[Row]] = defaultdict(list)
        self._waiting_seqs: set[int] = set()
        self._lost: dict[int, tuple[str | None, bool]] = {}  # failed/rejected inputs: reason, doomed bytes

    def add(self, row: Row) -> None:
        seq, fate = row["seq"], row["fate"]
        if seq in self._done:
            return  # an input re-executed by Ray: its first outcome stands
        if seq not in self._waiting_seqs:
            self.report.read += 1
            self.ledger.open(seq, row["source"])
        if fate == "waiting":
            self._waiting[row["doc_id"]].append(row)
            self._waiting_seqs.add(seq)
            return
        self._finish(row)

    def _finish(self, row: Row) -> None:
        seq, fate, reason = row["seq"], row["fate"], row["reason"]
        self._done.add(seq)
        self._waiting_seqs.discard(seq)
        if fate in _EMBEDDED:
            self.report.embedded += 1
            self.ledger.embedded([seq])
        if fate == Fate.PENDING.value:
            self.pending.append(reason or "not acknowledged")
        if fate in (Fate.FAILED.value, Fate.REJECTED.value) and row["doc_id"] is not None:
            doomed = fate == Fate.FAILED.value and bool(row["of_bytes"]) and row["given_id"] is None
            self._lost[seq] = (reason, doomed)
        if row["message"]:
            log.log(logging.INFO if fate == Fate.SKIPPED.value else logging.WARNING, "%s", row["message"])
        self.ledger.record(seq, row["doc_id"], Fate(fate), reason)

    def settle(self) -> list[Row]:
        """After a round: record what the waiting inputs' holders decided; the inputs to retry (each
        now holds its id: tell the gate) — empty when the run is complete."""
        retry: list[Row] = []
        for doc_id, rows in list(self._waiting.items()):
            rows.sort(key=lambda r: r["seq"])
            holder = rows[0]["holder"]
            if holder not in self._done:
                continue  # the holder has no outcome (the run stopped): these stay pending
            lost = self._lost.get(holder)
            if lost is not None and not lost[1]:
                first = rows.pop(0)
                retry.append({**first, "fate": None, "reason": None, "message": None, "holder": None})
                for row in rows:
                    row["holder"] = first["seq"]
                if rows:
                    continue
            else:
                for row in rows:
                    if lost is None:
                        self._finish(
                            {**row, "fate": Fate.SKIPPED.value, "reason": "duplicate", "doc_id": None}
                        )
                    else:
                        self._finish({**row, "fate": Fate.FAILED.value, "reason": lost[0], "message": None})
            del self._waiting[doc_id]
        return retry
