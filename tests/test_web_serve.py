"""``gemsearch serve``: flags and config files become a ServeConfig; the command serves real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from support.live_server import free_port
from support.opensearch_harness import OpenSearchNode
from support.query_data import fill_store, tiny_model, write_photos

from gemsearch.cli import main
from gemsearch.cli.serve import build_config
from gemsearch.errors import ConfigError
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.stores.local.store import LocalStore


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    photos = write_photos(root / "photos", max_side=120, names=("coffee", "rocket", "chelsea"))
    tiny_model(root / "tiny.onnx")
    with LocalStore(root / "store") as store:
        fill_store(store, OnnxEmbedder(root / "tiny.onnx"), photos)
    return root


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give --model"),
        (["--model", "{m}"], "one --store per --model"),
        (["--model", "{m}", "--store", "a", "--store", "b"], "one --store per --model"),
        (["--model", "{m}", "--store", "a", "--opensearch", "http://x:9200"], "not both"),
        (["--config", "{m}", "--model", "{m}"], "not both"),
    ],
)
def test_usage_errors(root: Path, args: list[str], message: str) -> None:
    args = [a.replace("{m}", str(root / "tiny.onnx")) for a in args]
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 2 and message in result.output


def test_bad_config_file_is_a_readable_error(tmp_path: Path) -> None:
    (tmp_path / "serve.yaml").write_text("models: []\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(tmp_path / "serve.yaml")])
    assert result.exit_code == 1 and "invalid serve config" in result.output


def test_serve_answers_over_http(root: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "gemsearch.cli", "serve", "--model", str(root / "tiny.onnx")]
    cmd += [
        "--store",
        str(root / "store"),
        "--images",
        str(root / "photos"),
        "--port",
        str(port),
        "--max-k",
        "5",
        "--title-field",
        "name",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = requests.get(f"{base}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert health.json() == {"status": "ok", "models": {"tiny": True}, "problems": {}}
        files = {"image": ("q.jpg", (root / "photos" / "rocket.jpg").read_bytes(), "image/jpeg")}
        body = requests.post(f"{base}/api/search", files=files, data={"k": 2}, timeout=30).json()
        assert body["hits"][0]["metadata"]["name"] == "rocket" and len(body["hits"]) == 2
        assert [hit["title"] for hit in body["hits"]] == [hit["metadata"]["name"] for hit in body["hits"]]
        too_many = requests.post(f"{base}/api/search", files=files, data={"k": 6}, timeout=30)
        assert too_many.status_code == 422  # --max-k 5
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_title_field_flag_overrides_the_config_file(root: Path) -> None:
    (root / "serve.yaml").write_text(
        f"models:\n  - path: {root / 'tiny.onnx'}\n    store: {{kind: local, path: store}}\n"
        "title_field: name\n"
    )
    flags = {"config_path": root / "serve.yaml", "model_paths": (), "stores": (), "opensearch_urls": ()}
    flags |= {"opensearch_config": None, "prefix": "gemsearch", "image_roots": (), "title_field": None}
    assert build_config(flags, {}).title_field == "name"
    assert build_config(flags | {"title_field": "camera.model"}, {}).title_field == "camera.model"
    with pytest.raises(ConfigError, match="invalid --title-field"):
        build_config(flags | {"title_field": "a b"}, {})
    result = CliRunner().invoke(main, ["serve", "--config", str(root / "serve.yaml"), "--title-field", "x y"])
    assert result.exit_code == 1 and "invalid --title-field 'x y'" in result.output


def test_a_port_in_use_is_one_line_before_any_model_is_loaded(root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", "--model", str(root / "tiny.onnx"), "--store", str(root / "store")]
        result = CliRunner().invoke(main, [*args, "--port", str(port)])
    assert result.exit_code == 1, result.output
    assert result.output == f"Error: port {port} is in use: pass --port\n"


def test_serve_warns_at_start_of_a_model_without_an_index(
    root: Path, opensearch_node: OpenSearchNode, prefix: str
) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "gemsearch.cli", "serve", "--model", str(root / "tiny.onnx")]
    cmd += ["--opensearch", opensearch_node.url, "--prefix", prefix, "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert first.startswith("warning: model tiny: there is no index for model tiny"), first
        assert first.rstrip().endswith("(serving anyway)")
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = requests.get(f"{base}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        hint = "no index for model tiny yet: run gemsearch ingest or gemsearch index create"
        assert health.status_code == 503 and health.json()["problems"] == {"tiny": hint}
    finally:
        proc.terminate()
        proc.wait(timeout=20)
