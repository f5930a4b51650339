"""Index options for large collections on the real node: the quantising encoder, the refresh
interval, and the vector kept out of the stored _source (derived on read)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from opensearchpy import OpenSearch

from gemsearch.cli import main as cli
from gemsearch.manifest import ModelManifest, PoolingSpec
from gemsearch.plugin.stores.opensearch.index_admin import IndexOptions
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore
from gemsearch.protocols import Record


def _manifest(dims: int = 32) -> ModelManifest:
    return ModelManifest(
        name="scaleopts", version=hashlib.sha256(b"scale-options").hexdigest(), backbone="resnet50",
        pooling=PoolingSpec(kind="gem", p=3.0), output_dim=dims,
    )  # fmt: skip


def _rows(n: int, d: int) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_encoder_refresh_and_derived_source_reach_the_index(opensearch: OpenSearch, prefix: str) -> None:
    options = IndexOptions(prefix=prefix, encoder="sq", refresh_interval="30s", vector_in_source=False)
    store = OpenSearchStore(opensearch, options=options)
    store.ensure_index(_manifest())
    state = opensearch.indices.get(index=store.index)[str(store.index)]
    method = state["mappings"]["properties"]["embedding"]["method"]
    assert method["parameters"]["encoder"]["name"] == "sq"
    flat = opensearch.indices.get_settings(index=store.index, params={"flat_settings": "true"})
    settings = flat[str(store.index)]["settings"]
    assert settings["index.refresh_interval"] == "30s"
    assert settings["index.knn.derived_source.enabled"] == "true"
    vectors = _rows(20, 32)
    store.write(Record(id=f"d{i}", vector=v) for i, v in enumerate(vectors))
    # the stored _source lacks the vector, yet reads give it back (search by id needs it)
    got = store.get("d3")
    assert got is not None
    np.testing.assert_allclose(got.vector, vectors[3], atol=1e-6)
    hits = store.search(vectors[5], k=3)
    assert hits[0].id == "d5"


def test_binary_encoder_needs_faiss(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="faiss"):
        IndexOptions(encoder="binary")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(_manifest().to_json())
    args = ["index", "create", str(manifest), "--encoder", "binary", "--plan", "--docs", "10"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "faiss" in result.output and "Traceback" not in result.output
