"""With real descriptors (the default EfficientNet-Lite0 GeM model): a crop of an indexed photo finds
the full photo first, on both stores, and alpha-QE keeps it there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opensearchpy import OpenSearch
from PIL import Image
from support.query_data import PHOTOS, Photo, fill_store, write_photos

from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.query import Searcher
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore
from gemsearch.protocols import VectorStore

pytestmark = pytest.mark.slow
NAMES = PHOTOS
# (x1, y1, x2, y2) as fractions of the photo: regions around each photo's subject
REGIONS = ((0.1, 0.1, 0.7, 0.7), (0.25, 0.2, 0.85, 0.9), (0.3, 0.3, 0.9, 0.8))


@pytest.fixture(scope="session")
def lite0() -> OnnxEmbedder:
    """The default model, exported once (minutes) into the cache and reused afterwards."""
    from gemsearch.exporters.default_model import ensure_default_model

    return OnnxEmbedder(ensure_default_model())


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[Photo]:
    return write_photos(tmp_path_factory.mktemp("lite0") / "photos", max_side=384, names=NAMES)


@pytest.fixture(scope="module")
def local(
    tmp_path_factory: pytest.TempPathFactory, lite0: OnnxEmbedder, photos: list[Photo]
) -> Iterator[LocalStore]:
    store = LocalStore(tmp_path_factory.mktemp("lite0-store") / "store")
    fill_store(store, lite0, photos)
    yield store
    store.close()


@pytest.fixture
def remote(opensearch: OpenSearch, prefix: str, lite0: OnnxEmbedder, photos: list[Photo]) -> OpenSearchStore:
    store = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    fill_store(store, lite0, photos)
    return store


def _box(path: Path, region: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    with Image.open(path) as im:
        w, h = im.size
    return (region[0] * w, region[1] * h, region[2] * w, region[3] * h)


@pytest.mark.parametrize("store_name", ["local", "remote"])
def test_crops_find_the_full_photo_first(
    request: pytest.FixtureRequest, store_name: str, lite0: OnnxEmbedder, photos: list[Photo]
) -> None:
    store: VectorStore = request.getfixturevalue(store_name)
    searcher = Searcher(lite0, store)
    misses = []
    for photo in photos:
        for region in REGIONS:
            for expand in (None, 2):
                hits = searcher.search(photo.path, crop=_box(photo.path, region), k=3, expand=expand).hits
                if hits[0].id != photo.id:
                    misses.append((photo.name, region, expand, [h.metadata["name"] for h in hits]))
    assert not misses, misses
