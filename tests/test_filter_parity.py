"""Filters mean the same on both stores: random filters over the same documents (text, numeric,
boolean, list-valued, nested, null and missing fields) select the same ids in the LocalStore and in
OpenSearch (real node), in counts, id listings and the filtered k-NN search."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opensearchpy import OpenSearch

from gemsearch.manifest import ModelManifest, PoolingSpec
from gemsearch.plugin.query import Searcher, filter_warnings
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.stores.opensearch.index_admin import IndexOptions
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore
from gemsearch.protocols import Record, VectorStore

DIMS = 8
WORDS = ("Red", "red", "blue", "5", "10", "2021-05-01", "b", "B")
NUMBERS = (-2.5, -1.0, 0.0, 0.5, 3.0, 5.0, 7.5, 10.0, 12.0)  # exact in float32: no rounding apart


def _manifest() -> ModelManifest:
    return ModelManifest(
        name="parity",
        version=hashlib.sha256(b"parity").hexdigest(),
        backbone="resnet50",
        pooling=PoolingSpec(kind="gem", p=3.0),
        output_dim=DIMS,
    )


def _maybe(rng: random.Random, value: Any) -> Any:
    """``value``, or (sometimes) null, so a field may be null or missing."""
    return None if rng.random() < 0.15 else value


def _metadata(rng: random.Random, i: int) -> dict[str, Any]:
    meta: dict[str, Any] = {
        # the first document fixes each field's mapping in OpenSearch: text, float, long, boolean
        "photo": WORDS[0] if i == 0 else _maybe(rng, rng.choice(WORDS)),
        "score": NUMBERS[3] if i == 0 else _maybe(rng, rng.choice(NUMBERS)),
        "year": 2020 if i == 0 else _maybe(rng, rng.randint(2015, 2025)),
        "flag": True if i == 0 else _maybe(rng, rng.random() < 0.5),
        "tags": rng.sample(WORDS, rng.randint(0, 3)),
        "camera": {"model": rng.choice(("x100", "X100", "q2")), "iso": rng.choice((100, 200, 400))},
    }
    if i and rng.random() < 0.2:
        del meta["photo"]
    return meta


def _filter(rng: random.Random) -> dict[str, Any]:
    """One or two conditions of any kind on any field: values of the field's kind or of another."""
    fields = ("photo", "score", "year", "flag", "tags", "camera.model", "camera.iso")
    anything = [*WORDS, *NUMBERS, 2018, 2021, 100, 400, True, False, "x100", "q2"]
    out: dict[str, Any] = {}
    for field in rng.sample(fields, rng.randint(1, 2)):
        shape = rng.choice(("term", "terms", "range"))
        if shape == "term":
            out[field] = rng.choice(anything)
        elif shape == "terms":
            out[field] = rng.sample(anything, rng.randint(1, 4))
        else:
            strings = rng.random() < 0.3
            pool = WORDS if strings else [*NUMBERS, 2017, 2021, 150]
            ops = rng.sample(("gt", "gte", "lt", "lte"), rng.randint(1, 2))
            out[field] = {op: rng.choice(pool) for op in ops}
    return out


@pytest.fixture(scope="module")
def both(
    tmp_path_factory: pytest.TempPathFactory, opensearch: OpenSearch
) -> Iterator[tuple[VectorStore, VectorStore]]:
    rng = random.Random(7)
    vectors = np.random.default_rng(7).standard_normal((120, DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = [Record(id=f"d{i:03d}", vector=v, metadata=_metadata(rng, i)) for i, v in enumerate(vectors)]
    local = LocalStore(Path(tmp_path_factory.mktemp("parity")) / "store")
    local.ensure_index(_manifest())
    local.upsert(records)
    prefix = f"parity{random.Random().randrange(10**9)}"
    remote = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    remote.ensure_index(_manifest())
    remote.upsert(records)
    yield local, remote
    local.close()
    opensearch.indices.delete(index=f"{prefix}-*")


def test_random_filters_select_the_same_documents_in_both_stores(
    both: tuple[VectorStore, VectorStore],
) -> None:
    local, remote = both
    rng = random.Random(11)
    query = np.ones(DIMS, np.float32) / np.sqrt(DIMS)
    matched_some = 0
    for _ in range(150):
        filters = _filter(rng)
        ids = set(local.ids_matching(filters))
        assert set(remote.ids_matching(filters)) == ids, filters
        assert remote.count(filters) == local.count(filters) == len(ids), filters
        hits = {h.id for h in remote.search(query, k=200, filters=filters)}
        assert hits == {h.id for h in local.search(query, k=200, filters=filters)} == ids, filters
        matched_some += bool(ids)
    assert 15 <= matched_some < 150  # the filters are neither all empty nor all trivial


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"photo": {"gte": 5}}, 0),  # numbers never compare with the strings "5", "10"
        ({"photo": "red"}, None),  # exact and case-sensitive: not "Red"
        ({"flag": "true"}, 0),  # a string never matches a boolean
        ({"year": "2020"}, 0),  # nor a number
    ],
)
def test_filters_of_another_kind_than_the_field_match_nothing_in_both(
    both: tuple[VectorStore, VectorStore], filters: dict[str, Any], expected: int | None
) -> None:
    local, remote = both
    assert local.count(filters) == remote.count(filters)
    if expected is not None:
        assert remote.count(filters) == expected
    else:
        exact = {i for i in local.ids_matching(filters)}
        assert exact and set(remote.ids_matching(filters)) == exact


def test_a_range_on_a_text_field_says_why_it_matched_nothing(both: tuple[VectorStore, VectorStore]) -> None:
    for store in both:
        lines = filter_warnings(store, {"photo": {"gte": 5}, "year": {"gte": 2000}})
        assert lines == ["the field 'photo' holds only text values, so the numeric range matches nothing"]
        assert filter_warnings(store, {"flag": "yes"}) == [
            "the field 'flag' holds only boolean values, so the text value matches nothing"
        ]
        assert filter_warnings(store, {"photo": "red", "year": [2020, 2021]}) == []


class _Embedder:
    """A query embedder of the parity manifest (the search below goes by id: no image)."""

    manifest = _manifest()
    decode = "draft"


def test_a_search_that_found_nothing_carries_the_warning(both: tuple[VectorStore, VectorStore]) -> None:
    for store in both:
        searcher = Searcher.__new__(Searcher)  # no embedder needed to search by id
        searcher.embedder, searcher.store = _Embedder(), store  # type: ignore[assignment]
        result = searcher.search_by_id("d001", k=3, filters={"photo": {"gte": 5}})
        assert result.hits == []
        assert result.unknown_filter_fields == []
        assert result.filter_warnings == [
            "the field 'photo' holds only text values, so the numeric range matches nothing"
        ]
