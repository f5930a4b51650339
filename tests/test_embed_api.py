"""``POST /api/embed`` of a real ``gemsearch serve``: the descriptors are the ONNX embedder's, every
shape a connector sends is understood, and the token, body, pixel, URL and batch limits hold."""

from __future__ import annotations

import base64
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from click.testing import CliRunner
from PIL import Image
from support.query_data import fill_store, tiny_model, write_photos
from support.serve_process import serve_process

from gemsearch.cli import main
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.inputs.images import load_image
from gemsearch.plugin.query_checks import parse_crop
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.web.embed_api import url_allowed

TOKEN = "embed-token-0123456789abcdef"


class _Files(http.server.SimpleHTTPRequestHandler):
    """Serves the photo folder under /photos/ and redirects /go-elsewhere to a path outside it."""

    def do_GET(self) -> None:
        if self.path == "/photos/go-elsewhere":
            self.send_response(302)
            self.send_header("Location", "/private/secret.jpg")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("embed")
    photos = write_photos(root / "site" / "photos", max_side=120, names=("coffee", "rocket", "chelsea"))
    (root / "site" / "private").mkdir()
    (root / "site" / "private" / "secret.jpg").write_bytes((root / "site/photos/coffee.jpg").read_bytes())
    tiny_model(root / "tiny.onnx")
    with LocalStore(root / "store") as store:  # the search side of the server; the embed API ignores it
        fill_store(store, OnnxEmbedder(root / "tiny.onnx"), photos)
    (root / "token").write_text(TOKEN + "\n")
    (root / "token").chmod(0o600)
    return root


@pytest.fixture(scope="module")
def photos(root: Path) -> list[Path]:
    return sorted((root / "site" / "photos").glob("*.jpg"))


@pytest.fixture(scope="module")
def files(root: Path) -> Iterator[str]:
    handler = lambda *a: _Files(*a, directory=str(root / "site"))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def server(root: Path, files: str) -> Iterator[str]:
    args = ["--model", str(root / "tiny.onnx"), "--store", str(root / "store"), "--embed-token-file",
            str(root / "token"), "--embed-url-prefix", f"{files}/photos/", "--max-upload-mb", "0.25",
            "--max-pixels", "500000"]  # fmt: skip
    with serve_process(args) as base:
        yield base


@pytest.fixture(scope="module")
def embedder(root: Path) -> OnnxEmbedder:
    return OnnxEmbedder(root / "tiny.onnx")


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def post(server: str, body: object, token: str | None = TOKEN, **kwargs: object) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(f"{server}/api/embed", json=body, headers=headers, timeout=60, **kwargs)  # type: ignore[arg-type]


def test_blueprint_shape_gives_the_embedders_descriptor(
    server: str, photos: list[Path], embedder: OnnxEmbedder
) -> None:
    answer = post(server, {"inputImage": b64(photos[0]), "inputText": "null"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model"] == "tiny" and body["version"] == embedder.manifest.version and body["dims"] == 32
    got = np.asarray(body["embedding"], dtype=np.float32)
    np.testing.assert_allclose(got, embedder.embed(photos[0])[0], atol=1e-6)


@pytest.mark.parametrize("crop", ["10,5,60,40", [10, 5, 60, 40], '"10,5,60,40"'])
def test_plain_shape_with_a_crop_is_the_searchs_query_vector(
    server: str, photos: list[Path], embedder: OnnxEmbedder, crop: object
) -> None:
    answer = post(server, {"image": b64(photos[1]), "crop": crop, "version": embedder.manifest.version8})
    assert answer.status_code == 200, answer.text
    expected = embedder.embed_image(load_image(photos[1]), crop=parse_crop("10,5,60,40"))
    np.testing.assert_allclose(np.asarray(answer.json()["embedding"], np.float32), expected, atol=1e-6)
    whole = embedder.embed(photos[1])[0]
    assert np.abs(np.asarray(answer.json()["embedding"]) - whole).max() > 1e-3  # the crop changed it


def test_a_large_jpeg_is_decoded_as_gemsearch_search_decodes_it(
    server: str, root: Path, embedder: OnnxEmbedder
) -> None:
    # 700 px, well over twice the model's 256: the JPEG decoder scales it down first (draft mode)
    big = write_photos(root / "big", max_side=700, names=("hubble_deep_field",))[0].path
    data = big.read_bytes()
    answer = post(server, {"image": base64.b64encode(data).decode(), "crop": "100,50,400,300"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["decode"] == embedder.decode == "draft"
    scaled = embedder.decode_bytes(data)
    assert scaled.image.size != scaled.full_size  # decoded at a reduced scale
    expected = embedder.embed_image(scaled, crop=parse_crop("100,50,400,300"))
    np.testing.assert_allclose(answer.json()["embedding"], expected, atol=1e-6)
    whole = post(server, {"image": base64.b64encode(data).decode()})
    np.testing.assert_allclose(whole.json()["embedding"], embedder.embed(big)[0], atol=1e-6)


def test_search_pipeline_shape_and_empty_connector_parameters(
    server: str, photos: list[Path], embedder: OnnxEmbedder
) -> None:
    body = {"inputImage": "", "url": "", "query": {"image": b64(photos[2])}, "model": "tiny"}
    answer = post(server, body)
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["embedding"], embedder.embed(photos[2])[0], atol=1e-6)


def test_batch_answers_each_image_in_order(server: str, photos: list[Path], embedder: OnnxEmbedder) -> None:
    items = [{"image": b64(photos[0])}, {"image": base64.b64encode(b"not an image").decode()},
             {"image": b64(photos[2]), "crop": "0,0,30,30"}, {"image": "%%%"}]  # fmt: skip
    answer = post(server, {"images": items})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["error"]["code"] if r["error"] else None for r in results] == [
        None, "not_an_image", None, "bad_base64"
    ]  # fmt: skip
    np.testing.assert_allclose(results[0]["embedding"], embedder.embed(photos[0])[0], atol=1e-6)
    cropped = embedder.embed_image(load_image(photos[2]), crop=parse_crop("0,0,30,30"))
    np.testing.assert_allclose(results[2]["embedding"], cropped, atol=1e-6)
    too_many = post(server, {"images": [{"image": b64(photos[0])}] * 17})
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_many_images"


@pytest.mark.parametrize(
    ("token", "header"),
    [(None, None), ("wrong-token-0123456789abcdef", None), (None, f"Basic {TOKEN}"), (None, TOKEN)],
)
def test_missing_or_wrong_token_is_refused_before_the_body(
    server: str, token: str | None, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    if token:
        headers = {"Authorization": f"Bearer {token}"}
    # not even JSON: a 401 (not a 422) shows the token is checked before the body is parsed
    answer = requests.post(f"{server}/api/embed", data=b"{not json", headers=headers, timeout=30)
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"image": base64.b64encode(b"plain text, not an image").decode()}, 415, "not_an_image"),
        ({"image": base64.b64encode(b"GIF89a but no header").decode()}, 422, "corrupt_image"),
        ({"image": base64.b64encode(_png(800, 700)).decode()}, 413, "too_many_pixels"),  # 560k > 500k
        ({"image": "a" * 400_000}, 413, "too_large"),  # a body over --max-upload-mb 0.25 (+64 KiB)
        ({"image": "***"}, 400, "bad_base64"),
        ({"inputText": "a red bicycle"}, 400, "text_input"),
        ({"image": "QUJD", "version": "0" * 64}, 409, "model_version_mismatch"),
        ({"image": "QUJD", "decode": "exact"}, 409, "decode_mismatch"),  # this server drafts
        ({"image": "QUJD", "model": "other"}, 404, "unknown_model"),
        ({"image": "QUJD", "crop": "1,2,3"}, 400, "bad_request"),
        ({"imagee": "QUJD"}, 422, "invalid_request"),
        ({}, 400, "bad_request"),
    ],
)
def test_bad_requests_get_a_4xx_with_a_code(
    server: str, body: dict[str, object], status: int, code: str
) -> None:
    answer = post(server, body)
    assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), answer.text


def test_a_crop_outside_the_image_is_a_400(server: str, photos: list[Path]) -> None:
    answer = post(server, {"image": b64(photos[0]), "crop": "0,0,5000,10"})
    assert answer.status_code == 400 and "leaves" in answer.json()["error"]["message"]


def test_urls_only_under_the_configured_prefixes(
    server: str, files: str, photos: list[Path], embedder: OnnxEmbedder
) -> None:
    ok = post(server, {"url": f"{files}/photos/{photos[0].name}"})
    assert ok.status_code == 200, ok.text
    np.testing.assert_allclose(ok.json()["embedding"], embedder.embed(photos[0])[0], atol=1e-6)
    for url in (f"{files}/private/secret.jpg", f"{files}/photos/../private/secret.jpg",
                f"{files}/photos/%2e%2e/private/secret.jpg", "file:///etc/passwd"):  # fmt: skip
        refused = post(server, {"url": url})
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "url_not_allowed"), url
    redirected = post(server, {"url": f"{files}/photos/go-elsewhere"})  # never followed
    assert (redirected.status_code, redirected.json()["error"]["code"]) == (422, "fetch_failed")
    missing = post(server, {"url": f"{files}/photos/none.jpg"})
    assert missing.status_code == 422 and "404" in missing.json()["error"]["message"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://img.example/photos/a.jpg", True),
        ("https://img.example/photos/sub/a.jpg", True),
        ("https://img.example/photos", True),
        ("https://img.example/photos-private/a.jpg", False),
        ("https://img.example.evil/photos/a.jpg", False),
        ("http://img.example/photos/a.jpg", False),
        ("https://img.example:8443/photos/a.jpg", False),
        ("https://img.example:443/photos/a.jpg", True),
        ("https://user:pw@img.example/photos/a.jpg", False),
        ("https://img.example/photos/../etc/a.jpg", False),
        ("https://img.example/photos/%2E%2E/etc/a.jpg", False),
        ("https://img.example/photos/a\\..\\b.jpg", False),
        ("https://img.example:abc/photos/a.jpg", False),  # urlsplit raises on reading such ports
        ("https://img.example:99999/photos/a.jpg", False),
        ("https://[::1/photos/a.jpg", False),
    ],
)
def test_url_allowed(url: str, allowed: bool) -> None:
    assert url_allowed(url, ["https://img.example/photos"]) is allowed


def test_no_embed_api_unless_configured(root: Path) -> None:
    with serve_process(["--model", str(root / "tiny.onnx"), "--store", str(root / "store")]) as base:
        answer = requests.post(f"{base}/api/embed", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code in (404, 405)
        assert "/api/embed" not in requests.get(f"{base}/openapi.json", timeout=10).json()["paths"]


def test_openapi_describes_the_request(server: str) -> None:
    schema = requests.get(f"{server}/openapi.json", timeout=10).json()
    body = schema["paths"]["/api/embed"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/EmbedRequest")
    props = schema["components"]["schemas"]["EmbedRequest"]["properties"]
    assert {"image", "url", "crop", "images", "query", "version"} <= set(props)


@pytest.mark.parametrize("token", ["", "short"])
def test_a_missing_or_short_token_stops_serve_with_one_line(root: Path, token: str) -> None:
    args = ["serve", "--model", str(root / "tiny.onnx"), "--store", str(root / "store"), "--embed-api"]
    result = CliRunner().invoke(main, args, env={"GEMSEARCH_EMBED_TOKEN": token})
    assert result.exit_code == 1 and "bearer token of at least 16 characters" in result.output
    assert "Traceback" not in result.output
