"""Bulk writes into one OpenSearch index with our own per-item retry loop and a dead-letter file.

opensearch-py's ``helpers.bulk`` does not retry per-item 429s with its defaults and
``parallel_bulk`` does not retry at all, so every item is classified here the way Logstash and
Data Prepper do it:

- 2xx: indexed;
- 429, 5xx, connection errors and timeouts: retried with exponential backoff and jitter, within a
  bounded number of attempts and a bounded time; still failing afterwards: pending;
- any other status (400 ``mapper_parsing_exception`` for a wrong dimension, 404, ...): rejected,
  written to the dead-letter JSONL file with its reason;
- 401/403 (the user's role may not write into this index): pending, no dead letter, and a
  ``BulkError`` naming the refused action and the role that grants it;
- a response whose item count or ids differ from the request: a hard failure (``BulkError``).

Indexing is by ``_id`` (op ``index``), so resending a document that did reach the index before a
timeout overwrites it instead of duplicating it. Partial updates (op ``update``, a ``BulkDoc`` with
``op="update"``) go through the same loop: resending one is idempotent too; an update of a document
that is not in the index (404) is reported rejected with the reason ``not found``, without a
dead-letter line. Requests are sized by bytes and by count.

Bodies are written by ``json_body``: a float32 vector (a numpy array in the source) in its shortest
exact form, so the client is not what limits a bulk load.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from opensearchpy.exceptions import AuthenticationException, AuthorizationException, SSLError, TransportError
from opensearchpy.exceptions import ConnectionError as TransportConnectionError

from . import json_body
from .bulk_models import BulkDoc, BulkError, BulkOptions, BulkReport, ItemOutcome, Outcome, RetryPolicy
from .dead_letter import DeadLetterFile
from .errors import store_error

__all__ = [
    "BulkDoc",
    "BulkError",
    "BulkOptions",
    "BulkReport",
    "BulkWriter",
    "ItemOutcome",
    "Outcome",
    "RetryPolicy",
]

log = logging.getLogger(__name__)

RETRYABLE_REQUEST_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass
class _Item:
    doc: BulkDoc
    payload: bytes


class BulkWriter:
    """Writes documents into ``index`` and reports the outcome of each one."""

    def __init__(
        self,
        client: Any,
        index: str,
        options: BulkOptions | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.index = index
        self.options = options or BulkOptions()
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()
        path = self.options.dead_letter_path
        self.dead_letter = DeadLetterFile(path, index, self.options.dead_letter_source) if path else None

    def write(self, docs: Iterable[BulkDoc]) -> BulkReport:
        """Index ``docs``; stops reading them once a request stays failing past the retry policy."""
        report = BulkReport()
        self._write_all(docs, report)
        if self.options.refresh and report.requests:
            self._refresh()
        counts = report.counts()
        log.info("bulk into %s: %s in %d requests", self.index, counts, report.requests)
        if counts[Outcome.PENDING.value]:
            log.error("%d documents are still pending after retrying", counts[Outcome.PENDING.value])
        return report

    def _write_all(self, docs: Iterable[BulkDoc], report: BulkReport) -> None:
        for chunk in self._chunks(docs, report):
            if not self._send(chunk, report):
                return

    def _chunks(self, docs: Iterable[BulkDoc], report: BulkReport) -> Iterator[list[_Item]]:
        chunk: list[_Item] = []
        size = 0
        for doc in docs:
            try:
                item = _Item(doc, _encode(doc))
            except (TypeError, ValueError) as exc:  # NaN, inf or a type JSON cannot hold
                self._reject(_Item(doc, b""), 0, None, f"not serialisable as JSON: {exc}", report)
                continue
            if chunk and (
                len(chunk) >= self.options.max_docs or size + len(item.payload) > self.options.max_bytes
            ):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += len(item.payload)
        if chunk:
            yield chunk

    def _send(self, chunk: list[_Item], report: BulkReport) -> bool:
        """Send one request's items until each is indexed or rejected; False if some stay pending."""
        pending, started, attempt = chunk, self._clock(), 0
        last: dict[str, tuple[int | None, str]] = {}
        while pending:
            attempt += 1
            report.requests += 1
            pending = self._attempt(pending, attempt, report, last)
            if not pending:
                return True
            wait = self.options.retry.delay(attempt, self._rng)
            out_of_time = self._clock() + wait - started > self.options.retry.max_total_s
            if attempt >= self.options.retry.max_attempts or out_of_time:
                for item in pending:
                    status, reason = last[item.doc.id]
                    report.items.append(ItemOutcome(item.doc.id, Outcome.PENDING, attempt, status, reason))
                return False
            log.debug(
                "retrying %d of %d documents in %.2fs (try %d)", len(pending), len(chunk), wait, attempt
            )
            self._sleep(wait)
        return True

    def _attempt(
        self, items: list[_Item], attempt: int, report: BulkReport, last: dict[str, tuple[int | None, str]]
    ) -> list[_Item]:
        """One bulk request; returns the items to retry."""
        try:
            response = self._post(items)
        except SSLError as exc:  # a certificate that does not verify will not verify next time either
            self._give_up(items, attempt, report, None, f"TLS error: {exc}")
            raise BulkError(f"TLS handshake with the cluster failed: {exc}", report) from exc
        except TransportConnectionError as exc:  # timeouts included
            reason = f"{type(exc).__name__}: {exc.info if exc.info else exc.error}"
            last.update((i.doc.id, (None, reason)) for i in items)
            log.warning("bulk request failed (%s); will retry", reason)
            return items
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else None
            reason = f"HTTP {exc.status_code}: {exc.error}"
            if status not in RETRYABLE_REQUEST_STATUSES:
                self._give_up(items, attempt, report, status, reason)
                hint = " (lower BulkOptions.max_bytes below http.max_content_length)" if status == 413 else ""
                raise BulkError(f"bulk request into {self.index} refused: {reason}{hint}", report) from exc
            last.update((i.doc.id, (status, reason)) for i in items)
            log.warning("bulk request answered %s; will retry", reason)
            return items
        return self._classify(items, response, attempt, report, last)

    def _post(self, items: list[_Item]) -> dict[str, Any]:
        params: dict[str, Any] = {"filter_path": "errors,items.*._id,items.*.status,items.*.error"}
        if self.options.request_timeout_s is not None:
            params["request_timeout"] = self.options.request_timeout_s
        body = b"".join(i.payload for i in items)
        response: dict[str, Any] = self.client.bulk(body=body, index=self.index, params=params)
        return response

    def _classify(
        self,
        items: list[_Item],
        response: dict[str, Any],
        attempt: int,
        report: BulkReport,
        last: dict[str, tuple[int | None, str]],
    ) -> list[_Item]:
        answers = response.get("items")
        if not isinstance(answers, list) or len(answers) != len(items):
            got = len(answers) if isinstance(answers, list) else "no"
            self._give_up(items, attempt, report, None, "malformed bulk response")
            raise BulkError(f"bulk response has {got} items for {len(items)} sent; not trusting it", report)
        results = [_result(answer) for answer in answers]
        for item, result in zip(items, results, strict=True):
            if result.get("_id") != item.doc.id:
                self._give_up(items, attempt, report, None, "bulk response out of order")
                raise BulkError(f"bulk response answers id {result.get('_id')!r} for {item.doc.id!r}", report)
        if any(int(r.get("status", 0)) in (401, 403) for r in results):
            self._denied(items, results, attempt, report)
        retry: list[_Item] = []
        for item, result in zip(items, results, strict=True):
            status = int(result.get("status", 0))
            if 200 <= status < 300:
                report.items.append(ItemOutcome(item.doc.id, Outcome.INDEXED, attempt, status))
            elif status == 429 or status >= 500:
                last[item.doc.id] = (status, _reason(result))
                retry.append(item)
            elif status == 404 and item.doc.op == "update":  # not in the index: nothing to update
                report.items.append(ItemOutcome(item.doc.id, Outcome.REJECTED, attempt, status, "not found"))
            else:
                self._reject(item, attempt, status, _reason(result), report)
        return retry

    def _denied(
        self, items: list[_Item], results: list[dict[str, Any]], attempt: int, report: BulkReport
    ) -> NoReturn:
        """Items refused for the user's role (the security plugin checks writes per index): the
        documents are fine, so none goes to the dead letters; they stay pending and the run stops."""
        pending = []
        for item, result in zip(items, results, strict=True):
            status = int(result.get("status", 0))
            if 200 <= status < 300:
                report.items.append(ItemOutcome(item.doc.id, Outcome.INDEXED, attempt, status))
            else:
                pending.append(item)
        refused = next(r for r in results if int(r.get("status", 0)) in (401, 403))
        status = int(refused["status"])
        self._give_up(pending, attempt, report, status, _reason(refused))
        kind = AuthenticationException if status == 401 else AuthorizationException
        error = kind(status, "security_exception", {"error": refused.get("error")})
        raise BulkError(str(store_error(error, self.client, index=self.index)), report)

    def _reject(self, item: _Item, attempt: int, status: int | None, reason: str, report: BulkReport) -> None:
        report.items.append(ItemOutcome(item.doc.id, Outcome.REJECTED, attempt, status, reason))
        if self.dead_letter is not None:
            self.dead_letter.write(item.doc.id, status, reason, attempt, item.doc.source)
        log.warning("document %s rejected for %s: HTTP %s %s", item.doc.id, self.index, status, reason)

    def _give_up(
        self, items: list[_Item], attempt: int, report: BulkReport, status: int | None, reason: str
    ) -> None:
        report.items.extend(ItemOutcome(i.doc.id, Outcome.PENDING, attempt, status, reason) for i in items)

    def _refresh(self) -> None:
        try:
            self.client.indices.refresh(index=self.index)
        except TransportError as exc:  # the documents are durable; only their visibility waits
            log.warning(
                "refresh of %s failed (%s); documents become visible at the next refresh", self.index, exc
            )


def _encode(doc: BulkDoc) -> bytes:
    return json_body.dumps({doc.op: {"_id": doc.id}}) + b"\n" + json_body.dumps(doc.source) + b"\n"


def _result(answer: Any) -> dict[str, Any]:
    """The body of one bulk response item, ``{"index": {...}}`` (or ``"update"``) -> ``{...}``."""
    result: Any = next(iter(answer.values()), None) if isinstance(answer, dict) else None
    return result if isinstance(result, dict) else {}


def _reason(result: Mapping[str, Any]) -> str:
    error = result.get("error")
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, dict) and cause.get("reason"):
            text += f" (caused by {cause.get('type', 'error')}: {cause['reason']})"
        return text
    return str(error or f"HTTP {result.get('status')}")
