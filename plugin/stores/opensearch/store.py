"""``OpenSearchStore``: the VectorStore protocol over an OpenSearch k-NN index (opensearch-py).

Writes go into the physical index of one model version, after ``ensure_index`` has created it or
checked (preflight) that it was built for exactly that version; reads go to that index too, or, for
a store opened with ``model=`` only, to the model's alias, which is what queries use.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from opensearchpy.exceptions import AuthorizationException, ConnectionError, NotFoundError, TransportError

from ....errors import StoreError
from ....manifest import ModelManifest
from ....preprocess import DEFAULT_DECODE, DecodeMode
from ....protocols import Filters, FloatRows, Hit, Record
from ...query_checks import parts_by_kind
from . import json_body
from .bulk import BulkDoc, BulkOptions, BulkReport, BulkWriter, Outcome
from .connection import OpenSearchConfig, make_client
from .errors import store_error
from .index_admin import bulk_load_settings, ensure_index
from .index_checks import VECTOR_FIELD, IndexOptions

log = logging.getLogger(__name__)
_TRANSIENT = frozenset({429, 500, 502, 503, 504})

MGET_CHUNK = 1000
SCROLL = "2m"  # how long a scroll of ids_matching waits for its reader between pages
_FIELD_PART = re.compile(r"^[A-Za-z0-9_\-]+$")
MAPPING_TTL_S = 10.0  # how long filters trust the field mappings they read


class OpenSearchStore:
    """Vectors of one model in OpenSearch: one index per model version, an alias per model."""

    def __init__(
        self,
        client: Any = None,
        *,
        model: str | None = None,
        options: IndexOptions | None = None,
        bulk: BulkOptions | None = None,
        config: OpenSearchConfig | None = None,
    ) -> None:
        self.client = client if client is not None else make_client(config)
        self._owns_client = client is None  # a client the caller gave stays the caller's to close
        self.options = options or IndexOptions()
        self.bulk_options = bulk or BulkOptions()
        self.manifest: ModelManifest | None = None
        self.index: str | None = None  # the physical index writes go to, once ensured
        self._model = model
        self._alias = f"{self.options.prefix}-{model}" if model else None
        self._rng = random.Random()
        self._answered = False  # whether the cluster has answered this store (lost, not absent)
        self._mappings: tuple[Any, float] = (None, 0.0)  # (get_mapping answer, when read)

    @property
    def read_target(self) -> str:
        target = self.index or self._alias
        if target is None:
            raise StoreError("OpenSearchStore has no index: call ensure_index(manifest) or pass model=")
        return target

    @property
    def decode(self) -> DecodeMode | None:
        """The decode mode of the index written to (None before ``ensure_index``)."""
        return self.options.decode if self.index is not None and self.manifest is not None else None

    def ensure_index(self, manifest: ModelManifest, *, decode: DecodeMode = DEFAULT_DECODE) -> None:
        """Create the index of this model version and decode mode, or refuse if the existing one does
        not fit them."""
        self.options = self.options.model_copy(update={"decode": decode})
        try:
            self.index = ensure_index(self.client, manifest, self.options)
        except TransportError as exc:
            raise store_error(exc, self.client, index=manifest.index_name(self.options.prefix)) from exc
        self.manifest = manifest
        self._answered = True

    # ------------------------------------------------------------------ writes

    def write(self, records: Iterable[Record], *, refresh: bool | None = None) -> BulkReport:
        """Bulk-index ``records``; the report says what became of each (indexed/rejected/pending).
        ``refresh`` overrides the bulk options' refresh-at-the-end (a long ingest refreshes once)."""
        if self.index is None or self.manifest is None:
            raise StoreError("call ensure_index(manifest) before writing: it checks the index fits the model")
        options = self.bulk_options
        if refresh is not None and refresh != options.refresh:
            options = options.model_copy(update={"refresh": refresh})
        writer = BulkWriter(self.client, self.index, options)
        return writer.write(self._doc(r) for r in records)

    def update_metadata(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], *, refresh: bool | None = None
    ) -> int:
        """Write metadata fields onto stored documents, vectors untouched: bulk ``update`` actions
        with the partial document ``{"metadata": ...}`` (objects merge field by field, other values
        replace the stored ones), through the bulk writer's retries. Ids not in the index are left
        out; returns how many documents were updated. StoreError if the cluster refused an update
        (see the dead-letter file) or did not acknowledge it after retrying."""
        if self.index is None:
            raise StoreError("call ensure_index(manifest) before updating documents")
        options = self.bulk_options
        if refresh is not None and refresh != options.refresh:
            options = options.model_copy(update={"refresh": refresh})
        docs = [BulkDoc(doc_id, {"doc": {"metadata": dict(meta)}}, op="update") for doc_id, meta in items]
        report = BulkWriter(self.client, self.index, options).write(docs)
        refused = [i for i in report.items if i.outcome is Outcome.REJECTED and i.status != 404]
        if not report.complete or refused:
            counts = report.counts()
            example = f", e.g. {refused[0].id}: {refused[0].reason}" if refused else ""
            raise StoreError(
                f"{len(refused)} metadata updates refused{example} and {counts['pending']} still pending "
                f"after retrying, of {len(docs)} sent to {self.index}"
            )
        return len(report.ids(Outcome.INDEXED))

    def refresh(self) -> None:
        """Make everything written so far visible to searches."""
        self._call("indices.refresh", retry=True, index=self.read_target)

    @property
    def dead_letter_path(self) -> Path | None:
        return self.bulk_options.dead_letter_path

    def bulk_load(self) -> contextlib.AbstractContextManager[None]:
        """``refresh_interval`` -1 on the index for a long load, restored after (its one writer)."""
        if self.index is None:
            raise StoreError("call ensure_index(manifest) before a bulk load")
        return bulk_load_settings(self.client, self.index)

    def close(self) -> None:
        """Close the connections of the client this store made (not of one it was given)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> OpenSearchStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def upsert(self, records: Sequence[Record]) -> None:
        """Index ``records``; StoreError if any was rejected or is still pending after retrying."""
        report = self.write(records)
        if not report.complete or report.ids(Outcome.REJECTED):
            counts = report.counts()
            where = self.bulk_options.dead_letter_path or "the log"
            raise StoreError(
                f"{counts['rejected']} documents rejected (see {where}) and {counts['pending']} still "
                f"pending after retrying, of {len(records)} written into {self.index}"
            )

    def _doc(self, record: Record) -> BulkDoc:
        source: dict[str, Any] = {
            # an array, not a list: the bulk writer writes float32 in its shortest exact form
            VECTOR_FIELD: np.ascontiguousarray(record.vector, dtype=np.float32).ravel(),
            "metadata": record.metadata,
        }
        if record.image_ref is not None:
            source["image_ref"] = record.image_ref
        return BulkDoc(record.id, source)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; returns how many existed. (A bulk of deletes: every cluster has it.)"""
        deleted = 0
        for chunk in _chunked(ids, MGET_CHUNK):
            body = "".join(json.dumps({"delete": {"_id": i}}) + "\n" for i in chunk)
            response = self._call("bulk", body=body, index=self.read_target, params={"refresh": "true"})
            results = [next(iter(item.values())) for item in response["items"]]
            failed = [r for r in results if r.get("status") not in (200, 404)]
            if failed:
                raise StoreError(f"{len(failed)} deletes failed, e.g. {failed[0].get('error')}")
            deleted += sum(r.get("status") == 200 for r in results)
        return deleted

    # ------------------------------------------------------------------ reads

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` are in the index (``mget`` without sources, in chunks)."""
        found: set[str] = set()
        for chunk in _chunked(ids, MGET_CHUNK):
            response = self._call(
                "mget", retry=True, index=self.read_target, body={"ids": chunk}, params={"_source": "false"}
            )
            errors = [d["error"] for d in response["docs"] if d.get("error")]
            if errors:  # e.g. a role without read access: every id would look new and be re-embedded
                raise self._error(_doc_error(errors[0]), self.read_target)
            found.update(d["_id"] for d in response["docs"] if d.get("found"))
        return found

    def _call(self, method: str, *, retry: bool = False, **kwargs: Any) -> Any:
        """A client call whose transport errors become StoreErrors that name the index. With
        ``retry`` (idempotent reads), timeouts, lost connections, 429 and 5xx answers are retried
        with the bulk writer's backoff policy, so a cluster that pauses does not end an ingest. A
        cluster that has never answered this store is not waited for: a wrong URL or a cluster
        that is down ends the command at once, in one line, instead of after minutes of retries."""
        policy = self.bulk_options.retry
        started = time.monotonic()
        for attempt in range(1, policy.max_attempts + 1):
            try:
                target = self.client
                for part in method.split("."):
                    target = getattr(target, part)
                answer = target(**kwargs)
                self._answered = True
                return answer
            except TransportError as exc:
                lost = isinstance(exc, ConnectionError) and self._answered
                transient = lost or exc.status_code in _TRANSIENT
                late = time.monotonic() - started > policy.max_total_s
                if (
                    isinstance(exc, NotFoundError)
                    or not (retry and transient)
                    or attempt == policy.max_attempts
                    or late
                ):
                    raise self._error(exc, kwargs.get("index")) from exc
                log.warning(
                    "OpenSearch %s failed (%s); retrying (attempt %d)",
                    method,
                    self._error(exc, None),
                    attempt,
                )
                time.sleep(policy.delay(attempt, self._rng))
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, exc: TransportError, index: str | None) -> StoreError:
        """``exc`` as an actionable StoreError; a missing alias names the model that was never ingested."""
        model = self._model if index is not None and index == self._alias else None
        return store_error(exc, self.client, index=index, prefix=self.options.prefix, model=model)

    def get(self, doc_id: str) -> Record | None:
        response = self._call("mget", retry=True, index=self.read_target, body={"ids": [doc_id]})
        doc = response["docs"][0]
        if doc.get("error"):  # a missing alias answers per document: not "no such document"
            raise self._error(_doc_error(doc["error"]), self.read_target)
        if not doc.get("found"):
            return None
        source = doc.get("_source") or {}
        return Record(
            id=doc["_id"],
            vector=np.asarray(source.get(VECTOR_FIELD, []), dtype=np.float32),
            image_ref=source.get("image_ref"),
            metadata=source.get("metadata") or {},
        )

    def count(self, filters: Filters | None = None) -> int:
        """Documents behind the read target; with ``filters``, those that match them."""
        body = {"query": self._filter_clause(filters)} if filters else None
        return int(self._call("count", retry=True, index=self.read_target, body=body)["count"])

    def ids_matching(self, filters: Filters | None = None) -> Iterator[str]:
        """The ids of the documents matching ``filters`` (all without), read with a scroll (a
        snapshot: deleting the ids meanwhile does not disturb it), ``MGET_CHUNK`` a page."""
        query = self._filter_clause(filters) if filters else {"match_all": {}}
        body = {"query": query, "_source": False, "sort": ["_doc"], "size": MGET_CHUNK}
        page = self._call("search", retry=True, index=self.read_target, body=body, params={"scroll": SCROLL})
        scroll_id = page.get("_scroll_id")
        try:
            while page["hits"]["hits"]:
                yield from (hit["_id"] for hit in page["hits"]["hits"])
                # a page is not asked for twice: a retried scroll could skip one
                page = self._call("scroll", body={"scroll_id": scroll_id, "scroll": SCROLL})
                scroll_id = page.get("_scroll_id", scroll_id)
        finally:
            if scroll_id:
                with contextlib.suppress(TransportError, StoreError):
                    self.client.clear_scroll(body={"scroll_id": scroll_id})

    def _filter_clause(self, filters: Filters) -> dict[str, Any]:
        """``filter_clause`` with the filtered fields' mappings, so each condition reaches only the
        values of its kind. Mappings are read at most every ``MAPPING_TTL_S`` seconds, and at once
        when a filtered field was not mapped yet (a field a newer document brought)."""
        fields = [name for name in filters if isinstance(name, str)]
        cached, at = self._mappings
        if cached is None or time.monotonic() - at > MAPPING_TTL_S or not _all_mapped(cached, fields):
            cached = self._call("indices.get_mapping", retry=True, index=self.read_target)
            self._mappings = (cached, time.monotonic())
        return filter_clause(filters, field_mappings(cached, fields))

    def known_fields(self, fields: Iterable[str]) -> set[str]:
        """Those of ``fields`` mapped under ``metadata`` in any index behind the read target."""
        mappings = self._call("indices.get_mapping", retry=True, index=self.read_target)
        wanted = list(dict.fromkeys(fields))
        known: set[str] = set()
        for body in mappings.values():
            metadata = ((body.get("mappings") or {}).get("properties") or {}).get("metadata") or {}
            known.update(field for field in wanted if _mapped(metadata, field.split(".")))
        return known

    def metadata_fields(self) -> dict[str, list[str]]:
        """Every field mapped under ``metadata`` in an index behind the read target, with its kinds."""
        mappings = self._call("indices.get_mapping", retry=True, index=self.read_target)
        kinds: dict[str, set[str]] = {}
        for body in mappings.values():
            metadata = ((body.get("mappings") or {}).get("properties") or {}).get("metadata") or {}
            for field, kind in _leaves(metadata, ""):
                kinds.setdefault(field, set()).add(kind)
        return {field: sorted(kinds[field]) for field in sorted(kinds)}

    def search(
        self, vector: FloatRows, k: int = 10, filters: Filters | None = None, *, ef_search: int | None = None
    ) -> list[Hit]:
        """The ``k`` nearest documents by inner product; ``filters`` act inside the k-NN search."""
        query = np.asarray(vector, dtype=np.float32).ravel()
        if self.manifest is not None and query.shape[0] != self.manifest.output_dim:
            raise StoreError(f"query has {query.shape[0]} dims, the index {self.manifest.output_dim}")
        knn: dict[str, Any] = {"vector": query, "k": k}
        if filters:
            knn["filter"] = self._filter_clause(filters)
        if ef_search is not None:
            knn["method_parameters"] = {"ef_search": ef_search}
        body = {"size": k, "_source": {"excludes": [VECTOR_FIELD]}, "query": {"knn": {VECTOR_FIELD: knn}}}
        sent = json_body.request(body, "this search")
        hits = self._call("search", index=self.read_target, body=sent)["hits"]["hits"]
        return [self._hit(h) for h in hits]

    def _hit(self, hit: dict[str, Any]) -> Hit:
        source = hit.get("_source") or {}
        return Hit(
            id=hit["_id"],
            score=similarity(float(hit["_score"]), self.options.space_type),
            image_ref=source.get("image_ref"),
            metadata=source.get("metadata") or {},
        )


FieldMappings = Mapping[str, Mapping[str, Mapping[str, Any] | None]]
"""field -> {index behind the read target -> the field's mapping there (None: not mapped there)}."""


def filter_clause(filters: Filters, mapped: FieldMappings | None = None) -> dict[str, Any]:
    """Filters -> a bool filter on ``metadata.<field>``: value = term, list = terms, dict = range.

    With ``mapped`` (the fields' mappings), each condition reaches only values mapped as its kind,
    as the LocalStore compares them: a string condition the keyword (exact) form of a text field, a
    numeric one only numeric fields, a boolean one only boolean fields; else it matches nothing.
    Without it (the search template's parameters), the clause is the plain term/terms/range.
    """
    clauses: list[dict[str, Any]] = []
    for name, value in filters.items():
        if not isinstance(name, str) or not all(_FIELD_PART.match(p) for p in name.split(".")):
            raise StoreError(f"filter field {name!r} must be a dotted path of letters, digits, '_' or '-'")
        if isinstance(value, Mapping) and (not value or set(value) - {"gt", "gte", "lt", "lte"}):
            raise StoreError(f"range filter on {name!r} takes gt, gte, lt, lte; got {sorted(value)}")
        field = f"metadata.{name}"
        by_index = (mapped or {}).get(name)
        if by_index and any(by_index.values()):
            clauses.append(_typed_clause(field, value, by_index))
        else:  # not mapped (yet): nothing has the field, so the plain clause matches nothing either
            clauses.append(_plain_clause(field, value))
    return {"bool": {"filter": clauses}}


def _plain_clause(path: str, condition: Any) -> dict[str, Any]:
    if isinstance(condition, Mapping):
        return {"range": {path: tightest_bounds(condition)}}
    if isinstance(condition, list | tuple | set | frozenset):
        return {"terms": {path: list(condition)}}
    return {"term": {path: condition}}


def _typed_clause(
    path: str, condition: Any, by_index: Mapping[str, Mapping[str, Any] | None]
) -> dict[str, Any]:
    """``condition`` split by the kind of its values, each part sent to the (sub)field that holds
    values of that kind in each index (restricted to those indices when they differ)."""
    shoulds: list[dict[str, Any]] = []
    for kind, part in parts_by_kind(condition):
        targets: dict[str, list[str]] = {}  # (sub)field -> the indices where it holds this kind
        for index, leaf in by_index.items():
            target = _field_for(path, leaf, kind)
            if target is not None:
                targets.setdefault(target, []).append(index)
        for target, indices in targets.items():
            clause = _plain_clause(target, part)
            if len(indices) < len(by_index):
                clause = {"bool": {"filter": [clause, {"terms": {"_index": sorted(indices)}}]}}
            shoulds.append(clause)
    if not shoulds:
        return {"match_none": {}}
    return shoulds[0] if len(shoulds) == 1 else {"bool": {"should": shoulds, "minimum_should_match": 1}}


def tightest_bounds(condition: Mapping[str, Any]) -> dict[str, Any]:
    """A range with at most one lower and one upper bound, the tightest of those given: OpenSearch
    keeps only one of ``gt``/``gte`` (and of ``lt``/``lte``), where every bound must hold."""
    out: dict[str, Any] = {}
    for strict, loose, tighter in (("gt", "gte", max), ("lt", "lte", min)):
        given = [(condition[op], op == strict) for op in (strict, loose) if op in condition]
        if not given:
            continue
        value = tighter(v for v, _ in given)
        # at the same value, the strict bound is the tighter one
        op = strict if any(s for v, s in given if v == value) else loose
        out[op] = value
    return out


def _field_for(path: str, leaf: Mapping[str, Any] | None, kind: str) -> str | None:
    """The (sub)field of ``path`` that holds values of ``kind`` under mapping ``leaf``, if any."""
    mapped = (leaf or {}).get("type")
    if kind == "number":
        return path if mapped in _NUMERIC else None
    if kind == "boolean":
        return path if mapped == "boolean" else None
    if mapped in ("keyword", "date"):  # dynamically mapped dates hold strings to a filter
        return path
    if mapped == "text":  # exact, case-sensitive: the keyword sub-field of a dynamic string
        subfields = (leaf or {}).get("fields") or {}
        return next((f"{path}.{n}" for n, f in subfields.items() if f.get("type") == "keyword"), None)
    return None


def field_mappings(mappings: Mapping[str, Any], fields: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``FieldMappings`` of ``fields`` from a ``get_mapping`` answer (index -> its mappings)."""
    out: dict[str, dict[str, Any]] = {}
    for field in fields:
        for index, body in mappings.items():
            leaf: Any = ((body.get("mappings") or {}).get("properties") or {}).get("metadata") or {}
            for part in field.split("."):
                leaf = (leaf.get("properties") or {}).get(part) if isinstance(leaf, dict) else None
            out.setdefault(field, {})[index] = (
                leaf if isinstance(leaf, dict) and "properties" not in leaf else None
            )
    return out


def similarity(score: float, space_type: str) -> float:
    """The k-NN plugin's ``_score`` back to the similarity itself (inner product, cosine)."""
    if space_type == "innerproduct":  # score = 1 + dot for dot >= 0, 1 / (1 - dot) below
        return score - 1 if score >= 1 else 1 - 1 / score
    if space_type == "cosinesimil":  # score = (1 + cos) / 2; a cosine, whatever the float noise
        return min(1.0, max(-1.0, 2 * score - 1))
    # l2: score = 1 / (1 + d^2), and d^2 = 2 - 2 cos for the unit vectors stored here
    return min(1.0, max(-1.0, 1 - (1 / score - 1) / 2))


def _all_mapped(mappings: Mapping[str, Any], fields: list[str]) -> bool:
    found = field_mappings(mappings, fields)
    return all(any(found.get(field, {}).values()) for field in fields)


def _mapped(mapping: Any, path: list[str]) -> bool:
    """Whether the object mapping has a field at ``path`` (dotted names, nested ``properties``)."""
    for part in path:
        mapping = (mapping.get("properties") or {}).get(part) if isinstance(mapping, dict) else None
    return isinstance(mapping, dict)


_NUMERIC = frozenset({"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float"})


def _leaves(mapping: Any, prefix: str) -> Iterable[tuple[str, str]]:
    """(dotted field, kind) of each mapped leaf; dynamically mapped dates are strings to a filter."""
    for name, inner in ((mapping or {}).get("properties") or {}).items():
        field = f"{prefix}.{name}" if prefix else name
        if "properties" in inner:
            yield from _leaves(inner, field)
        elif inner.get("type") == "boolean":
            yield field, "boolean"
        else:
            yield field, "number" if inner.get("type") in _NUMERIC else "text"


def _doc_error(error: Any) -> TransportError:
    """One document's error in an ``mget`` answer as the error the whole request would have raised."""
    kind = error.get("type") if isinstance(error, dict) else None
    if kind == "security_exception":
        return AuthorizationException(403, kind, {"error": error})
    if kind == "index_not_found_exception":  # a missing alias: named as the model never ingested
        return NotFoundError(404, kind, {"error": error})
    return TransportError("N/A", kind or "error", {"error": error})


def _chunked(ids: Iterable[str], size: int) -> Iterable[list[str]]:
    chunk: list[str] = []
    for doc_id in ids:
        chunk.append(doc_id)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
