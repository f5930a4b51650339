"""The filtered k-NN query as an OpenSearch stored search template (``knn_search.mustache``).

A team whose backend already has the query descriptor can search without Python: store the template
once, then send ``{"id": "gemsearch-knn-search", "params": {"vector": [...], "k": 10, "filter":
{...}}}`` to ``<alias>/_search/template``. ``filter`` is optional; it is the bool query that
``filter_clause`` builds (term/terms/range on ``metadata.<field>``), applied inside the k-NN search
exactly as ``OpenSearchStore.search`` does.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
from opensearchpy.exceptions import TransportError

from ....errors import StoreError
from ....protocols import Filters, FloatRows, Hit
from ...query_checks import check_filters
from . import json_body
from .store import filter_clause, similarity

TEMPLATE_FILE = "knn_search.mustache"
TEMPLATE_ID = "gemsearch-knn-search"


def template_source() -> str:
    """The mustache source shipped in ``gemsearch.opensearch_templates``."""
    return (
        resources.files("gemsearch.opensearch_templates").joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")
    )


def put_search_template(client: Any, template_id: str = TEMPLATE_ID) -> None:
    """Store (or replace) the template in the cluster under ``template_id``."""
    body = {"script": {"lang": "mustache", "source": template_source()}}
    try:
        client.put_script(id=template_id, body=body)
    except TransportError as exc:
        raise StoreError(f"cannot store search template {template_id}: {exc}") from exc


def template_params(vector: FloatRows, k: int = 10, filters: Filters | None = None) -> dict[str, Any]:
    """The template's parameters for a descriptor ``(d,)``, ``k`` and metadata filters."""
    params: dict[str, Any] = {"vector": np.ascontiguousarray(vector, dtype=np.float32).ravel(), "k": int(k)}
    checked = check_filters(filters)
    if checked:
        params["filter"] = filter_clause(checked)
    return params


def search_with_template(
    client: Any,
    index: str,
    vector: FloatRows,
    k: int = 10,
    filters: Filters | None = None,
    *,
    template_id: str = TEMPLATE_ID,
    space_type: str = "innerproduct",
) -> list[Hit]:
    """Run the stored template against ``index`` (an alias or an index) and read the hits."""
    body = {"id": template_id, "params": template_params(vector, k, filters)}
    try:
        response = client.search_template(index=index, body=json_body.request(body, "this search"))
    except TransportError as exc:
        raise StoreError(f"search template {template_id} on {index} failed: {exc}") from exc
    return [
        Hit(
            id=h["_id"],
            score=similarity(float(h["_score"]), space_type),
            image_ref=(h.get("_source") or {}).get("image_ref"),
            metadata=(h.get("_source") or {}).get("metadata") or {},
        )
        for h in response["hits"]["hits"]
    ]
