"""The model as an ml-commons remote model of a real OpenSearch node: `gemsearch opensearch pipelines
create` against a real `gemsearch serve`, then plain opensearch-py indexes through the ingest pipeline
and searches through the search pipeline, and gets what gemsearch itself gives."""

from __future__ import annotations

import base64
import functools
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError
from support.opensearch_harness import OpenSearchNode
from support.query_data import Photo, tiny_model, write_photos
from support.serve_process import serve_process

from gemsearch.cli import main
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.stores.opensearch.ml_pipelines import search_body

pytest_plugins = ["support.ml_commons_node"]  # its session fixture ml_node: a node with ml-commons
pytestmark = pytest.mark.opensearch
TOKEN = "ml-commons-token-0123456789"


@pytest.fixture(scope="module")
def client(ml_node: OpenSearchNode) -> Iterator[OpenSearch]:
    with OpenSearch(hosts=[ml_node.url], timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ml")
    tiny_model(root / "tiny.onnx")
    tiny_model(root / "other" / "tiny.onnx", seed=2)  # the same name, another version
    (root / "token").write_text(TOKEN)
    (root / "token").chmod(0o600)
    return root


@pytest.fixture(scope="module")
def photos(root: Path) -> list[Photo]:
    return write_photos(root / "photos", max_side=160)


@pytest.fixture(scope="module")
def prefix(client: OpenSearch) -> Iterator[str]:
    name = f"ml{uuid.uuid4().hex[:8]}"
    yield name
    client.indices.delete(index=f"{name}-*", params={"expand_wildcards": "all"})


@pytest.fixture(scope="module")
def files(root: Path) -> Iterator[str]:
    """The photos over HTTP, for documents that name their image by URL."""
    handler = functools.partial(_QuietFiles, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server(root: Path, ml_node: OpenSearchNode, prefix: str, files: str) -> Iterator[str]:
    args = ["--model", str(root / "tiny.onnx"), "--opensearch", ml_node.url, "--prefix", prefix,
            "--embed-api", "--embed-url-prefix", f"{files}/photos/"]  # fmt: skip
    with serve_process(args, env={"GEMSEARCH_EMBED_TOKEN": TOKEN}) as base:
        yield base


def run(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), env={"GEMSEARCH_EMBED_TOKEN": TOKEN})
    return result


def create_args(root: Path, node: OpenSearchNode, prefix: str, server: str, model: Path) -> list[str]:
    return ["opensearch", "pipelines", "create", "--model", str(model), "--opensearch", node.url,
            "--prefix", prefix, "--endpoint", server, "--token-file", str(root / "token")]  # fmt: skip


@pytest.fixture(scope="module")
def made(root: Path, ml_node: OpenSearchNode, prefix: str, server: str) -> dict[str, Any]:
    result = run(*create_args(root, ml_node, prefix, server, root / "tiny.onnx"), "--json")
    assert result.exit_code == 0, result.output
    made: dict[str, Any] = json.loads(result.stdout)
    return made


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def test_create_reuses_everything_on_a_rerun(
    root: Path,
    ml_node: OpenSearchNode,
    prefix: str,
    server: str,
    made: dict[str, Any],
) -> None:
    # --update-token rewrites the connector of a deployed model (undeploy, update, deploy), and the
    # test embedding that follows goes through the updated connector
    again = run(*create_args(root, ml_node, prefix, server, root / "tiny.onnx"), "--update-token")
    assert again.exit_code == 0, again.output
    for key in ("connector_id", "model_group_id", "model_id", "ingest_pipeline", "search_pipeline"):
        assert made[key] in again.output
    assert f"_bulk?pipeline={made['ingest_pipeline']}" in again.output
    assert f"_search?search_pipeline={made['search_pipeline']}" in again.output
    assert made["index"] == f"{prefix}-tiny-{made['version'][:8]}" and made["alias"] == f"{prefix}-tiny"


def _bulk_body(photos: list[Photo], bad: dict[str, str]) -> str:
    lines = []
    for i, photo in enumerate(photos):
        if i == 2:  # the failing documents sit between good ones
            for doc_id, image in bad.items():
                lines += [json.dumps({"index": {"_id": doc_id}}), json.dumps({"image": image})]
        doc = {"image": b64(photo.path), "image_ref": str(photo.path), "metadata": photo.metadata}
        lines += [json.dumps({"index": {"_id": photo.id}}), json.dumps(doc)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def bulk(client: OpenSearch, made: dict[str, Any], photos: list[Photo]) -> dict[str, Any]:
    bad = {"not-an-image": base64.b64encode(b"just some text").decode(), "not-base64": "***"}
    body = _bulk_body(photos, bad)
    params = {"pipeline": made["ingest_pipeline"], "refresh": "true"}
    answer: dict[str, Any] = client.bulk(body=body, index=made["alias"], params=params)
    return answer


def test_bulk_through_the_ingest_pipeline_gives_the_embedders_vectors(
    client: OpenSearch, made: dict[str, Any], photos: list[Photo], root: Path, bulk: dict[str, Any]
) -> None:
    items = {item["index"]["_id"]: item["index"] for item in bulk["items"]}
    assert all(items[p.id]["status"] == 201 for p in photos), bulk
    embedder = OnnxEmbedder(root / "tiny.onnx")
    expected = embedder.embed([p.path for p in photos])
    for photo, vector in zip(photos, expected, strict=True):
        source = client.get(index=made["alias"], id=photo.id)["_source"]
        np.testing.assert_allclose(np.asarray(source["embedding"], np.float32), vector, atol=1e-5)
        assert source["metadata"] == photo.metadata and source["image_ref"] == str(photo.path)
        assert ("image" in source) != made["removes_image"]
    assert client.count(index=made["alias"])["count"] == len(photos)


def test_the_pipeline_reports_each_failing_document_and_goes_on(bulk: dict[str, Any]) -> None:
    assert bulk["errors"] is True
    failed = {i["index"]["_id"]: i["index"] for i in bulk["items"] if i["index"].get("error")}
    assert set(failed) == {"not-an-image", "not-base64"}
    assert (
        failed["not-an-image"]["status"] == 415
        and "not_an_image" in failed["not-an-image"]["error"]["reason"]
    )
    assert failed["not-base64"]["status"] == 400 and "bad_base64" in failed["not-base64"]["error"]["reason"]


@pytest.mark.parametrize(("crop", "group"), [(None, None), ("30,20,90,70", None), (None, "odd")])
def test_search_pipeline_finds_what_gemsearch_search_finds(
    client: OpenSearch,
    made: dict[str, Any],
    photos: list[Photo],
    root: Path,
    ml_node: OpenSearchNode,
    prefix: str,
    bulk: dict[str, Any],
    crop: str | None,
    group: str | None,
) -> None:
    query = photos[3].path
    body = search_body(4, b64(query), crop)
    if group is not None:  # a filter inside the k-NN clause, as gemsearch search --filter makes it
        body["query"]["template"]["knn"]["embedding"]["filter"] = {"term": {"metadata.group": group}}
    hits = client.search(index=made["alias"], body=body, params={"search_pipeline": made["search_pipeline"]})
    ids = [h["_id"] for h in hits["hits"]["hits"]]
    args = ["search", str(query), "--model", str(root / "tiny.onnx"), "--opensearch", ml_node.url,
            "--prefix", prefix, "-k", "4", "--json", *(["--crop", crop] if crop else []),
            *(["--filter", f"group={group}"] if group else [])]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    expected = [h["id"] for h in json.loads(result.stdout)["hits"]]
    scores = [(h["_id"][:8], h["_score"]) for h in hits["hits"]["hits"]]
    assert ids == expected, (scores, result.stdout)
    assert len(ids) == (3 if group else 4)  # 3 of the 7 photos are "odd"
    if crop is None:
        assert (ids[0] == photos[3].id) == (group != "even")


def test_documents_with_image_urls_through_the_url_pipeline(
    root: Path,
    ml_node: OpenSearchNode,
    prefix: str,
    server: str,
    files: str,
    client: OpenSearch,
    made: dict[str, Any],
    photos: list[Photo],
) -> None:
    args = [*create_args(root, ml_node, prefix, server, root / "tiny.onnx"), "--image-input", "url",
            "--image-field", "image_url", "--json"]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    by_url = json.loads(result.stdout)
    assert (
        by_url["ingest_pipeline"] == made["ingest_pipeline"] + "-url"
        and by_url["model_id"] == made["model_id"]
    )
    lines = []
    for photo in photos[:3]:
        lines += [json.dumps({"index": {"_id": f"url-{photo.name}"}}),
                  json.dumps({"image_url": f"{files}/photos/{photo.path.name}"})]  # fmt: skip
    lines += [json.dumps({"index": {"_id": "url-outside"}}), json.dumps({"image_url": f"{files}/token"})]
    params = {"pipeline": by_url["ingest_pipeline"], "refresh": "true"}
    answer = client.bulk(body="\n".join(lines) + "\n", index=made["alias"], params=params)
    statuses = {i["index"]["_id"]: i["index"]["status"] for i in answer["items"]}
    assert statuses == {**{f"url-{p.name}": 201 for p in photos[:3]}, "url-outside": 400}, answer
    expected = OnnxEmbedder(root / "tiny.onnx").embed([p.path for p in photos[:3]])
    for photo, vector in zip(photos[:3], expected, strict=True):
        source = client.get(index=made["alias"], id=f"url-{photo.name}")["_source"]
        np.testing.assert_allclose(np.asarray(source["embedding"], np.float32), vector, atol=1e-5)
    for photo in photos[:3]:  # leave the index as the search tests expect it
        client.delete(index=made["index"], id=f"url-{photo.name}", params={"refresh": "true"})
    # the base64 pipeline is still there, unchanged
    assert client.transport.perform_request("GET", f"/_ingest/pipeline/{made['ingest_pipeline']}")


def test_a_server_with_another_model_version_is_refused(
    root: Path,
    ml_node: OpenSearchNode,
    prefix: str,
    server: str,
    client: OpenSearch,
) -> None:
    # pipelines for another version of "tiny", pointed at a server that embeds the first version
    other = root / "other" / "tiny.onnx"
    result = run(*create_args(root, ml_node, prefix, server, other))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "409" in result.output or "version" in result.output, result.output
    dropped = run("opensearch", "pipelines", "drop", "--model", str(other), "--opensearch", ml_node.url,
                  "--prefix", prefix, "--yes")  # fmt: skip
    assert dropped.exit_code == 0 and "removed model" in dropped.output, dropped.output


def test_a_pipeline_of_another_version_under_the_same_name_is_refused(
    root: Path,
    ml_node: OpenSearchNode,
    prefix: str,
    server: str,
    made: dict[str, Any],
    client: OpenSearch,
) -> None:
    name = made["search_pipeline"]
    saved = client.transport.perform_request("GET", f"/_search/pipeline/{name}")[name]
    forged = {**saved, "description": saved["description"].replace(made["version"], "f" * 64)}
    client.transport.perform_request("PUT", f"/_search/pipeline/{name}", body=forged)
    try:
        result = run(*create_args(root, ml_node, prefix, server, root / "tiny.onnx"))
        assert result.exit_code == 1 and f"made for model version {'f' * 8}" in result.output, result.output
    finally:
        client.transport.perform_request("PUT", f"/_search/pipeline/{name}", body=saved)


def test_drop_removes_the_model_and_pipelines_and_keeps_the_index(
    root: Path,
    ml_node: OpenSearchNode,
    prefix: str,
    made: dict[str, Any],
    client: OpenSearch,
    bulk: Any,
) -> None:
    args = ["opensearch", "pipelines", "drop", "--model", str(root / "tiny.onnx"),
            "--opensearch", ml_node.url, "--prefix", prefix, "--yes"]  # fmt: skip
    result = run(*args)
    assert result.exit_code == 0, result.output
    removed = (made["model_id"], made["connector_id"], made["ingest_pipeline"], made["search_pipeline"],
               made["ingest_pipeline"] + "-url")  # fmt: skip
    for what in removed:
        assert what in result.output
    for path in (f"/_ingest/pipeline/{made['ingest_pipeline']}", f"/_plugins/_ml/models/{made['model_id']}"):
        with pytest.raises(NotFoundError):
            client.transport.perform_request("GET", path)
    assert client.count(index=made["alias"])["count"] > 0
    again = run(*args)
    assert again.exit_code == 0 and "nothing to remove" in again.output


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        ([], {}, "bearer token of at least 16 characters in $GEMSEARCH_EMBED_TOKEN"),
        (["--endpoint", "ftp://embedder"], {"GEMSEARCH_EMBED_TOKEN": TOKEN}, "must be an http(s) URL"),
    ],
)
def test_create_errors_before_touching_the_cluster(
    tmp_path: Path, extra: list[str], env: dict[str, str], message: str
) -> None:
    tiny_model(tmp_path / "tiny.onnx")
    args = ["opensearch", "pipelines", "create", "--model", str(tmp_path / "tiny.onnx"),
            "--opensearch", "http://127.0.0.1:9", "--endpoint", "http://embedder:8000", *extra]  # fmt: skip
    result = CliRunner().invoke(main, args, env={"GEMSEARCH_EMBED_TOKEN": "", **env})
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output
