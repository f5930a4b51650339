"""OpenSearchStore against the real node: index per version + alias, preflight, bulk, k-NN, filters."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from opensearchpy import OpenSearch, helpers
from support.fault_proxy import FaultProxy

from gemsearch.errors import StoreError
from gemsearch.manifest import ModelManifest, PoolingSpec
from gemsearch.opensearch_templates import knn_index_body
from gemsearch.plugin.stores.opensearch.bulk import BulkOptions, Outcome, RetryPolicy
from gemsearch.plugin.stores.opensearch.index_admin import IndexOptions, alias_targets, index_body, swap_alias
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore, filter_clause, similarity
from gemsearch.protocols import Record, VectorStore

COLORS = ("red", "green", "blue")


def make_manifest(dims: int = 16, name: str = "toy", weights: bytes = b"v1") -> ModelManifest:
    return ModelManifest(
        name=name,
        version=hashlib.sha256(weights).hexdigest(),
        backbone="resnet50",
        pooling=PoolingSpec(kind="gem", p=3.0),
        output_dim=dims,
    )


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_records(vectors: np.ndarray, tag: str = "r") -> list[Record]:
    return [
        Record(
            id=f"{tag}{i:04d}",
            vector=v,
            image_ref=f"img/{tag}{i}.jpg",
            metadata={"color": COLORS[i % 3], "n": i, "even": i % 2 == 0},
        )
        for i, v in enumerate(vectors)
    ]


def all_ids(client: OpenSearch, index: str) -> list[str]:
    """Every _id in the index, duplicates kept (a duplicate would show up twice)."""
    hits = helpers.scan(client, index=index, query={"query": {"match_all": {}}}, _source=False)
    return [h["_id"] for h in hits]


@pytest.fixture
def store(opensearch: OpenSearch, prefix: str) -> OpenSearchStore:
    return OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))


def test_ensure_index_creates_the_version_index_its_alias_and_meta(
    opensearch: OpenSearch, store: OpenSearchStore, prefix: str
) -> None:
    manifest = make_manifest(dims=16)
    store.ensure_index(manifest)
    store.ensure_index(manifest)  # again: the existing index passes the preflight
    name = f"{prefix}-toy-{manifest.version[:8]}"
    assert store.index == name and isinstance(store, VectorStore)
    state = opensearch.indices.get(index=name)[name]
    field = state["mappings"]["properties"]["embedding"]
    assert (field["dimension"], field["method"]["engine"], field["method"]["space_type"]) == (
        16,
        "lucene",
        "innerproduct",
    )
    assert state["settings"]["index"]["knn"] == "true"
    assert ModelManifest.model_validate(state["mappings"]["_meta"]["gemsearch"]["manifest"]) == manifest
    assert alias_targets(opensearch, f"{prefix}-toy") == [name]


def _plant(client: OpenSearch, name: str, body: dict) -> None:
    client.indices.create(index=name, body=body)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("dimension", "dimension is 8, the model's is 16"),
        ("engine", "engine is lucene, expected faiss"),
        ("space", "space type is cosinesimil, expected innerproduct"),
        ("version", "holds model toy version "),
        ("knn_off", "index.knn is false"),
        ("foreign", "not created by gemsearch"),
    ],
)
def test_preflight_refuses_an_index_that_does_not_fit(
    opensearch: OpenSearch, prefix: str, case: str, message: str
) -> None:
    manifest = make_manifest(dims=16)
    options = IndexOptions(prefix=prefix)
    name = manifest.index_name(prefix)
    other = make_manifest(dims=16, weights=b"other weights")
    bodies = {
        "dimension": index_body(make_manifest(dims=8), options),
        "engine": index_body(manifest, options),
        "space": index_body(manifest, options.model_copy(update={"space_type": "cosinesimil"})),
        "version": index_body(other, options),
        "knn_off": index_body(manifest, options),
        "foreign": knn_index_body(16),
    }
    body = bodies[case]
    if case == "knn_off":  # k-NN refuses an HNSW method without index.knn: a flat vector field
        body["settings"]["index"] = {"knn": False}
        del body["mappings"]["properties"]["embedding"]["method"]
    _plant(opensearch, name, body)
    store = OpenSearchStore(
        opensearch, options=options.model_copy(update={"engine": "faiss"}) if case == "engine" else options
    )
    with pytest.raises(StoreError, match=message):
        store.ensure_index(manifest)
    with pytest.raises(StoreError, match="ensure_index"):
        store.upsert(make_records(unit_rows(2, 16, seed=0)))
    assert opensearch.count(index=name)["count"] == 0


def test_bulk_of_a_few_hundred_then_count_ids_and_self_search(
    opensearch: OpenSearch, store: OpenSearchStore
) -> None:
    vectors = unit_rows(300, 16, seed=1)
    records = make_records(vectors)
    store.ensure_index(make_manifest(dims=16))
    report = store.write(records)
    assert report.counts() == {"indexed": 300, "rejected": 0, "pending": 0}
    assert store.count() == 300
    assert sorted(all_ids(opensearch, store.read_target)) == [r.id for r in records]
    assert store.existing_ids([r.id for r in records[:40]] + ["nope", "r9999"]) == {
        r.id for r in records[:40]
    }
    for i in (0, 17, 150, 299):
        hits = store.search(vectors[i], k=3, ef_search=300)
        assert hits[0].id == records[i].id
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].image_ref == records[i].image_ref and hits[0].metadata["n"] == i
        exact = np.sort(vectors @ vectors[i])[::-1][:3]
        assert [h.score for h in hits] == pytest.approx(exact.tolist(), abs=1e-4)


def test_a_query_vector_with_nan_is_refused_before_it_is_sent(store: OpenSearchStore) -> None:
    """Search bodies are written as float32 arrays by orjson, which would turn NaN into null."""
    store.ensure_index(make_manifest(dims=16))
    store.write(make_records(unit_rows(5, 16, seed=3)))
    query = unit_rows(1, 16, seed=4)[0]
    assert len(store.search(query, k=2)) == 2
    query[3] = np.nan
    with pytest.raises(StoreError, match=r"cannot send this search: .*NaN"):
        store.search(query, k=2)


def test_update_metadata_merges_fields_keeps_vectors_and_leaves_out_missing_ids(
    opensearch: OpenSearch, store: OpenSearchStore, tmp_path: Path
) -> None:
    vectors = unit_rows(6, 16, seed=4)
    records = make_records(vectors)
    store.bulk_options = BulkOptions(dead_letter_path=tmp_path / "dead.jsonl")
    store.ensure_index(make_manifest(dims=16))
    store.upsert(records)
    updates = [(r.id, {"album": "nature", "n": 100 + i}) for i, r in enumerate(records[:4])]
    assert store.update_metadata([*updates, ("r9999", {"album": "x"})]) == 4
    assert not (tmp_path / "dead.jsonl").exists()  # a missing id is not a refused document
    for i, record in enumerate(records):
        got = store.get(record.id)
        assert got is not None and np.array_equal(got.vector, vectors[i])
        want = {**record.metadata, **({"album": "nature", "n": 100 + i} if i < 4 else {})}
        assert got.metadata == want and got.image_ref == record.image_ref
    hits = store.search(vectors[5], k=6, filters={"album": "nature"})
    assert sorted(h.id for h in hits) == [r.id for r in records[:4]]
    assert store.count() == 6 and sorted(all_ids(opensearch, store.read_target)) == [r.id for r in records]
    with pytest.raises(StoreError, match="1 metadata updates refused"):  # a mapping conflict: n is a long
        store.update_metadata([(records[0].id, {"n": "not a number"})])


@pytest.mark.parametrize(
    "filters",
    [
        {"color": "red"},
        {"color": ["green", "blue"]},
        {"n": {"gte": 40, "lt": 90}},
        {"color": "blue", "n": {"lte": 120}, "even": True},
    ],
)
def test_filters_restrict_results_like_brute_force(
    opensearch: OpenSearch, prefix: str, filters: dict
) -> None:
    store = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    vectors = unit_rows(150, 12, seed=3)
    records = make_records(vectors)
    store.ensure_index(make_manifest(dims=12))
    store.upsert(records)
    queries = unit_rows(5, 12, seed=4)
    allowed = np.array([_matches(r.metadata, filters) for r in records])
    assert 0 < allowed.sum() < len(records)
    for q in queries:
        scores = np.where(allowed, vectors @ q, -np.inf)
        expected = [records[i].id for i in np.argsort(-scores, kind="stable")[:7]]
        hits = store.search(q, k=7, filters=filters, ef_search=150)
        assert [h.id for h in hits] == expected
        assert all(_matches(h.metadata, filters) for h in hits)


def _matches(meta: dict, filters: dict) -> bool:
    for key, cond in filters.items():
        value = meta[key]
        if isinstance(cond, dict):
            ok = all(
                {"gt": value > b, "gte": value >= b, "lt": value < b, "lte": value <= b}[op]
                for op, b in cond.items()
            )
        elif isinstance(cond, list):
            ok = value in cond
        else:
            ok = value == cond
        if not ok:
            return False
    return True


def test_filter_clause_and_score_conversion() -> None:
    clause = filter_clause({"color": "red", "n": {"gte": 1}, "tag": ["a", "b"]})
    assert clause == {
        "bool": {
            "filter": [
                {"term": {"metadata.color": "red"}},
                {"range": {"metadata.n": {"gte": 1}}},
                {"terms": {"metadata.tag": ["a", "b"]}},
            ]
        }
    }
    with pytest.raises(StoreError, match="gt, gte, lt, lte"):
        filter_clause({"n": {"from": 1}})
    with pytest.raises(StoreError, match="dotted path"):
        filter_clause({"a b": 1})
    # lucene innerproduct: 1 + dot for dot >= 0, 1 / (1 - dot) below
    assert similarity(1.25, "innerproduct") == pytest.approx(0.25)
    assert similarity(1 / (1 + 0.5), "innerproduct") == pytest.approx(-0.5)
    assert similarity(0.75, "cosinesimil") == pytest.approx(0.5)
    assert similarity(1.0000002, "cosinesimil") == 1.0 and similarity(-1e-7, "cosinesimil") == -1.0
    # OpenSearch keeps one bound a side: the tightest of those given is sent
    assert filter_clause({"n": {"gte": 1, "gt": 1, "lt": 9, "lte": 5}})["bool"]["filter"] == [
        {"range": {"metadata.n": {"gt": 1, "lte": 5}}}
    ]


def test_wrong_dimension_goes_to_the_dead_letter_file_and_the_rest_is_indexed(
    opensearch: OpenSearch, prefix: str, tmp_path: Path
) -> None:
    dead = tmp_path / "dead.jsonl"
    store = OpenSearchStore(
        opensearch, options=IndexOptions(prefix=prefix), bulk=BulkOptions(dead_letter_path=str(dead))
    )
    store.ensure_index(make_manifest(dims=16))
    records = make_records(unit_rows(40, 16, seed=5))
    bad = {3, 20, 39}
    for i in bad:
        records[i] = Record(id=records[i].id, vector=unit_rows(1, 9, seed=i)[0], metadata={"n": i})
    report = store.write(records)
    assert report.counts() == {"indexed": 37, "rejected": 3, "pending": 0}
    assert set(report.ids(Outcome.REJECTED)) == {records[i].id for i in bad}
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert {e["id"] for e in lines} == {records[i].id for i in bad}
    for entry in lines:
        assert entry["status"] == 400 and "dimension" in entry["reason"]
        assert len(entry["source"]["embedding"]) == 9 and entry["index"] == store.index
    assert store.count() == 37
    assert set(all_ids(opensearch, store.read_target)) == {
        r.id for i, r in enumerate(records) if i not in bad
    }
    with pytest.raises(StoreError, match=r"1 documents rejected \(see .*dead.jsonl\)"):
        store.upsert([records[3]])


def test_transient_failures_through_the_store_are_retried_not_dead_lettered(
    opensearch: OpenSearch, prefix: str, tmp_path: Path
) -> None:
    """Items answered 429 or 5xx and whole requests answered 5xx end indexed; only a 400 is final."""
    records = make_records(unit_rows(12, 16, seed=9))
    transient = (429, 500, 502, 503, 504)
    faults = {r.id: [s] for r, s in zip(records, transient, strict=False)}
    faults[records[-1].id] = [400]
    node = str(opensearch.transport.get_connection().host)
    dead = tmp_path / "dead.jsonl"
    retry = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05)
    with FaultProxy(node, fail_next=[500, 502, 504], item_faults=faults) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        store = OpenSearchStore(
            client, options=IndexOptions(prefix=prefix), bulk=BulkOptions(retry=retry, dead_letter_path=dead)
        )
        store.ensure_index(make_manifest(dims=16))
        report = store.write(records)
    assert proxy.injected == 3 + len(transient) + 1
    assert report.counts() == {"indexed": 11, "rejected": 1, "pending": 0}
    assert report.ids(Outcome.REJECTED) == [records[-1].id]
    assert [json.loads(line)["status"] for line in dead.read_text().splitlines()] == [400]
    assert sorted(all_ids(opensearch, store.read_target)) == [r.id for r in records]  # the 400 reached it


def test_get_delete_and_reading_through_the_alias(opensearch: OpenSearch, prefix: str) -> None:
    writer = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    writer.ensure_index(make_manifest(dims=8))
    records = make_records(unit_rows(10, 8, seed=6))
    writer.upsert(records)
    reader = OpenSearchStore(opensearch, model="toy", options=IndexOptions(prefix=prefix))
    assert reader.read_target == f"{prefix}-toy"
    got = reader.get(records[4].id)
    assert got is not None and np.array_equal(got.vector, records[4].vector)
    assert got.vector.dtype == np.float32 and got.metadata == records[4].metadata
    assert reader.get("missing") is None
    with pytest.raises(StoreError, match="ensure_index"):
        reader.upsert(records[:1])
    assert writer.delete([records[0].id, records[1].id, "missing"]) == 2
    assert writer.delete([records[0].id]) == 0
    assert reader.count() == 8 and reader.existing_ids([records[0].id, records[2].id]) == {records[2].id}


def test_alias_swap_is_atomic(opensearch: OpenSearch, prefix: str) -> None:
    options = IndexOptions(prefix=prefix)
    v1, v2 = make_manifest(dims=8, weights=b"one"), make_manifest(dims=8, weights=b"two")
    s1, s2 = OpenSearchStore(opensearch, options=options), OpenSearchStore(opensearch, options=options)
    s1.ensure_index(v1)
    s2.ensure_index(v2)  # the alias exists already: it stays on v1
    s1.upsert(make_records(unit_rows(5, 8, seed=7), tag="a"))
    s2.upsert(make_records(unit_rows(9, 8, seed=8), tag="b"))
    alias = v1.alias_name(prefix)
    assert alias_targets(opensearch, alias) == [s1.index]
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # a query must always see exactly one version, never none or both
        while not stop.is_set():
            seen.append(opensearch.count(index=alias)["count"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for i in range(6):
            swap = swap_alias(opensearch, (s2.index if i % 2 == 0 else s1.index) or "")
            assert swap.alias == alias
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert alias_targets(opensearch, alias) == [s1.index]
    assert set(seen) <= {5, 9} and len(seen) > 0
    swap_alias(opensearch, s2.index or "")
    reader = OpenSearchStore(opensearch, model="toy", options=options)
    assert reader.count() == 9 and alias_targets(opensearch, alias) == [s2.index]
