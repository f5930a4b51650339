"""OpenSearch index and search templates shipped as package data (JSON), plus helpers to fill them."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any, Literal

Engine = Literal["lucene", "faiss"]
SpaceType = Literal["innerproduct", "cosinesimil", "l2"]


@cache
def _load(name: str) -> dict[str, Any]:
    text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def load(name: str) -> dict[str, Any]:
    """A fresh copy of the JSON template ``name`` (e.g. ``"knn_index.json"``)."""
    return copy.deepcopy(_load(name))


def knn_index_body(
    dimension: int,
    *,
    engine: Engine = "lucene",
    space_type: SpaceType = "innerproduct",
    m: int = 16,
    ef_construction: int = 128,
    ef_search: int = 100,
    shards: int = 1,
    replicas: int = 0,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Index creation body for a ``knn_vector`` field named ``embedding`` with an HNSW graph.

    ``lucene`` runs on any k-NN install (the Maven k-NN zip has no native libraries);
    ``faiss`` needs the native libraries of a full OpenSearch distribution.
    """
    if dimension <= 0:
        raise ValueError(f"dimension must be positive, got {dimension}")
    body = load("knn_index.json")
    index = body["settings"]["index"]
    index["knn.algo_param.ef_search"] = ef_search
    index["number_of_shards"] = shards
    index["number_of_replicas"] = replicas
    field = body["mappings"]["properties"]["embedding"]
    field["dimension"] = dimension
    method = field["method"]
    method["engine"] = engine
    method["space_type"] = space_type
    method["parameters"] = {"m": m, "ef_construction": ef_construction}
    body["mappings"]["_meta"] = dict(meta or {})
    return body
