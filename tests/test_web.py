"""The HTTP API over real HTTP (uvicorn on loopback): search, models, images, limits, errors, both stores."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from live_server import free_port, serving
from opensearch_harness import OpenSearchNode
from opensearchpy import OpenSearch
from PIL import Image
from query_data import Photo, fill_store, tiny_model, write_photos

from gemsearch.plugin._index_checks import IndexOptions
from gemsearch.plugin.local_store import LocalStore
from gemsearch.plugin.onnx_embedder import OnnxEmbedder
from gemsearch.plugin.opensearch_store import OpenSearchStore
from gemsearch.plugin.web.app import create_app
from gemsearch.plugin.web.config import Limits, LocalStoreSpec, ModelSpec, OpenSearchStoreSpec, ServeConfig
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
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok", "models": {"tiny": True}}
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
        assert body["crop"] == [w // 5, h // 5, w // 5 + w * 3 // 5, h // 5 + h * 3 // 5]
        assert photo.id in [hit["id"] for hit in body["hits"]]
    body = post(url, image_file(photos[1]), k=10, filters=json.dumps({"group": "even"})).json()
    assert {hit["id"] for hit in body["hits"]} == {p.id for p in photos if p.metadata["group"] == "even"}
    assert [hit["rank"] for hit in body["hits"]] == list(range(1, len(body["hits"]) + 1))
    body = post(url, image_file(photos[0]), k=2, expand=2).json()
    assert body["expand"] == 2 and len(body["hits"]) == 2 and body["timings"]["expand_ms"] > 0


def test_search_by_id(url: str, data: Data) -> None:
    _, photos = data
    body = post(url, id=photos[2].id, k=3).json()
    assert len(body["hits"]) == 3 and photos[2].id not in {hit["id"] for hit in body["hits"]}
    response = post(url, id="no-such-document")
    assert response.status_code == 400 and "no document" in error_of(response)["message"]


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


def test_uploads_over_the_byte_limit_are_refused_before_parsing(url: str) -> None:
    big = os.urandom(400_000)
    response = post(url, {"image": ("big.jpg", big, "image/jpeg")})
    assert response.status_code == 413 and error_of(response)["code"] == "too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        for _ in range(50):
            yield os.urandom(10_000)

    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    response = requests.post(f"{url}/api/search", data=chunks(), headers=headers, timeout=30)
    assert response.status_code == 413


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
    for asset in ("app.js", "cropper.js", "style.css"):
        assert requests.get(f"{url}/static/{asset}", timeout=10).status_code == 200
    # no CDN anywhere on the page: every script and stylesheet comes from this server
    assert "http://" not in page.text and "https://" not in page.text
    schema = requests.get(f"{url}/openapi.json", timeout=10).json()
    assert {"/api/search", "/api/models", "/api/images/{doc_id}", "/healthz"} <= set(schema["paths"])
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
