"""A fuzz pass over the HTTP API from its own OpenAPI schema (schemathesis): never a 5xx, and every
error is the documented JSON body."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from support.live_server import serving
from support.query_data import fill_store, tiny_model, write_photos

from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.web.app import create_app
from gemsearch.plugin.web.config import Limits, LocalStoreSpec, ModelSpec, ServeConfig

pytestmark = pytest.mark.slow
EXAMPLES = 40  # per operation and mode (valid and invalid requests)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    photos = write_photos(root / "photos", max_side=96, names=("coffee", "rocket", "chelsea"))
    tiny_model(root / "tiny.onnx")
    with LocalStore(root / "store") as store:
        fill_store(store, OnnxEmbedder(root / "tiny.onnx"), photos)
    config = ServeConfig(
        models=(ModelSpec(path=root / "tiny.onnx", store=LocalStoreSpec(path=root / "store")),),
        image_roots=(root / "photos",),
        limits=Limits(searches_per_minute=0, max_upload_bytes=2**20, max_pixels=4_000_000),
    )
    with serving(create_app(config)) as base:
        ROOTS[base] = root
        yield base


ROOTS: dict[str, Path] = {}


def root_of(url: str) -> Path:
    return ROOTS[url]


def test_no_server_errors_from_schema_driven_requests(url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/api/search",
        "/api/models",
        "/api/images/{doc_id}",
        "/healthz",
    }
    seen: dict[int, int] = {}
    photo = (root_of(url) / "photos" / "coffee.jpg").read_bytes()
    # each operation with generated requests, valid and invalid; then the search again with a real
    # photo in place of the generated file, so the fields are fuzzed past the image decoder too
    runs = [(op, mode, None) for op, mode in itertools.product(operations, GenerationMode)]
    runs += [(op, GenerationMode.POSITIVE, photo) for op in operations if op.path == "/api/search"]
    for operation, mode, image in runs:
        inputs = len(operation.query) + len(operation.path_parameters) + len(operation.body)
        if mode is GenerationMode.NEGATIVE and not inputs:
            continue  # nothing to make invalid

        fuzz(operation, mode, image, url, seen)
    print("status codes seen:", dict(sorted(seen.items())))
    assert any(400 <= s < 500 for s in seen) and seen.get(200, 0) > 10, seen  # both outcomes, many times


def fuzz(operation: Any, mode: GenerationMode, image: bytes | None, url: str, seen: dict[int, int]) -> None:
    """Send ``EXAMPLES`` generated requests for one operation (``image``: put this file in the body)."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        if image is not None and isinstance(case.body, dict):
            case.body["image"] = image
            case.body.pop("id", None)
        response = case.call(base_url=url, timeout=30)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text[:300]}"
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and body["error"]["message"], body

    check()
