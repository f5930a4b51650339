"""The stored search template, in the real node: same hits as OpenSearchStore.search, filters included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opensearchpy import OpenSearch
from PIL import Image
from support.query_data import fill_store, tiny_model, write_photos

from gemsearch.errors import ConfigError
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions
from gemsearch.plugin.stores.opensearch.search_template import (
    TEMPLATE_ID,
    put_search_template,
    search_with_template,
    template_params,
    template_source,
)
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore


@pytest.fixture(autouse=True)
def mustache(opensearch: OpenSearch) -> None:
    """Search templates need the node's lang-mustache module (the test harness installs it)."""
    info = opensearch.nodes.info(metric="plugins")
    modules = {m["name"] for node in info["nodes"].values() for m in node.get("modules", [])}
    assert "lang-mustache" in modules, f"the test node has no lang-mustache module (it has {sorted(modules)})"


def test_template_renders_valid_json_with_and_without_filter(opensearch: OpenSearch) -> None:
    put_search_template(opensearch)
    for filters in (None, {"group": "even", "year": {"gte": 2002}}):
        params = template_params([0.6, 0.8], k=3, filters=filters)
        rendered = opensearch.render_search_template(body={"id": TEMPLATE_ID, "params": params})
        query = rendered["template_output"]
        knn = query["query"]["knn"]["embedding"]
        assert query["size"] == 3 and knn["k"] == 3 and knn["vector"] == pytest.approx([0.6, 0.8])
        if filters is None:
            assert "filter" not in knn
        else:
            clauses = knn["filter"]["bool"]["filter"]
            assert {"term": {"metadata.group": "even"}} in clauses
            assert {"range": {"metadata.year": {"gte": 2002}}} in clauses
    assert json.dumps(template_source())  # the shipped file is found as package data


def test_template_search_matches_the_store(opensearch: OpenSearch, prefix: str, tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "photos", max_side=96)
    tiny_model(tmp_path / "tiny.onnx")
    embedder = OnnxEmbedder(tmp_path / "tiny.onnx")
    store = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    fill_store(store, embedder, photos)
    put_search_template(opensearch)
    alias = embedder.manifest.alias_name(prefix)
    with Image.open(photos[3].path) as im:
        vector = embedder.embed_image(im.convert("RGB"))
    for filters in (None, {"group": "odd"}, {"year": {"lt": 2003}}, {"name": ["rocket", "coffee"]}):
        expected = store.search(vector, k=4, filters=filters)
        got = search_with_template(opensearch, alias, vector, k=4, filters=filters)
        assert [h.id for h in got] == [h.id for h in expected], filters
        assert [h.score for h in got] == pytest.approx([h.score for h in expected])
        assert got and all(h.metadata for h in got)
    assert {
        h.metadata["group"] for h in search_with_template(opensearch, alias, vector, 7, {"group": "odd"})
    } == {"odd"}
    with pytest.raises(ConfigError):
        template_params(vector, filters={"bad field": 1})
