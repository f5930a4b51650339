"""The k-NN plugin of the test node answers exact nearest neighbours with the shipped index template."""

from __future__ import annotations

import numpy as np
import pytest
from opensearchpy import OpenSearch, helpers

from gemsearch.opensearch_templates import knn_index_body


def _unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_knn_plugin_loaded_without_native_engines(opensearch: OpenSearch) -> None:
    plugins = {p["component"]: p["version"] for p in opensearch.cat.plugins(format="json")}
    assert plugins.get("opensearch-knn", "").startswith(opensearch.info()["version"]["number"])
    stats = opensearch.transport.perform_request("GET", "/_plugins/_knn/stats")
    assert stats["_nodes"]["failed"] == 0


@pytest.fixture
def vectors_index(opensearch: OpenSearch) -> tuple[str, np.ndarray]:
    name = "test-knn-exact"
    vectors = _unit_rows(200, 16, seed=1)
    opensearch.indices.create(index=name, body=knn_index_body(16))
    actions = (
        {"_index": name, "_id": str(i), "embedding": v.tolist(), "image_ref": f"img{i}.jpg"}
        for i, v in enumerate(vectors)
    )
    ok, errors = helpers.bulk(opensearch, actions, refresh=True)
    assert ok == len(vectors) and not errors
    yield name, vectors
    opensearch.indices.delete(index=name)


def test_index_uses_lucene_hnsw_innerproduct(
    opensearch: OpenSearch, vectors_index: tuple[str, np.ndarray]
) -> None:
    name, _ = vectors_index
    mapping = opensearch.indices.get_mapping(index=name)[name]["mappings"]["properties"]["embedding"]
    assert mapping["type"] == "knn_vector" and mapping["dimension"] == 16
    assert mapping["method"]["engine"] == "lucene"
    assert mapping["method"]["space_type"] == "innerproduct"
    assert opensearch.count(index=name)["count"] == 200


def test_knn_search_returns_exact_neighbours(
    opensearch: OpenSearch, vectors_index: tuple[str, np.ndarray]
) -> None:
    name, vectors = vectors_index
    queries = _unit_rows(10, 16, seed=2)
    k = 5
    for q in queries:
        exact = np.argsort(-(vectors @ q), kind="stable")[:k]
        # ef_search >= n makes the HNSW walk visit every node, so the answer must be exact
        knn = {"vector": q.tolist(), "k": k, "method_parameters": {"ef_search": len(vectors)}}
        body = {"size": k, "query": {"knn": {"embedding": knn}}}
        hits = opensearch.search(index=name, body=body)["hits"]["hits"]
        assert [int(h["_id"]) for h in hits] == exact.tolist()
        # lucene's innerproduct score for a positive dot product is 1 + dot
        assert hits[0]["_score"] == pytest.approx(1 + float(vectors[exact[0]] @ q), abs=1e-4)
