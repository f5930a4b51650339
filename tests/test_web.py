"""The HTTP API over real HTTP (uvicorn on loopback): search, models, images, limits, errors, both stores."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from opensearchpy import OpenSearch
from PIL import Image, ImageFile
from support.live_server import free_port, serving
from support.opensearch_harness import OpenSearchNode
from support.query_data import Photo, fill_store, tiny_model, write_photos

from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.inputs.images import ImageLoadConfig
from gemsearch.plugin.inputs.memory import MemoryBudget
from gemsearch.plugin.inputs.rgb import to_rgb
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore
from gemsearch.plugin.web.app import create_app
from gemsearch.plugin.web.config import (
    Limits,
    LocalStoreSpec,
    ModelSpec,
    OpenSearchStoreSpec,
    ServeConfig,
    StoreSpec,
)
from gemsearch.plugin.web.image_files import ImageFiles
from gemsearch.plugin.web.page_api import hit_title
from gemsearch.protocols import Record

Data = tuple[Path, list[Photo]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    root = tmp_path_factory.mktemp("web")
    photos = write_photos(root / "photos", max_side=200)
    tiny_model(root / "tiny.onnx")
    with LocalStore(root / "store") as store:
        fill_store(store, OnnxEmbedder(root / "tiny.onnx"), photos)
    return root, photos


def local_config(root: Path, **limits: Any) -> ServeConfig:
    return ServeConfig(
        models=(ModelSpec(path=root / "tiny.onnx", store=LocalStoreSpec(path=root / "store")),),
        image_roots=(root / "photos",),
        limits=Limits(**limits),
    )


@pytest.fixture(scope="module")
def url(data: Data) -> Iterator[str]:
    root, _ = data
    with serving(
        create_app(local_config(root, max_upload_bytes=300_000, max_pixels=60_000, searches_per_minute=0))
    ) as base:
        yield base


def post(base: str, files: dict[str, Any] | None = None, **fields: Any) -> requests.Response:
    return requests.post(f"{base}/api/search", files=files, data=fields, timeout=30)


def image_file(photo: Photo) -> dict[str, Any]:
    return {"image": (photo.path.name, photo.path.read_bytes(), "image/jpeg")}


def error_of(response: requests.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return body["error"]  # type: ignore[no-any-return]


def test_health_models_and_settings(url: str, data: Data) -> None:
    health = requests.get(f"{url}/healthz", timeout=10).json()
    assert health == {"status": "ok", "models": {"tiny": True}, "problems": {}}
    (model,) = requests.get(f"{url}/api/models", timeout=10).json()
    assert model["name"] == "tiny" and model["dims"] == 32 and model["backbone"] == "tinyconv"
    assert model["documents"] == len(data[1]) and model["default"] and model["store"] == "local"
    assert model["index"] == "store"
    settings = requests.get(f"{url}/api/settings", timeout=10).json()
    assert settings["max_upload_bytes"] == 300_000 and settings["images"] is True


def test_a_crop_finds_its_photo_and_filters_restrict(url: str, data: Data) -> None:
    _, photos = data
    for photo in photos:
        with Image.open(photo.path) as im:
            w, h = im.size
        crop = f"{w // 5},{h // 5},{w * 3 // 5},{h * 3 // 5}"
        response = post(url, image_file(photo), crop=crop, k=3)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["crop"] == [w // 5, h // 5, w * 3 // 5, h * 3 // 5]  # x,y,w,h as sent
        assert body["crop_box"] == [w // 5, h // 5, w // 5 + w * 3 // 5, h // 5 + h * 3 // 5]
        assert photo.id in [hit["id"] for hit in body["hits"]]
    body = post(url, image_file(photos[1]), k=10, filters=json.dumps({"group": "even"})).json()
    assert {hit["id"] for hit in body["hits"]} == {p.id for p in photos if p.metadata["group"] == "even"}
    assert [hit["rank"] for hit in body["hits"]] == list(range(1, len(body["hits"]) + 1))
    body = post(url, image_file(photos[0]), k=2, expand=2).json()
    assert body["expand"] == 2 and len(body["hits"]) == 2 and body["timings"]["expand_ms"] > 0


def test_a_filter_on_a_field_no_document_has_is_named(url: str, data: Data) -> None:
    _, photos = data
    filters = json.dumps({"album": "x", "camera.model": "y", "group": "even"})
    body = post(url, image_file(photos[0]), k=3, filters=filters).json()
    assert body["hits"] == [] and body["unknown_filter_fields"] == ["album", "camera.model"]
    body = post(url, image_file(photos[0]), k=3, filters=json.dumps({"group": "none"})).json()
    assert body["hits"] == [] and body["unknown_filter_fields"] == []
    body = post(url, image_file(photos[0]), k=3, filters=json.dumps({"group": "even"})).json()
    assert body["hits"] and body["unknown_filter_fields"] == []


def test_scores_are_cosines_rounded_to_6_decimals(url: str, data: Data) -> None:
    _, photos = data
    scores = [hit["score"] for p in photos for hit in post(url, image_file(p), k=5).json()["hits"]]
    assert scores and all(-1 <= s <= 1 and round(s, 6) == s for s in scores), scores
    assert max(scores) > 0.99  # a photo finds itself


def test_search_by_id(url: str, data: Data) -> None:
    _, photos = data
    body = post(url, id=photos[2].id, k=3).json()
    assert len(body["hits"]) == 3 and photos[2].id not in {hit["id"] for hit in body["hits"]}
    response = post(url, id="no-such-document")
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert error_of(response)["message"].startswith("no document 'no-such-document'")


def test_a_json_body_is_told_the_search_takes_a_form(url: str, data: Data) -> None:
    response = requests.post(f"{url}/api/search", json={"id": data[1][0].id}, timeout=30)
    assert response.status_code == 400
    message = error_of(response)["message"]
    assert "multipart/form-data" in message and "/api/embed" not in message  # not served here


def _jpeg(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(out, format="JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("files", "fields", "status", "code"),
    [
        ({"image": ("a.txt", b"hello, not an image", "text/plain")}, {}, 415, "not_an_image"),
        ({"image": ("big.jpg", _jpeg((300, 300)), "image/jpeg")}, {}, 413, "too_many_pixels"),
        ({"image": ("cut.jpg", _jpeg((100, 80))[:300], "image/jpeg")}, {}, 422, "truncated_image"),
        ({"image": ("e.jpg", b"", "image/jpeg")}, {}, 400, "empty_image"),
        (None, {}, 400, "bad_request"),
        ({"image": ("a.jpg", _jpeg((50, 40)), "image/jpeg")}, {"id": "x"}, 400, "bad_request"),
        ({"image": ("a.jpg", _jpeg((50, 40)), "image/jpeg")}, {"k": "0"}, 422, "invalid_request"),
        ({"image": ("a.jpg", _jpeg((50, 40)), "image/jpeg")}, {"k": "many"}, 422, "invalid_request"),
        ({"image": ("a.jpg", _jpeg((50, 40)), "image/jpeg")}, {"crop": "0,0,60,10"}, 400, "bad_request"),
        ({"image": ("a.jpg", _jpeg((50, 40)), "image/jpeg")}, {"crop": "zero"}, 400, "bad_request"),
        ({"image": ("a.jpg", _jpeg((50, 40)), "image/jpeg")}, {"filters": "{"}, 400, "bad_request"),
        ({"image": ("a.jpg", _jpeg((50, 40)), "image/jpeg")}, {"filters": '{"a b": 1}'}, 400, "bad_request"),
        ({"image": ("a.jpg", _jpeg((50, 40)), "image/jpeg")}, {"model": "nope"}, 404, "unknown_model"),
        ({"image": ("a.jpg", _jpeg((50, 40)), "image/jpeg")}, {"expand": "500"}, 422, "invalid_request"),
    ],
)
def test_bad_requests_get_4xx_json(
    url: str, files: dict[str, Any] | None, fields: dict[str, str], status: int, code: str
) -> None:
    response = post(url, files, **fields)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code


def test_a_crop_outside_the_image_is_echoed_as_typed(url: str) -> None:
    response = post(url, {"image": ("a.jpg", _jpeg((50, 40)), "image/jpeg")}, crop="10, 20,50,30")
    assert response.status_code == 400, response.text
    assert error_of(response)["message"] == "crop 10,20,50,30 (x,y,w,h) leaves the 50x40 image"


def test_uploads_over_the_byte_limit_are_refused_before_parsing(url: str) -> None:
    big = os.urandom(400_000)
    response = post(url, {"image": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413 and error_of(response)["code"] == "too_large"
    limit = requests.get(f"{url}/api/settings", timeout=10).json()["max_upload_bytes"]
    assert error_of(response)["message"] == f"the upload is larger than {limit} bytes"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        for _ in range(50):
            yield os.urandom(10_000)

    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    response = requests.post(f"{url}/api/search", data=chunks(), headers=headers, timeout=30)
    assert response.status_code == 413


def test_more_large_uploads_than_threads_waiting_for_memory_never_deadlock(
    data: Data, tmp_path: Path
) -> None:
    # each upload's decode takes the whole decode budget, so they run one at a time; more of them
    # than the default thread pool (40) must not park its threads while the one holding the memory
    # needs a thread to read its spooled file
    root, _ = data
    noise = np.random.default_rng(0).integers(0, 256, (2400, 2400, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=70)
    blob = buf.getvalue()
    assert len(blob) > 2**20  # spooled to disk by the multipart parser
    app = create_app(local_config(root, decode_memory_mb=64, searches_per_minute=0))
    with serving(app) as base, ThreadPoolExecutor(48) as pool:
        files = {"image": ("big.jpg", blob, "image/jpeg")}
        answers = list(pool.map(lambda _: post(base, files=files, k=1), range(48)))
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 503} and codes.count(200) >= 4, codes
    assert all(error_of(r)["code"] == "busy" for r in answers if r.status_code == 503)


def test_images_are_served_only_from_the_roots(url: str, data: Data) -> None:
    _, photos = data
    photo = photos[0]
    full = requests.get(f"{url}/api/images/{photo.id}?model=tiny&size=full", timeout=10)
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    assert full.content == photo.path.read_bytes()
    thumb = requests.get(f"{url}/api/images/{photo.id}", timeout=10)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as im:
        assert max(im.size) <= 320
    for bad in ("nope", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
        response = requests.get(f"{url}/api/images/{bad}", timeout=10)
        assert response.status_code == 404, bad
        assert error_of(response)["code"] == "not_found"
    assert requests.get(f"{url}/api/images/{photo.id}?size=huge", timeout=10).status_code == 422


def test_an_image_named_in_bytes_that_are_not_utf8_is_served(tmp_path: Path, data: Data) -> None:
    from gemsearch.image_refs import image_ref_of

    root, photos = data
    odd = tmp_path / "photos" / os.fsdecode(b"caf\xe9 \xff.jpg")
    odd.parent.mkdir()
    odd.write_bytes(photos[0].path.read_bytes())
    outside = tmp_path / os.fsdecode(b"\xfe.jpg")
    outside.write_bytes(photos[0].path.read_bytes())
    embedder = OnnxEmbedder(root / "tiny.onnx")
    vector = embedder.embed([Image.new("RGB", (32, 32))])[0]
    with LocalStore(tmp_path / "store") as store:
        store.ensure_index(embedder.manifest)
        store.upsert(
            [
                Record(id="odd", vector=vector, image_ref=image_ref_of(odd)),
                Record(id="out", vector=vector, image_ref=image_ref_of(outside)),
            ]
        )
    config = ServeConfig(
        models=(ModelSpec(path=root / "tiny.onnx", store=LocalStoreSpec(path=tmp_path / "store")),),
        image_roots=(tmp_path / "photos",),
    )
    with serving(create_app(config)) as base:
        full = requests.get(f"{base}/api/images/odd?size=full", timeout=10)
        assert full.status_code == 200 and full.content == odd.read_bytes()
        assert requests.get(f"{base}/api/images/odd", timeout=10).status_code == 200
        assert requests.get(f"{base}/api/images/out?size=full", timeout=10).status_code == 404


def test_image_refs_leaving_the_roots_are_not_served(tmp_path: Path, data: Data) -> None:
    root, photos = data
    (tmp_path / "photos").mkdir()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(photos[0].path.read_bytes())
    (tmp_path / "photos" / "link.jpg").symlink_to(secret)
    (tmp_path / "photos" / "ok.jpg").write_bytes(photos[1].path.read_bytes())
    embedder = OnnxEmbedder(root / "tiny.onnx")
    refs = {
        "rel": "../secret.jpg",
        "abs": str(secret),
        "link": "link.jpg",
        "ok": "ok.jpg",
        "etc": "/etc/passwd",
        "dir/ok": "ok.jpg",  # ids given by manifests may hold slashes
    }
    vector = embedder.embed([Image.new("RGB", (32, 32))])[0]
    with LocalStore(tmp_path / "store") as store:
        store.ensure_index(embedder.manifest)
        store.upsert([Record(id=name, vector=vector, image_ref=ref) for name, ref in refs.items()])
    config = ServeConfig(
        models=(ModelSpec(path=root / "tiny.onnx", store=LocalStoreSpec(path=tmp_path / "store")),),
        image_roots=(tmp_path / "photos",),
    )
    with serving(create_app(config)) as base:
        for name in refs:
            for size in ("thumb", "full"):
                response = requests.get(f"{base}/api/images/{name}?size={size}", timeout=10)
                expected = 200 if name.endswith("ok") else 404
                assert response.status_code == expected, (name, size, response.text)
                assert str(tmp_path) not in response.text  # no server paths in errors


def test_rate_limit(data: Data) -> None:
    root, photos = data
    config = local_config(root, searches_per_minute=1, search_burst=2)
    with serving(create_app(config)) as base:
        codes = [post(base, id=photos[0].id, k=1).status_code for _ in range(3)]
        assert codes[:2] == [200, 200] and codes[2] == 429
        response = post(base, id=photos[0].id, k=1)
        assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1
        assert error_of(response)["code"] == "rate_limited"


def test_page_static_schema_and_headers(url: str) -> None:
    page = requests.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and "<title>gemsearch" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ("app.js", "cropper.js", "filters.js", "messages.js", "results.js", "style.css"):
        assert requests.get(f"{url}/static/{asset}", timeout=10).status_code == 200
    # no CDN anywhere on the page: every script and stylesheet comes from this server
    assert "http://" not in page.text and "https://" not in page.text
    schema = requests.get(f"{url}/openapi.json", timeout=10).json()
    paths = {"/api/search", "/api/models", "/api/fields", "/api/images/{doc_id}", "/healthz"}
    assert paths <= set(schema["paths"])
    assert requests.get(f"{url}/docs", timeout=10).status_code == 404  # the CDN-based docs page is off
    response = requests.get(f"{url}/api/nothing", timeout=10)
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"
    assert requests.get(f"{url}/api/search", timeout=10).status_code == 405


def test_store_down_is_503_without_cluster_details(data: Data) -> None:
    root, photos = data
    dead = f"http://127.0.0.1:{free_port()}"
    store = OpenSearchStoreSpec(prefix="gone", urls=(dead,))
    config = ServeConfig(models=(ModelSpec(path=root / "tiny.onnx", store=store),))
    with serving(create_app(config)) as base:
        response = post(base, image_file(photos[0]), k=3)
        assert response.status_code == 503
        assert error_of(response)["code"] == "unavailable" and "127.0.0.1" not in response.text
        assert requests.get(f"{base}/healthz", timeout=30).status_code == 503
        (model,) = requests.get(f"{base}/api/models", timeout=30).json()
        assert model["documents"] is None and model["index"] == "gone-tiny"


def test_opensearch_backed_app(
    data: Data, opensearch: OpenSearch, opensearch_node: OpenSearchNode, prefix: str
) -> None:
    root, photos = data
    fill_store(
        OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix)),
        OnnxEmbedder(root / "tiny.onnx"),
        photos,
    )
    store = OpenSearchStoreSpec(prefix=prefix, urls=(opensearch_node.url,))
    config = ServeConfig(
        models=(ModelSpec(path=root / "tiny.onnx", store=store),), image_roots=(root / "photos",)
    )
    with serving(create_app(config)) as base:
        (model,) = requests.get(f"{base}/api/models", timeout=10).json()
        assert model["store"] == "opensearch" and model["documents"] == len(photos)
        for photo in photos[:3]:
            with Image.open(photo.path) as im:
                w, h = im.size
            body = post(base, image_file(photo), crop=f"{w // 4},{h // 4},{w // 2},{h // 2}", k=3).json()
            assert photo.id in [hit["id"] for hit in body["hits"]]
            assert opensearch_node.url not in json.dumps(body)
        body = post(base, image_file(photos[0]), k=10, filters=json.dumps({"year": {"gte": 2004}})).json()
        assert sorted(hit["metadata"]["year"] for hit in body["hits"]) == [2004, 2005, 2006]
        thumb = requests.get(f"{base}{body['hits'][0]['thumbnail_url']}", timeout=10)
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"


def test_a_model_without_an_index_is_a_404_that_says_how_to_make_one(
    data: Data, opensearch_node: OpenSearchNode, prefix: str
) -> None:
    root, photos = data
    store = OpenSearchStoreSpec(prefix=prefix, urls=(opensearch_node.url,))  # the cluster is up
    config = ServeConfig(models=(ModelSpec(path=root / "tiny.onnx", store=store),))
    hint = "no index for model tiny yet: run gemsearch ingest or gemsearch index create"
    with serving(create_app(config)) as base:
        for response in (
            post(base, image_file(photos[0]), k=3),
            post(base, id="x"),
            requests.get(f"{base}/api/fields", timeout=30),
        ):
            assert response.status_code == 404, response.text
            assert error_of(response) == {"code": "no_index", "message": hint}
        health = requests.get(f"{base}/healthz", timeout=30)
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "models": {"tiny": False}, "problems": {"tiny": hint}}


def test_serve_config_file_paths_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "serve.yaml").write_text(
        "models:\n  - path: m.onnx\n    store: {kind: local, path: store}\n"
        "  - path: /abs/n.onnx\n    store: {kind: opensearch, prefix: p, config: conn.yaml}\n"
        "image_roots: [photos]\nlimits: {max_k: 7}\n"
    )
    config = ServeConfig.load(tmp_path / "serve.yaml")
    assert config.models[0].path == tmp_path / "m.onnx"
    assert config.models[0].store.path == tmp_path / "store"  # type: ignore[union-attr]
    assert config.models[1].path == Path("/abs/n.onnx")
    assert config.models[1].store.config == tmp_path / "conn.yaml"  # type: ignore[union-attr]
    assert config.image_roots == (tmp_path / "photos",) and config.limits.max_k == 7


def test_crop_is_in_upright_pixels(url: str, data: Data) -> None:
    """A photo stored sideways with an EXIF orientation is cropped as it is shown (upright)."""
    _, photos = data
    with Image.open(photos[4].path) as im:
        upright = im.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to show"
    sideways, plain = io.BytesIO(), io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(sideways, format="PNG", exif=exif.tobytes())
    upright.save(plain, format="PNG")
    w, h = upright.size
    crop = f"{w // 4},{h // 3},{w // 2},{h // 2}"
    answers = [
        post(url, {"image": ("q.png", payload, "image/png")}, crop=crop, k=7).json()
        for payload in (sideways.getvalue(), plain.getvalue())
    ]
    assert [h["id"] for h in answers[0]["hits"]] == [h["id"] for h in answers[1]["hits"]]
    assert [h["score"] for h in answers[0]["hits"]] == pytest.approx([h["score"] for h in answers[1]["hits"]])


def test_parallel_searches_agree(url: str, data: Data) -> None:
    """Searches from many clients at once (threads share the model and the store) give the same hits."""
    from concurrent.futures import ThreadPoolExecutor

    _, photos = data

    def one(i: int) -> list[str]:
        photo = photos[i % len(photos)]
        response = post(url, image_file(photo), k=3)
        assert response.status_code == 200, response.text
        return [hit["id"] for hit in response.json()["hits"]]

    alone = [one(i) for i in range(len(photos))]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(one, range(4 * len(photos))))
    assert together == alone * 4


# ----------------------------------------------------------------------------- hostile clients


def raw_request(base: str, head: str, body: bytes = b"") -> socket.socket:
    """A connection that has sent ``head`` (request line and headers) and ``body``, and no more."""
    host, port = base.removeprefix("http://").split(":")
    conn = socket.create_connection((host, int(port)), timeout=10)
    conn.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return conn


def read_answer(conn: socket.socket, until: bytes | None = None) -> bytes:
    """What the server sends until it closes the connection, goes quiet, or has sent ``until``."""
    answer = b""
    with contextlib.suppress(TimeoutError):
        while chunk := conn.recv(65536):
            answer += chunk
            if until is not None and until in answer:
                break
    return answer


def multipart_head(path: str, length: int) -> str:
    return (
        f"POST {path} HTTP/1.1\nHost: test\nContent-Type: multipart/form-data; boundary=xyz\n"
        f"Content-Length: {length}\n"
    )


@pytest.mark.parametrize(
    "filters",
    [
        "[" * 5000 + "]" * 5000,
        '{"a":' * 2500 + "1" + "}" * 2500,  # 15,001 characters: within the field's length
        '{"year": {"gte": [[[[[[[[[[1]]]]]]]]]]}}',
    ],
)
def test_deeply_nested_filters_are_a_400(url: str, data: Data, filters: str) -> None:
    _, photos = data
    response = post(url, id=photos[0].id, filters=filters)
    assert response.status_code == 400, response.text[:300]
    assert error_of(response)["code"] == "bad_request" and "nests deeper" in error_of(response)["message"]
    assert post(url, id=photos[0].id, k=1).status_code == 200  # the server is still there


def test_over_the_rate_a_search_is_refused_before_its_body_is_read(data: Data) -> None:
    root, photos = data
    with serving(create_app(local_config(root, searches_per_minute=1, search_burst=1))) as base:
        assert post(base, id=photos[0].id, k=1).status_code == 200
        started = time.monotonic()
        conn = raw_request(base, multipart_head("/api/search", 200_000), b"--xyz\r\n")  # body never sent
        with conn:
            conn.settimeout(5)
            answer = read_answer(conn, until=b"slow down")
        assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
        assert b"retry-after" in answer.lower() and time.monotonic() - started < 5


def test_a_body_that_trickles_in_gets_408_and_the_connection_closed(data: Data) -> None:
    root, photos = data
    config = local_config(root, searches_per_minute=0, body_timeout_s=1)
    with serving(create_app(config)) as base:
        started = time.monotonic()
        conn = raw_request(base, multipart_head("/api/search", 5_000), b"--xyz\r\n")
        with conn:
            for _ in range(8):  # a byte every 0.4 s: never idle for long, never done
                with contextlib.suppress(OSError):
                    conn.sendall(b"a")
                time.sleep(0.4)
            conn.settimeout(5)
            answer = read_answer(conn)  # ends because the server closed the connection
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"code":"timeout"' in answer.replace(b" ", b"") and time.monotonic() - started < 8
        # chunked (no Content-Length): read by the body limit, also timed
        head = "POST /api/search HTTP/1.1\nHost: test\nTransfer-Encoding: chunked\n"
        with raw_request(base, head, b"1\r\na\r\n") as conn:
            conn.settimeout(5)
            assert read_answer(conn).startswith(b"HTTP/1.1 408")
        assert post(base, id=photos[0].id, k=1).status_code == 200  # a normal request still works


def test_concurrent_thumbnail_misses_decode_once_at_reduced_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve requests at once for a cold 4000x3000 thumbnail: one decode, by DCT scaling."""
    (tmp_path / "big.jpg").write_bytes(_jpeg((4000, 3000)))
    files = ImageFiles([tmp_path], ImageLoadConfig(), thumbnail_side=320)
    decoded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def slow_load(self: ImageFile.ImageFile) -> Any:
        if getattr(self, "_im", None) is None:  # a real decode, not an already-loaded image
            decoded.append(self.size)
            time.sleep(0.3)  # the other requests arrive while it decodes
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", slow_load)
    with ThreadPoolExecutor(12) as pool:
        thumbs = list(pool.map(lambda _: files.thumbnail("big.jpg"), range(12)))
    assert len(set(thumbs)) == 1 and len(decoded) == 1, decoded
    assert decoded[0][0] * decoded[0][1] <= 4000 * 3000 // 16  # at most a quarter of each side
    with Image.open(io.BytesIO(thumbs[0])) as im:
        assert im.size == (320, 240)


def test_thumbnails_of_every_mode_are_upright_rgb(tmp_path: Path) -> None:
    files = ImageFiles([tmp_path], ImageLoadConfig(), thumbnail_side=64)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown 300 wide, 400 high
    Image.new("RGB", (400, 300), (200, 10, 10)).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    grey16 = Image.fromarray(np.full((300, 400), 65535, dtype=np.uint16))
    grey16.save(tmp_path / "grey16.png")
    Image.new("RGBA", (400, 300), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("P", (400, 300), 3).save(tmp_path / "palette.gif")
    expected = {"rot.jpg": (48, 64), "grey16.png": (64, 48), "clear.png": (64, 48), "palette.gif": (64, 48)}
    for name, size in expected.items():
        with Image.open(io.BytesIO(files.thumbnail(name))) as im:
            assert (im.mode, im.size) == ("RGB", size), name
            if name in ("grey16.png", "clear.png"):  # full white, transparency on white
                assert min(im.getpixel((10, 10))) >= 250, name  # type: ignore[arg-type]


def test_the_memory_budget_admits_in_order_and_within_the_limit() -> None:
    budget = MemoryBudget(100)
    inside: list[int] = []
    seen: list[list[int]] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        with budget.hold(n):
            with lock:
                inside.append(n)
                seen.append(list(inside))
            time.sleep(0.05)
            with lock:
                inside.remove(n)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(work, [60, 60, 30, 500, 10, 40]))
    assert all(sum(min(n, 100) for n in together) <= 100 for together in seen), seen
    assert [500] in seen and budget.used == 0  # more than the whole budget: alone


def test_16_bit_uploads_are_converted_without_full_size_wide_copies() -> None:
    """numpy's allocations are traced: a 3000x3000 16-bit image takes no 32/64-bit full copy."""
    image = Image.fromarray(np.tile(np.arange(3000, dtype=np.uint16) * 20, (3000, 1)))
    tracemalloc.start()
    try:
        rgb = to_rgb(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rgb.mode == "RGB" and rgb.getpixel((2999, 0)) == (233, 233, 233)  # 59980 * 255 / 65535
    assert peak < 3 * 3000 * 3000, f"{peak / 2**20:.0f} MB"


def test_a_paused_cluster_is_503_within_the_store_timeout(
    data: Data, opensearch: OpenSearch, opensearch_node: OpenSearchNode, prefix: str
) -> None:
    root, photos = data
    fill_store(
        OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix)),
        OnnxEmbedder(root / "tiny.onnx"),
        photos[:2],
    )
    store = OpenSearchStoreSpec(prefix=prefix, urls=(opensearch_node.url,))
    config = ServeConfig(
        models=(ModelSpec(path=root / "tiny.onnx", store=store),),
        limits=Limits(store_timeout_s=1, searches_per_minute=0),
    )
    with serving(create_app(config)) as base:
        assert requests.get(f"{base}/healthz", timeout=30).status_code == 200
        opensearch_node.pause()
        try:
            started = time.monotonic()
            health = requests.get(f"{base}/healthz", timeout=30)
            search = post(base, image_file(photos[0]), k=2)
            took = time.monotonic() - started
        finally:
            opensearch_node.resume()
        assert health.status_code == 503 and health.json()["models"] == {"tiny": False}
        assert search.status_code == 503 and error_of(search)["code"] == "unavailable"
        assert took < 8, f"{took:.1f} s for a health check and a search"


def _rich_photos(photos: list[Photo], mixed: bool = False) -> list[Photo]:
    """The photos with nested, boolean, list, null (and mixed-kind: OpenSearch refuses those)
    metadata; the first has no camera."""
    out = []
    for i, p in enumerate(photos):
        extra: dict[str, Any] = {"flagged": i % 2 == 0, "tags": ["a", f"t{i}"], "gone": None}
        if mixed:
            extra["mixed"] = 1 if i == 0 else "one"
        if i:
            extra["camera"] = {"model": f"cam-{i}", "iso": 100 * i}
        out.append(dataclasses.replace(p, metadata={**p.metadata, **extra}))
    return out


RICH_FIELDS = {
    "camera.iso": ["number"],
    "camera.model": ["text"],
    "flagged": ["boolean"],
    "group": ["text"],
    "name": ["text"],
    "tags": ["text"],
    "year": ["number"],
}


def _check_fields_and_titles(store: StoreSpec, data: Data, extra_fields: dict[str, list[str]]) -> None:
    root, photos = data
    rich = _rich_photos(photos)
    config = ServeConfig(
        models=(ModelSpec(path=root / "tiny.onnx", store=store),),
        image_roots=(root / "photos",),
        limits=Limits(searches_per_minute=0),
        title_field="camera.model",
    )
    with serving(create_app(config)) as base:
        answer = requests.get(f"{base}/api/fields", params={"model": "tiny"}, timeout=30).json()
        assert answer["model"] == "tiny" and not answer["truncated"]
        fields = {f["name"]: f["kinds"] for f in answer["fields"]}
        assert fields == RICH_FIELDS | extra_fields  # the null "gone" is no field
        assert requests.get(f"{base}/api/settings", timeout=10).json()["title_field"] == "camera.model"
        body = post(base, image_file(rich[0]), k=len(rich), filters=json.dumps({"flagged": True})).json()
        assert {hit["id"] for hit in body["hits"]} == {p.id for p in rich if p.metadata["flagged"]}
        for hit in body["hits"]:
            photo = next(p for p in rich if p.id == hit["id"])
            assert hit["image_ref"] == str(photo.path)
            camera = photo.metadata.get("camera")
            assert hit["title"] == (camera["model"] if camera else photo.path.name)  # else the file name
        missing = requests.get(f"{base}/api/fields", params={"model": "nope"}, timeout=10)
        assert missing.status_code == 404 and error_of(missing)["code"] == "unknown_model"


def test_fields_and_titles_for_the_page_local(tmp_path: Path, data: Data) -> None:
    root, photos = data
    with LocalStore(tmp_path / "rich") as store:
        fill_store(store, OnnxEmbedder(root / "tiny.onnx"), _rich_photos(photos, mixed=True))
    _check_fields_and_titles(LocalStoreSpec(path=tmp_path / "rich"), data, {"mixed": ["number", "text"]})


def test_fields_and_titles_for_the_page_opensearch(
    data: Data, opensearch: OpenSearch, opensearch_node: OpenSearchNode, prefix: str
) -> None:
    root, photos = data
    store = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    fill_store(store, OnnxEmbedder(root / "tiny.onnx"), _rich_photos(photos))
    store.refresh()
    _check_fields_and_titles(OpenSearchStoreSpec(prefix=prefix, urls=(opensearch_node.url,)), data, {})


@pytest.mark.parametrize(
    ("ref", "metadata", "field", "title"),
    [
        ("/data/photos/a b.jpg", {"name": "x"}, None, "a b.jpg"),
        ("/data/photos/a.jpg", {"name": "x"}, "name", "x"),
        ("/data/photos/a.jpg", {"name": ""}, "name", "a.jpg"),
        ("/data/photos/a.jpg", {"who": ["ann", "bo"]}, "who", "ann, bo"),
        ("/data/photos/a.jpg", {"c": {"m": 5}}, "c", "a.jpg"),  # an object is no title
        ("file:///data/%FF.jpg", {}, None, "\\xff.jpg"),
        (None, {}, "name", "doc-1"),
    ],
)
def test_hit_titles(ref: str | None, metadata: dict[str, Any], field: str | None, title: str) -> None:
    assert hit_title("doc-1", ref, metadata, field) == title
