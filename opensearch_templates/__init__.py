"""OpenSearch index and search templates shipped as package data (JSON), plus helpers to fill them."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any, Literal

Engine = Literal["lucene", "faiss"]
SpaceType = Literal["innerproduct", "cosinesimil", "l2"]
Encoder = Literal["none", "sq", "binary"]


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
    encoder: Encoder = "none",
    refresh_interval: str = "1s",
    vector_in_source: bool = True,
) -> dict[str, Any]:
    """Index creation body for a ``knn_vector`` field named ``embedding`` with an HNSW graph.

    ``lucene`` runs on any k-NN install (the Maven k-NN zip has no native libraries);
    ``faiss`` needs the native libraries of a full OpenSearch distribution.
    ``encoder``: ``sq`` quantises inside OpenSearch (lucene: int7, faiss: fp16), ``binary`` is faiss's
    1-bit binary quantisation. ``vector_in_source=False`` keeps the vector out of the stored
    ``_source`` and derives it from the vector files on read (k-NN's derived source, 2.19+).
    """
    if dimension <= 0:
        raise ValueError(f"dimension must be positive, got {dimension}")
    body = load("knn_index.json")
    index = body["settings"]["index"]
    index["knn.algo_param.ef_search"] = ef_search
    index["number_of_shards"] = shards
    index["number_of_replicas"] = replicas
    index["refresh_interval"] = refresh_interval
    if not vector_in_source:
        index["knn.derived_source.enabled"] = True
    field = body["mappings"]["properties"]["embedding"]
    field["dimension"] = dimension
    method = field["method"]
    method["engine"] = engine
    method["space_type"] = space_type
    method["parameters"] = {"m": m, "ef_construction": ef_construction}
    if encoder == "sq":
        method["parameters"]["encoder"] = {"name": "sq"}
    elif encoder == "binary":
        if engine != "faiss":
            raise ValueError("binary quantisation is a faiss encoder")
        method["parameters"]["encoder"] = {"name": "binary", "parameters": {"bits": 1}}
    body["mappings"]["_meta"] = dict(meta or {})
    return body
