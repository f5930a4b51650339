"""The query API over both stores: crops find their photo, filters restrict, alpha-QE, search by id."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from opensearchpy import OpenSearch
from PIL import Image
from support.query_data import Photo, fill_store, tiny_model, write_photos

from gemsearch.errors import ConfigError, ImageError, ModelError
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.query import QueryExpansion, Searcher, alpha_qe, expansion, search, search_by_id
from gemsearch.plugin.query_checks import check_box, check_filters, parse_crop
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore
from gemsearch.protocols import VectorStore


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Photo], OnnxEmbedder]:
    root = tmp_path_factory.mktemp("query")
    photos = write_photos(root / "photos")
    tiny_model(root / "tiny.onnx")
    return root, photos, OnnxEmbedder(root / "tiny.onnx")


@pytest.fixture(scope="module")
def local(data: tuple[Path, list[Photo], OnnxEmbedder]) -> Iterator[LocalStore]:
    root, photos, embedder = data
    store = LocalStore(root / "store")
    fill_store(store, embedder, photos)
    yield store
    store.close()


@pytest.fixture
def os_store(
    opensearch: OpenSearch, prefix: str, data: tuple[Path, list[Photo], OnnxEmbedder]
) -> OpenSearchStore:
    _, photos, embedder = data
    store = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    fill_store(store, embedder, photos)
    return store


both_stores = pytest.mark.parametrize("store_name", ["local", "os_store"])


def _store(request: pytest.FixtureRequest, name: str) -> VectorStore:
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def _centre(path: Path, keep: float = 0.6) -> tuple[float, float, float, float]:
    with Image.open(path) as im:
        w, h = im.size
    m = (1 - keep) / 2
    return (w * m, h * m, w * (1 - m), h * (1 - m))


@both_stores
def test_crop_of_an_indexed_photo_finds_it(
    request: pytest.FixtureRequest, store_name: str, data: tuple[Path, list[Photo], OnnxEmbedder]
) -> None:
    _, photos, embedder = data
    searcher = Searcher(embedder, _store(request, store_name))
    ranks = []
    for p in photos:
        result = searcher.search(p.path, crop=_centre(p.path), k=3)
        assert len(result.hits) == 3
        ranks.append([h.id for h in result.hits].index(p.id) if p.id in {h.id for h in result.hits} else 99)
        top = result.hits[0]
        assert top.image_ref is not None and Path(top.image_ref).is_file()
        assert set(top.metadata) == {"name", "group", "year"}
        assert result.timings.embed_ms > 0 and result.timings.knn_ms > 0
    # the tiny random-conv model is weak: every photo within its top 3, most of them first
    assert max(ranks) < 3 and ranks.count(0) >= len(photos) // 2


@both_stores
def test_full_image_bytes_rank_itself_first_with_score_one(
    request: pytest.FixtureRequest, store_name: str, data: tuple[Path, list[Photo], OnnxEmbedder]
) -> None:
    _, photos, embedder = data
    searcher = Searcher(embedder, _store(request, store_name))
    for p in photos[:3]:
        hits = searcher.search(p.path.read_bytes(), k=2).hits
        assert hits[0].id == p.id
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].score >= hits[1].score


@both_stores
def test_filters_restrict_the_results(
    request: pytest.FixtureRequest, store_name: str, data: tuple[Path, list[Photo], OnnxEmbedder]
) -> None:
    _, photos, embedder = data
    searcher = Searcher(embedder, _store(request, store_name))
    query = photos[1].path  # an "odd" photo: with the filter it cannot find itself
    even = {p.id for p in photos if p.metadata["group"] == "even"}
    hits = searcher.search(query, k=10, filters={"group": "even"}).hits
    assert {h.id for h in hits} == even  # all of them, none other: filtered before ranking
    years = {p.id for p in photos if 2002 <= p.metadata["year"] < 2005}
    hits = searcher.search(query, k=10, filters={"year": {"gte": 2002, "lt": 2005}}).hits
    assert {h.id for h in hits} == years
    names = {photos[0].name, photos[4].name}
    hits = searcher.search(query, k=1, filters={"name": sorted(names), "group": "even"}).hits
    assert len(hits) == 1 and hits[0].metadata["name"] in names
    assert searcher.search(query, k=5, filters={"name": "no-such-photo"}).hits == []


@both_stores
def test_search_by_id_leaves_the_document_out(
    request: pytest.FixtureRequest, store_name: str, data: tuple[Path, list[Photo], OnnxEmbedder]
) -> None:
    _, photos, embedder = data
    store = _store(request, store_name)
    searcher = Searcher(embedder, store)
    target = photos[2]
    hits = searcher.search_by_id(target.id, k=3).hits
    assert len(hits) == 3 and target.id not in {h.id for h in hits}
    record = store.get(target.id)
    assert record is not None
    expected = [h.id for h in searcher.search_vector(record.vector, k=4).hits if h.id != target.id]
    assert [h.id for h in hits] == expected[:3]
    with_self = searcher.search_by_id(target.id, k=3, include_self=True).hits
    assert with_self[0].id == target.id
    with pytest.raises(ConfigError, match="no document"):
        searcher.search_by_id("missing", k=3)


@both_stores
def test_alpha_qe_requeries_with_the_weighted_mean(
    request: pytest.FixtureRequest, store_name: str, data: tuple[Path, list[Photo], OnnxEmbedder]
) -> None:
    _, photos, embedder = data
    store = _store(request, store_name)
    searcher = Searcher(embedder, store)
    box = _centre(photos[0].path, 0.5)
    plain = searcher.search(photos[0].path, crop=box, k=4)
    expanded = searcher.search(photos[0].path, crop=box, k=4, expand=QueryExpansion(n=2, alpha=3))
    # oracle: the expanded vector built by hand from the plain top 2, searched directly
    with Image.open(photos[0].path) as im:
        q = embedder.embed_image(im.convert("RGB"), crop=box)
    top = np.stack([store.get(h.id).vector for h in plain.hits[:2]])  # type: ignore[union-attr]
    w = np.clip(top @ q, 0, None) ** 3
    v = (q + w @ top) / np.linalg.norm(q + w @ top)
    oracle = store.search(v.astype(np.float32), k=4)
    assert [h.id for h in expanded.hits] == [h.id for h in oracle]
    assert [h.score for h in expanded.hits] == pytest.approx([h.score for h in oracle], abs=1e-4)
    assert expanded.timings.expand_ms > 0


def test_alpha_qe_by_hand() -> None:
    q = np.array([1.0, 0.0], np.float32)
    x = np.array([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    # weights: 0.6^2 = 0.36, 0, 0 (negative similarity) -> q + 0.36 * [0.6, 0.8] = [1.216, 0.288]
    v = alpha_qe(q, x, alpha=2)
    expected = np.array([1.216, 0.288]) / np.hypot(1.216, 0.288)
    np.testing.assert_allclose(v, expected, rtol=1e-6)
    np.testing.assert_allclose(alpha_qe(q, x[:0], alpha=2), q)  # nothing to add
    # alpha = 0 weights every non-negative neighbour 1: the plain average query expansion
    np.testing.assert_allclose(alpha_qe(q, x[:2], alpha=0), [1.6, 1.8] / np.hypot(1.6, 1.8), rtol=1e-6)


def test_expansion_shorthands() -> None:
    assert expansion(None) is None and expansion(False) is None
    assert expansion(True) == QueryExpansion()
    assert expansion(5) == QueryExpansion(n=5)
    with pytest.raises(ConfigError):
        expansion("yes")  # type: ignore[arg-type]


def test_bad_arguments_are_config_errors(
    local: LocalStore, data: tuple[Path, list[Photo], OnnxEmbedder]
) -> None:
    _, photos, embedder = data
    searcher = Searcher(embedder, local)
    path = photos[0].path
    with pytest.raises(ConfigError, match="k must be"):
        searcher.search(path, k=0)
    with pytest.raises(ConfigError, match="filter field"):
        searcher.search(path, filters={"bad field": 1})
    with pytest.raises(ConfigError, match="range filter"):
        searcher.search(path, filters={"year": {"from": 1}})
    with Image.open(path) as im:
        w, h = im.size
    with pytest.raises(ConfigError) as crop_error:  # echoed in the API's own (x1, y1, x2, y2)
        searcher.search(path, crop=(0, 0, 10_000, 10.5))
    assert str(crop_error.value) == f"crop (0, 0, 10000, 10.5) (x1, y1, x2, y2) leaves the {w}x{h} image"
    with pytest.raises(ImageError) as err:
        searcher.search(b"this is not an image")
    assert err.value.reason == "unsupported_format"
    with pytest.raises(ConfigError, match="dims"):
        searcher.search_vector(np.ones(3, np.float32))


def test_filter_and_crop_checks() -> None:
    assert check_filters({"a.b": ["x", 1], "n": {"gte": 1, "lt": 2.5}, "f": True}) is not None
    assert check_filters({}) is None
    for bad in ({"a": None}, {"a": []}, {"a": {"gte": 1, "lt": "z"}}, {"a": float("nan")}, {"": 1}):
        with pytest.raises(ConfigError):
            check_filters(bad)
    assert parse_crop("10, 20, 30, 40") == (10, 20, 40, 60)
    with pytest.raises(ConfigError, match=r"^crop 10,20,500,400 \(x,y,w,h\) leaves the 300x200 image$"):
        check_box(parse_crop("10, 20,500,400"), (300, 200))
    for bad_text in ("1,2,3", "a,b,c,d", "0,0,0,5", "0,0,inf,5"):
        with pytest.raises(ConfigError):
            parse_crop(bad_text)
    assert check_box((0, 0, 10, 10), (10, 10)) == (0, 0, 10, 10)
    with pytest.raises(ConfigError):
        check_box((5, 5, 5.2, 9), (10, 10))


def test_a_store_of_another_model_is_refused(
    tmp_path: Path, local: LocalStore, data: tuple[Path, list[Photo], OnnxEmbedder]
) -> None:
    tiny_model(tmp_path / "other.onnx", name="other", seed=7)
    with pytest.raises(ModelError, match="would not compare"):
        Searcher(OnnxEmbedder(tmp_path / "other.onnx"), local)


def test_one_call_api_with_paths(local: LocalStore, data: tuple[Path, list[Photo], OnnxEmbedder]) -> None:
    root, photos, _ = data
    with Image.open(photos[3].path) as im:
        pil = im.convert("RGB")
    hits = search(pil, k=2, model=root / "tiny.onnx", store=root / "store")
    assert hits[0].id == photos[3].id
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    hits = search(buf.getvalue(), crop=_centre(photos[3].path), k=3, model=root / "tiny.onnx", store=local)
    assert photos[3].id in {h.id for h in hits}
    by_id = search_by_id(photos[3].id, k=2, model=root / "tiny.onnx", store=root / "store")
    assert len(by_id) == 2 and photos[3].id not in {h.id for h in by_id}


def test_an_alias_serving_another_model_version_is_refused(
    os_store: OpenSearchStore,
    opensearch: OpenSearch,
    prefix: str,
    tmp_path: Path,
    data: tuple[Path, list[Photo], OnnxEmbedder],
) -> None:
    _, photos, embedder = data
    by_alias = OpenSearchStore(opensearch, model="tiny", options=IndexOptions(prefix=prefix))
    assert by_alias.manifest is None  # reads through the alias, knows no model by itself
    hits = Searcher(embedder, by_alias).search(photos[0].path, k=1).hits
    assert hits[0].id == photos[0].id
    tiny_model(tmp_path / "retrained.onnx", name="tiny", seed=7)  # same name, other weights
    with pytest.raises(ModelError, match="would not compare"):
        Searcher(OnnxEmbedder(tmp_path / "retrained.onnx"), by_alias)
