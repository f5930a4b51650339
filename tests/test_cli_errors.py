"""CLI errors a user can act on: an unreachable cluster, refused credentials, a model never ingested
and a URL without a scheme each end a command with one or two lines naming the URL and the fix, no
traceback (the transport's retries stay quiet unless -v)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from support.onnx_models import make_tiny_model
from support.opensearch_harness import OpenSearchNode

PASSWORD = "hunter2-not-this"


def gemsearch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a fresh interpreter (real logging setup), with no GEMSEARCH_OPENSEARCH_* set."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GEMSEARCH_OPENSEARCH_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gemsearch.cli", *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=120,
    )


def assert_short_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    output = (result.stdout + result.stderr).strip()
    lines = output.splitlines()
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert len(lines) <= 3, output
    for needle in needles:
        assert needle in output, output
    assert PASSWORD not in output
    return output


@pytest.fixture(scope="module")
def closed_url() -> str:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def refusing_url() -> Iterator[str]:
    """A node that answers every request 401, like a cluster with the security plugin and a wrong password."""

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"error": "Unauthorized", "status": 401}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("WWW-Authenticate", 'Basic realm="OpenSearch Security"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli-errors")
    model = folder / "tiny.onnx"
    make_tiny_model(model, name="tiny", dim=16)
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return {"model": model, "images": images, "image": images / "0.png", "folder": folder}


def commands(files: dict[str, Path], url: str) -> dict[str, list[str]]:
    folder = files["folder"]
    return {
        "index list": ["index", "list", "--opensearch", url],
        "search": ["search", str(files["image"]), "--model", str(files["model"]), "--opensearch", url],
        "ingest": [
            "ingest", str(files["images"]), "--model", str(files["model"]), "--opensearch", url,
            "--no-progress", "--ledger", str(folder / "ledger.jsonl"),
            "--dead-letter", str(folder / "dl.jsonl"),
        ],
    }  # fmt: skip


@pytest.mark.parametrize("command", ["index list", "search", "ingest"])
def test_unreachable_cluster_is_one_line_with_the_url_and_the_fix(
    command: str, files: dict[str, Path], closed_url: str
) -> None:
    result = gemsearch(*commands(files, closed_url)[command])
    output = assert_short_error(result, f"cannot reach OpenSearch at {closed_url}", "is the cluster up?")
    assert "--opensearch or GEMSEARCH_OPENSEARCH_URL" in output


def test_the_default_url_is_named_as_the_default(closed_url: str) -> None:
    # no --opensearch, no GEMSEARCH_OPENSEARCH_URL: localhost:9200, which this machine may serve, so
    # the test points the default elsewhere only through a config file that names no URL
    result = gemsearch("index", "list", env={"GEMSEARCH_OPENSEARCH_TIMEOUT": "5"})
    output = (result.stdout + result.stderr).strip()
    if result.returncode == 0:
        pytest.skip("something answers on localhost:9200")
    assert_short_error(result, "http://localhost:9200", "no URL was configured", "GEMSEARCH_OPENSEARCH_URL")
    assert output.startswith("Error: ")


@pytest.mark.parametrize("command", ["index list", "search", "ingest"])
def test_refused_credentials_name_the_settings_not_the_password(
    command: str, files: dict[str, Path], refusing_url: str
) -> None:
    env = {"GEMSEARCH_OPENSEARCH_USER": "ingest", "GEMSEARCH_OPENSEARCH_PASSWORD": PASSWORD}
    result = gemsearch(*commands(files, refusing_url)[command], env=env)
    assert_short_error(
        result,
        f"OpenSearch at {refusing_url} refused the credentials (401)",
        "GEMSEARCH_OPENSEARCH_USER/_PASSWORD",
        "--opensearch-config",
    )


def test_missing_credentials_are_named(files: dict[str, Path], refusing_url: str) -> None:
    result = gemsearch(*commands(files, refusing_url)["index list"])
    assert_short_error(result, "asks for credentials (401) and none were given")


def test_search_of_a_model_never_ingested_says_how_to_ingest_it(
    files: dict[str, Path], opensearch_node: OpenSearchNode, prefix: str
) -> None:
    args = commands(files, opensearch_node.url)["search"]
    result = gemsearch(*args, "--prefix", prefix)
    assert_short_error(
        result,
        f"no index for model tiny under prefix {prefix!r}",
        f"gemsearch ingest ... --opensearch {opensearch_node.url}",
        "gemsearch index create",
    )


def test_dropping_a_missing_index_is_one_line(opensearch_node: OpenSearchNode, prefix: str) -> None:
    result = gemsearch("index", "drop", f"{prefix}-nothing", "--yes", "--opensearch", opensearch_node.url)
    assert_short_error(result, f"index or alias {prefix}-nothing does not exist", opensearch_node.url)


@pytest.mark.parametrize("url", ["127.0.0.1:9200", "localhost"])
def test_a_url_without_a_scheme_is_a_usage_error(url: str) -> None:
    result = gemsearch("index", "list", "--opensearch", url)
    output = assert_short_error(result, f"'{url}' is not an http(s) URL", f"e.g. http://{url}")
    assert result.returncode == 2 and "pydantic" not in output
    assert output.splitlines()[1] == "Try 'gemsearch index list --help'.", output


def test_verbose_shows_the_retries_and_the_traceback(closed_url: str) -> None:
    quiet = gemsearch("index", "list", "--opensearch", closed_url)
    assert quiet.stderr.count("\n") == 1, quiet.stderr
    verbose = gemsearch("-v", "index", "list", "--opensearch", closed_url)
    assert "Traceback" in verbose.stderr  # the error's own, with its cause
    retries = [line for line in verbose.stderr.splitlines() if line.startswith("INFO opensearch:")]
    assert retries and all("127.0.0.1" in line for line in retries)
    debug = gemsearch("--debug", "index", "list", "--opensearch", closed_url)
    assert debug.stderr.count("Traceback") > verbose.stderr.count("Traceback")


# ---------------------------------------------------------------- every cluster-facing command

MISSING_INDEX = "nothing-00000000"


def every_command(files: dict[str, Path], url: str, prefix: str = "gemsearch") -> dict[str, list[str]]:
    """One invocation of every command that talks to a cluster, as a new user would type it."""
    model = str(files["model"])
    cluster = ["--opensearch", url, "--prefix", prefix]
    return {
        **{name: [*args, "--prefix", prefix] for name, args in commands(files, url).items()},
        "count": ["count", "--model", model, *cluster],
        "count --filter": ["count", "--model", model, *cluster, "--filter", "album=nature"],
        "delete": ["delete", "0" * 64, "--model", model, *cluster, "--yes"],
        "delete --filter": ["delete", "--filter", "album=nature", "--model", model, *cluster, "--yes"],
        "index create": ["index", "create", model, *cluster],
        "index swap-alias": ["index", "swap-alias", f"{prefix}-{MISSING_INDEX}", *cluster],
        "index drop": ["index", "drop", f"{prefix}-{MISSING_INDEX}", "--yes", *cluster],
    }


EVERY_COMMAND = [
    "ingest", "search", "count", "count --filter", "delete", "delete --filter",
    "index list", "index create", "index swap-alias", "index drop",
]  # fmt: skip


@pytest.mark.parametrize("command", EVERY_COMMAND)
def test_every_command_on_a_cluster_that_is_down_says_so_in_three_lines(
    command: str, files: dict[str, Path], closed_url: str
) -> None:
    result = gemsearch(*every_command(files, closed_url)[command])
    assert_short_error(result, f"cannot reach OpenSearch at {closed_url}", "is the cluster up?")


@pytest.mark.parametrize("command", EVERY_COMMAND)
def test_every_command_with_a_wrong_password_says_so_in_three_lines(
    command: str, files: dict[str, Path], refusing_url: str
) -> None:
    env = {"GEMSEARCH_OPENSEARCH_USER": "ingest", "GEMSEARCH_OPENSEARCH_PASSWORD": PASSWORD}
    result = gemsearch(*every_command(files, refusing_url)[command], env=env)
    assert_short_error(result, f"OpenSearch at {refusing_url} refused the credentials (401)")


# with no index or alias under the prefix: the commands that need one fail in a few lines and name
# what is missing; ingest and index create make it, index list lists nothing
NEEDS_THE_ALIAS = {
    "search": "no index for model tiny",
    "count": "no index for model tiny",
    "count --filter": "no index for model tiny",
    "delete": "no index for model tiny",
    "delete --filter": "no index for model tiny",
    "index swap-alias": MISSING_INDEX,
    "index drop": MISSING_INDEX,
}


@pytest.mark.parametrize("command", EVERY_COMMAND)
def test_every_command_without_the_alias_answers_in_three_lines(
    command: str, files: dict[str, Path], opensearch_node: OpenSearchNode, prefix: str, tmp_path: Path
) -> None:
    args = every_command(files, opensearch_node.url, prefix)[command]
    result = gemsearch(*args)
    output = (result.stdout + result.stderr).strip()
    if command in NEEDS_THE_ALIAS:
        assert_short_error(result, NEEDS_THE_ALIAS[command], opensearch_node.url)
    else:
        assert result.returncode == 0, output
        assert "Traceback" not in output and len(output.splitlines()) <= 3, output


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = "gemsearch-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_serve_on_a_cluster_that_is_down_logs_one_line_per_error(
    files: dict[str, Path], closed_url: str, tmp_path: Path
) -> None:
    import time
    import urllib.error
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = tmp_path / "serve.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GEMSEARCH_OPENSEARCH_")}
    args = ["serve", "--model", str(files["model"]), "--opensearch", closed_url, "--port", str(port)]
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gemsearch.cli", *args], stdout=log, stderr=subprocess.STDOUT, env=clean
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log_path.read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        body, content_type = _multipart("image", "q.png", files["image"].read_bytes())
        request = urllib.request.Request(
            f"{base}/api/search", data=body, headers={"Content-Type": content_type}, method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=120)
        assert answer.value.code == 503
        error = json.loads(answer.value.read())["error"]
        assert error["code"] == "unavailable" and "\n" not in error["message"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    log_text = log_path.read_text()
    assert "Traceback" not in log_text, log_text
    lines = log_text.splitlines()
    # one line per message: a multi-line message or a traceback would bring indented lines
    assert not [line for line in lines if line[:1].isspace()], log_text
    about_the_cluster = [line for line in lines if "OpenSearch" in line]
    assert about_the_cluster and all(closed_url in line for line in about_the_cluster), log_text
