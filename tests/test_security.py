"""A cluster with the security plugin, for real: HTTPS with a private CA, users holding only the
gemsearch roles of docs/security.md, one-line 401 and 403 errors through the CLI, client
certificates, and no password in any output."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.onnx_models import make_tiny_model
from support.secured_node import (
    ADMIN_CERT,
    ADMIN_KEY,
    SecuredCluster,
    config_file,
    documented_roles,
    put_role,
    put_user,
)

from gemsearch.plugin.stores.opensearch.permissions import ROLES, denied, missing_actions, role_body

pytestmark = pytest.mark.opensearch
SEARCH, INGEST, ADMIN = "gemsearch_search", "gemsearch_ingest", "gemsearch_admin"


def gemsearch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter with only these GEMSEARCH_OPENSEARCH_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GEMSEARCH_OPENSEARCH_")}
    return subprocess.run(
        [sys.executable, "-m", "gemsearch.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=180,
    )


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    output = (result.stdout + result.stderr).strip()
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert result.returncode != 0 and len(errors) == 1, output
    assert "Traceback" not in output, output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("secured")
    for name, seed in (("tiny", 0), ("tiny2", 1)):
        make_tiny_model(folder / f"{name}.onnx", name="tiny", dim=16, seed=seed)
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return {
        "folder": folder,
        "model": folder / "tiny.onnx",
        "model2": folder / "tiny2.onnx",
        "images": images,
    }


@pytest.fixture(scope="module")
def ingested(secured: SecuredCluster, files: dict[str, Path]) -> dict[str, Path]:
    """The images ingested by the ingest user (a ledger kept), once for the module."""
    ledger = files["folder"] / "ledger.jsonl"
    result = gemsearch(*ingest_args(secured, files), "--ledger", str(ledger), env=secured.env(INGEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "indexed 3" in result.stdout + result.stderr
    return {**files, "ledger": ledger}


def ingest_args(
    secured: SecuredCluster, files: dict[str, Path], *, prefix: str | None = None, pause: bool = True
) -> list[str]:
    return [
        "ingest", str(files["images"]), "--model", str(files["model"]), "--opensearch", secured.node.url,
        "--prefix", prefix or secured.prefix, "--no-progress",
        "--dead-letter", str(files["folder"] / "dead.jsonl"), *(["--pause-refresh"] if pause else []),
    ]  # fmt: skip


# ----------------------------------------------------------------------------- the roles themselves


def test_the_documented_roles_are_the_roles_gemsearch_names() -> None:
    assert documented_roles() == {name: role_body(name) for name in ROLES}


def test_a_403_names_the_refused_action_and_the_role_that_grants_it() -> None:
    reason = "no permissions for [indices:data/write/bulk[s], indices:data/write/index] and User [name=x]"
    refresh = {"_shards": {"failures": [{"reason": {"type": "security_exception", "reason": reason}}]}}
    assert missing_actions(refresh) == ["indices:data/write/bulk[s]", "indices:data/write/index"]
    line = denied({"error": {"reason": reason}}, "https://n:9200", "user 'x'", "gemsearch-a-1")
    assert "the action indices:data/write/bulk[s], indices:data/write/index on gemsearch-a-1 (403)" in line
    assert "the gemsearch_ingest role in docs/security.md grants it" in line
    other = {"error": {"reason": reason.replace("indices:data/write/index", "cluster:admin/x")}}
    assert "no gemsearch role grants cluster:admin/x" in denied(other, "u", "w", None)
    apart = {"error": {"reason": reason.replace("indices:data/write/index", "cluster:monitor/health")}}
    assert "the roles gemsearch_ingest, gemsearch_admin in docs/security.md grant them together" in denied(
        apart, "u", "w", None
    )
    assert "no action named" in denied({"error": "Forbidden"}, "u", "w", None)


# ----------------------------------------------------------------------------- each command, its role


def test_ingest_and_delete_work_with_the_ingest_role(
    secured: SecuredCluster, ingested: dict[str, Path]
) -> None:
    again = gemsearch(*ingest_args(secured, ingested), env=secured.env(INGEST))
    assert again.returncode == 0 and "skipped 3 (present: 3)" in again.stdout + again.stderr, again.stderr
    count = gemsearch("count", "--model", str(ingested["model"]), "--opensearch", secured.node.url,
                      "--prefix", secured.prefix, env=secured.env(INGEST))  # fmt: skip
    assert count.returncode == 0 and count.stdout.strip().startswith("3"), count.stdout + count.stderr


def test_search_count_and_list_work_with_the_search_role(
    secured: SecuredCluster, ingested: dict[str, Path]
) -> None:
    url, prefix, env = secured.node.url, secured.prefix, secured.env(SEARCH)
    image = str(ingested["images"] / "1.png")
    found = gemsearch("search", image, "--model", str(ingested["model"]), "--opensearch", url,
                      "--prefix", prefix, "--json", env=env)  # fmt: skip
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert len(hits) == 3 and hits[0]["image_ref"].endswith("1.png")
    listed = gemsearch("index", "list", "--opensearch", url, "--prefix", prefix, "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["docs"] == 3 and row["aliases"] == [f"{prefix}-tiny"] and row["health"] is None


def test_the_search_role_cannot_write(secured: SecuredCluster, ingested: dict[str, Path]) -> None:
    env = secured.env(SEARCH)
    wrote = gemsearch(*ingest_args(secured, ingested), env=env)
    one_line_error(wrote, "denied user 'gemsearch_search' the action indices:admin/aliases/get", "(403)",
                   "gemsearch_ingest or gemsearch_admin role in docs/security.md")  # fmt: skip
    index = f"{secured.prefix}-tiny-"
    deleted = gemsearch("delete", "--manifest", str(ingested["images"]), "--model", str(ingested["model"]),
                        "--opensearch", secured.node.url, "--prefix", secured.prefix, "--yes",
                        env=env)  # fmt: skip
    assert deleted.returncode != 0 and "indices:data/write/delete" in deleted.stdout + deleted.stderr
    dropped = gemsearch("index", "drop", *_index_names(secured, index), "--yes", "--force",
                        "--opensearch", secured.node.url, env=env)  # fmt: skip
    one_line_error(dropped, "the action indices:admin/delete", "gemsearch_admin role")
    assert secured.node.request("GET", f"/{secured.prefix}-tiny/_count")["count"] == 3


def test_documents_refused_for_the_role_are_not_dead_letters(
    secured: SecuredCluster, ingested: dict[str, Path], tmp_path: Path
) -> None:
    # the admin role may create indices but not write documents: every bulk item answers 403
    dead, ledger = tmp_path / "dead.jsonl", tmp_path / "ledger.jsonl"
    logs = ["--dead-letter", str(dead), "--ledger", str(ledger)]
    args = ingest_args(secured, ingested, pause=False)  # the admin role may not set refresh_interval
    result = gemsearch(*args, "--no-skip-existing", *logs, env=secured.env(ADMIN))
    refused = "denied user 'gemsearch_admin' the action indices:data/write/bulk[s], indices:data/write/index"
    one_line_error(result, refused, "the gemsearch_ingest role in docs/security.md")
    assert not dead.exists() or not dead.read_text().strip()
    fates = [json.loads(line).get("fate") for line in ledger.read_text().splitlines()]
    assert fates.count("pending") == 3 and "rejected" not in fates, fates


def test_a_search_role_that_may_not_read_mappings_is_told_so(
    secured: SecuredCluster, ingested: dict[str, Path]
) -> None:
    # without the mappings the model-version check cannot run: an error, not a silently skipped check
    body = role_body(SEARCH, secured.prefix)
    actions = body["index_permissions"][0]["allowed_actions"]
    actions.remove("indices:admin/mappings/get")
    put_role(secured.node, "gemsearch_search_nomappings", body)
    put_user(secured.node, "nomappings", "Kq4#lantern-Ferry81", ["gemsearch_search_nomappings"])
    env = {**secured.env(None), "GEMSEARCH_OPENSEARCH_USER": "nomappings"}
    env["GEMSEARCH_OPENSEARCH_PASSWORD"] = "Kq4#lantern-Ferry81"
    result = gemsearch("search", str(ingested["images"] / "0.png"), "--model", str(ingested["model"]),
                       "--opensearch", secured.node.url, "--prefix", secured.prefix, env=env)  # fmt: skip
    one_line_error(result, "the action indices:admin/mappings/get", "gemsearch_search")


def test_the_ingest_role_stays_under_its_prefix(secured: SecuredCluster, files: dict[str, Path]) -> None:
    result = gemsearch(*ingest_args(secured, files, prefix="elsewhere"), env=secured.env(INGEST))
    one_line_error(result, "denied user 'gemsearch_ingest' the action indices:admin/", "(403)")
    assert secured.node.request("GET", "/_cat/indices/elsewhere-*?format=json") == []


def test_index_commands_work_with_the_admin_role(secured: SecuredCluster, ingested: dict[str, Path]) -> None:
    url, prefix, env = secured.node.url, secured.prefix, secured.env(ADMIN)
    created = gemsearch("index", "create", str(ingested["model2"]), "--opensearch", url, "--prefix", prefix,
                        "--json", env=env)  # fmt: skip
    assert created.returncode == 0, created.stderr
    new = json.loads(created.stdout)["index"]
    (old,) = [n for n in _index_names(secured, f"{prefix}-tiny-") if n != new]
    swapped = gemsearch("index", "swap-alias", new, "--force", "--opensearch", url, env=env)
    assert swapped.returncode == 0 and f"-> {new} (was: {old})" in swapped.stdout, swapped.stderr
    back = gemsearch("index", "swap-alias", old, "--opensearch", url, env=env)
    assert back.returncode == 0, back.stderr
    dropped = gemsearch("index", "drop", new, "--yes", "--opensearch", url, env=env)
    assert dropped.returncode == 0 and f"dropped {new}" in dropped.stdout, dropped.stderr
    listed = gemsearch("index", "list", "--opensearch", url, "--prefix", prefix, "--json", env=env)
    (row,) = json.loads(listed.stdout)
    assert row["name"] == old and row["health"] in ("green", "yellow") and row["docs"] == 3


def _index_names(secured: SecuredCluster, start: str) -> list[str]:
    rows = secured.node.request("GET", f"/_cat/indices/{secured.prefix}-*?format=json")
    return sorted(r["index"] for r in rows if r["index"].startswith(start))


# ----------------------------------------------------------------------------- 401, TLS


def test_a_wrong_password_is_one_line_without_it(secured: SecuredCluster, files: dict[str, Path]) -> None:
    wrong = "Not-the-Password#42"
    result = gemsearch(*ingest_args(secured, files), env=secured.env(INGEST, password=wrong))
    line = one_line_error(result, f"OpenSearch at {secured.node.url} refused the credentials (401)",
                          "GEMSEARCH_OPENSEARCH_USER/_PASSWORD", "--opensearch-config")  # fmt: skip
    assert wrong not in result.stdout + result.stderr and line


def test_tls_needs_the_ca_bundle(secured: SecuredCluster) -> None:
    args = ("index", "list", "--opensearch", secured.node.url, "--prefix", secured.prefix)
    without = gemsearch(*args, env=secured.env(SEARCH, ca=False))
    one_line_error(
        without, "TLS with OpenSearch", "CERTIFICATE_VERIFY_FAILED", "GEMSEARCH_OPENSEARCH_CA_CERTS"
    )
    unverified = gemsearch(
        *args, env={**secured.env(SEARCH, ca=False), "GEMSEARCH_OPENSEARCH_VERIFY_CERTS": "false"}
    )
    warnings = [line for line in unverified.stderr.splitlines() if "NOT verified" in line]
    assert unverified.returncode == 0 and len(warnings) == 1, unverified.stderr


def test_the_host_name_is_verified(secured: SecuredCluster) -> None:
    # the node's certificate names 127.0.0.1 and localhost, not 127.0.0.2 (a relay to the same node)
    with _relay("127.0.0.2", secured.node.http_port) as port:
        url = f"https://127.0.0.2:{port}"
        env = {**secured.env(SEARCH), "GEMSEARCH_OPENSEARCH_URL": url}
        result = gemsearch("index", "list", "--opensearch", url, "--prefix", secured.prefix, env=env)
    one_line_error(result, "TLS with OpenSearch", "mismatch", "'127.0.0.2'", "a host name or address")


def test_a_client_certificate_authenticates(secured: SecuredCluster) -> None:
    args = ("index", "list", "--opensearch", secured.node.url, "--prefix", secured.prefix, "--json")
    nobody = gemsearch(*args, env=secured.env(None))
    one_line_error(nobody, "asks for credentials (401) and none were given")
    cert = {
        "GEMSEARCH_OPENSEARCH_CLIENT_CERT": str(config_file(secured.node, ADMIN_CERT)),
        "GEMSEARCH_OPENSEARCH_CLIENT_KEY": str(config_file(secured.node, ADMIN_KEY)),
    }
    with_cert = gemsearch(*args, env={**secured.env(None), **cert})
    assert with_cert.returncode == 0 and isinstance(json.loads(with_cert.stdout), list), with_cert.stderr


# ----------------------------------------------------------------------------- no password anywhere


def test_no_password_in_logs_ledger_json_or_page(
    secured: SecuredCluster, ingested: dict[str, Path], tmp_path: Path
) -> None:
    url, prefix = secured.node.url, secured.prefix
    seen = [ingested["ledger"].read_text()]
    ingest = gemsearch("-vv", *ingest_args(secured, ingested), env=secured.env(INGEST))
    found = gemsearch("-vv", "search", str(ingested["images"] / "0.png"), "--model", str(ingested["model"]),
                      "--opensearch", url, "--prefix", prefix, "--json", env=secured.env(SEARCH))  # fmt: skip
    assert ingest.returncode == 0 and found.returncode == 0 and json.loads(found.stdout)["hits"]
    seen += [ingest.stdout, ingest.stderr, found.stdout, found.stderr]
    seen += _served(secured, ingested, tmp_path)
    passwords = [secured.passwords[INGEST], secured.passwords[SEARCH]]
    passwords += [base64.b64encode(f"{u}:{secured.passwords[u]}".encode()).decode() for u in (INGEST, SEARCH)]
    for text in seen:
        assert text and not any(p in text for p in passwords)
        assert "authorization" not in text.lower() or "Basic " not in text


def _served(secured: SecuredCluster, files: dict[str, Path], tmp_path: Path) -> list[str]:
    """The page, a search answer and the log of `gemsearch serve` as the search user."""
    port = _free_port("127.0.0.1")
    log = tmp_path / "serve.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GEMSEARCH_OPENSEARCH_")}
    args = ["-v", "serve", "--model", str(files["model"]), "--opensearch", secured.node.url, "--prefix",
            secured.prefix, "--images", str(files["images"]), "--port", str(port)]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "gemsearch.cli", *args], stdout=out,
                                  stderr=subprocess.STDOUT, env={**clean, **secured.env(SEARCH)})  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        page = _get(base + "/", deadline=time.monotonic() + 60)
        answer = _search(base, files["images"] / "2.png")
        assert json.loads(answer)["hits"], answer
    finally:
        server.terminate()
        server.wait(timeout=30)
    return [page, answer, log.read_text()]


def _get(url: str, deadline: float) -> str:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return str(resp.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _search(base: str, image: Path) -> str:
    boundary = "gemsearch-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + image.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(base + "/api/search", data=body, method="POST")
    request.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
    with urllib.request.urlopen(request, timeout=60) as resp:
        return str(resp.read().decode())


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class _Relay:
    """Bytes from ``host``:<a free port> to 127.0.0.1:``port``, both ways (TLS passes through)."""

    def __init__(self, host: str, port: int) -> None:
        self.server = socket.create_server((host, 0))
        self.target = port
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def _relay(host: str, port: int) -> Iterator[int]:
    relay = _Relay(host, port)
    try:
        yield int(relay.port)
    finally:
        relay.server.close()
