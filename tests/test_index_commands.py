"""``gemsearch index ...`` and the connection settings, against the real node (through a proxy
where the test needs to see what the client sent)."""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper
from opensearchpy import OpenSearch
from opensearchpy.exceptions import SSLError
from support.fault_proxy import FaultProxy
from support.onnx_models import make_tiny_model
from support.opensearch_harness import OpenSearchNode

from gemsearch.cli import main
from gemsearch.errors import ConfigError, MissingDependencyError
from gemsearch.manifest import ModelManifest, PoolingSpec
from gemsearch.plugin.stores.opensearch.bulk import BulkDoc, BulkError, BulkWriter
from gemsearch.plugin.stores.opensearch.connection import OpenSearchConfig, client_kwargs, make_client
from gemsearch.plugin.stores.opensearch.index_admin import IndexOptions, alias_targets
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore
from gemsearch.protocols import Record


def make_manifest(dims: int, weights: bytes = b"v1") -> ModelManifest:
    return ModelManifest(
        name="toy",
        version=hashlib.sha256(weights).hexdigest(),
        backbone="resnet50",
        pooling=PoolingSpec(kind="gem", p=3.0),
        output_dim=dims,
    )


@pytest.fixture
def cli(opensearch_node: OpenSearchNode, prefix: str) -> Iterator[CliRunner]:
    yield CliRunner(env={"GEMSEARCH_OPENSEARCH_URL": opensearch_node.url, "GEMSEARCH_OPENSEARCH_CONFIG": ""})


def run(cli: CliRunner, *args: str, input: str | None = None) -> tuple[int, str]:
    result = cli.invoke(main, ["index", *args], input=input)
    return result.exit_code, result.output


def test_create_list_swap_and_drop(
    cli: CliRunner, opensearch: OpenSearch, prefix: str, tmp_path: Path
) -> None:
    v1, v2 = make_manifest(dims=8, weights=b"1"), make_manifest(dims=8, weights=b"2")
    (tmp_path / "v1.json").write_text(v1.to_json())
    (tmp_path / "v2.json").write_text(v2.to_json())
    i1, i2, alias = v1.index_name(prefix), v2.index_name(prefix), v1.alias_name(prefix)

    code, out = run(cli, "create", str(tmp_path / "v1.json"), "--prefix", prefix)
    assert code == 0 and f"index {i1} ready (8 dims)" in out
    code, out = run(cli, "create", str(tmp_path / "v2.json"), "--prefix", prefix, "--json")
    assert code == 0 and json.loads(out) == {"index": i2, "alias": alias, "dims": 8}

    code, out = run(cli, "list", "--prefix", prefix, "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows[i1]["aliases"] == [alias] and rows[i2]["aliases"] == []
    assert (rows[i2]["model"], rows[i2]["version"], rows[i2]["dims"]) == ("toy", v2.version, 8)
    assert run(cli, "list", "--prefix", f"{prefix}x") == (0, f"no indices named {prefix}x-*\n")
    code, out = run(cli, "list", "--prefix", prefix)
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["index", "aliases", "model", "version"]
    assert lines[1].split()[:5] == [i1, alias, "toy", v1.version8, "8"]

    code, out = run(cli, "swap-alias", i2, "--prefix", prefix)
    assert code == 1 and f"index {i2} is empty" in out and alias_targets(opensearch, alias) == [i1]
    assert "(use --force)" in out
    store = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    store.ensure_index(v2)
    store.upsert([Record(id="a", vector=np.full(8, 8**-0.5, dtype=np.float32))])
    code, out = run(cli, "swap-alias", i2, "--alias", f"{prefix}-other", "--prefix", prefix)
    assert code == 1 and f"serves alias {alias}, not {prefix}-other" in out
    code, out = run(cli, "swap-alias", i2, "--prefix", prefix)
    assert code == 0 and f"alias {alias} -> {i2} (was: {i1})" in out
    assert alias_targets(opensearch, alias) == [i2]

    code, out = run(cli, "drop", i2, "--yes", "--prefix", prefix)
    assert code != 0 and f"still serves alias {alias}; swap it first or drop with --force" in out
    code, out = run(cli, "drop", i1, "--prefix", prefix, input="n\n")
    assert code != 0 and opensearch.indices.exists(index=i1)
    code, out = run(cli, "drop", i1, "--yes", "--prefix", prefix)
    assert code == 0 and not opensearch.indices.exists(index=i1)
    assert opensearch.indices.exists(index=i2)


def test_create_refuses_an_index_of_another_dimension(cli: CliRunner, prefix: str, tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(make_manifest(dims=8).to_json())
    (tmp_path / "b.json").write_text(make_manifest(dims=16).to_json())  # same name and version
    assert run(cli, "create", str(tmp_path / "a.json"), "--prefix", prefix)[0] == 0
    code, out = run(cli, "create", str(tmp_path / "b.json"), "--prefix", prefix)
    assert code == 1 and "refusing to write into index" in out and "dimension is 8" in out


def test_create_reads_the_manifest_inside_an_onnx_model(cli: CliRunner, prefix: str, tmp_path: Path) -> None:
    manifest = make_tiny_model(tmp_path / "m.onnx", dim=4)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    code, out = run(cli, "create", str(tmp_path / "m.onnx"), "--prefix", prefix, "--json")
    assert code == 0, out
    assert json.loads(out)["index"] == manifest.index_name(prefix)
    onnx.save(helper.make_model(graph), tmp_path / "plain.onnx")  # no manifest
    code, out = run(cli, "create", str(tmp_path / "plain.onnx"), "--prefix", prefix)
    assert code == 1 and "no gemsearch manifest" in out


def test_credentials_in_a_url_are_refused(cli: CliRunner) -> None:
    code, out = run(cli, "list", "--opensearch", "http://admin:secret@127.0.0.1:9200")
    assert code == 2 and "credentials inside a URL" in out and "secret" not in out.replace("secret@", "")


def test_old_option_spellings_still_work_with_a_warning(
    opensearch_node: OpenSearchNode, prefix: str, tmp_path: Path
) -> None:
    cli = CliRunner(env={"GEMSEARCH_OPENSEARCH_URL": "", "GEMSEARCH_OPENSEARCH_CONFIG": ""})
    connection = tmp_path / "os.yaml"
    connection.write_text(f"urls: [{opensearch_node.url}]\n")
    model = make_tiny_model(tmp_path / "m.onnx", dim=4)
    code, out = run(cli, "create", str(tmp_path / "m.onnx"), "--config", str(connection), "--prefix", prefix,
                    "--shards", "2", "--json")  # fmt: skip
    assert code == 0, out
    assert "--config is deprecated, use --opensearch-config" in out and "--shards is deprecated" in out
    index = json.loads(out.splitlines()[-1])["index"]
    settings = OpenSearch(hosts=[opensearch_node.url]).indices.get_settings(index=index)
    assert settings[index]["settings"]["index"]["number_of_shards"] == "2"
    code, out = run(cli, "list", "--url", opensearch_node.url, "--prefix", prefix, "--json")
    assert code == 0 and "--url is deprecated, use --opensearch" in out
    assert index in {i["name"] for i in json.loads(out[out.index("[") :])}
    code, out = run(cli, "list", "--opensearch", opensearch_node.url, "--prefix", prefix)
    assert code == 0 and "deprecated" not in out and model.index_name(prefix) in out


def test_the_new_spelling_wins_and_alone_warns_nothing(cli: CliRunner, prefix: str, tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "m.onnx", dim=4)
    code, out = run(
        cli, "create", str(tmp_path / "m.onnx"), "--prefix", prefix, "--index-shards", "2", "--json"
    )
    assert code == 0 and "deprecated" not in out, out
    code, out = run(cli, "create", str(tmp_path / "m.onnx"), "--prefix", f"{prefix}-b", "--index-shards", "2",
                    "--shards", "3", "--json")  # fmt: skip
    assert code == 0 and "--shards is deprecated" in out, out
    index = json.loads(out.splitlines()[-1])["index"]
    node = OpenSearch(hosts=[cli.make_env()["GEMSEARCH_OPENSEARCH_URL"] or ""])
    assert node.indices.get_settings(index=index)[index]["settings"]["index"]["number_of_shards"] == "2"


def test_create_takes_a_model_by_its_name_in_the_models_cache(
    cli: CliRunner, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMSEARCH_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    manifest = make_tiny_model(tmp_path / "models" / "tiny-named.onnx", dim=4)
    code, out = run(cli, "create", "tiny-named", "--prefix", prefix, "--json")
    assert code == 0 and json.loads(out)["index"] == manifest.index_name(prefix), out
    code, out = run(cli, "create", "no-such-model", "--prefix", prefix)
    assert code == 1 and "no such model file" in out


def test_config_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "os.yaml"
    path.write_text(
        "opensearch:\n  urls: [https://a:9200]\n  user: alice\n  password: from-file\n  timeout: 5\n"
    )
    path.chmod(0o600)
    env = {"GEMSEARCH_OPENSEARCH_CONFIG": str(path), "GEMSEARCH_OPENSEARCH_PASSWORD": "from-env"}
    config = OpenSearchConfig.load(env=env, urls=["https://b:9200", "https://c:9200"])
    assert config.urls == ("https://b:9200", "https://c:9200") and config.user == "alice"
    assert config.password is not None and config.password.get_secret_value() == "from-env"
    assert (
        config.timeout == 5 and "from-env" not in repr(config) and "from-env" not in config.model_dump_json()
    )
    env_only = OpenSearchConfig.load(env={"GEMSEARCH_OPENSEARCH_URL": "http://x:1, http://y:2"})
    assert env_only.urls == ("http://x:1", "http://y:2") and env_only.user is None
    kwargs = client_kwargs(config)
    assert kwargs["http_auth"] == ("alice", "from-env") and kwargs["use_ssl"] and kwargs["verify_certs"]
    with pytest.raises(ConfigError, match="ca_certs"):  # a CA bundle that is not there
        OpenSearchConfig.load(env={"GEMSEARCH_OPENSEARCH_CA_CERTS": str(tmp_path / "missing.pem")})


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("urls: [http://a:1\n", ".yaml", "not valid JSON/YAML"),
        ("{", ".json", "not valid JSON/YAML"),
        ("- just\n- a list\n", ".yml", "must hold a mapping"),
        ("urlz: [http://a:1]\n", ".yaml", "urlz"),
        ("urls: [ftp://a]\n", ".yaml", "not an http"),
    ],
)
def test_bad_config_files_get_a_clear_error(tmp_path: Path, text: str, suffix: str, message: str) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        OpenSearchConfig.load(path, env={})


def test_basic_auth_reaches_the_node(opensearch_node: OpenSearchNode) -> None:
    with FaultProxy(opensearch_node.url) as proxy:
        env = {"GEMSEARCH_OPENSEARCH_USER": "ingest", "GEMSEARCH_OPENSEARCH_PASSWORD": "s3cret"}
        client = make_client(OpenSearchConfig.load(env=env, urls=[proxy.url]))
        assert client.info()["version"]["number"]
    expected = "Basic " + base64.b64encode(b"ingest:s3cret").decode()
    assert proxy.requests[-1].headers.get("authorization") == expected


def test_aws_sigv4_signs_requests(opensearch_node: OpenSearchNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with FaultProxy(opensearch_node.url) as proxy:
        client = make_client(OpenSearchConfig(urls=(proxy.url,), aws_region="eu-west-1"))
        assert client.count()["count"] >= 0  # the node has no security plugin: it ignores the signature
    auth = proxy.requests[-1].headers.get("authorization", "")
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/es/aws4_request" in auth and "x-amz-date" in proxy.requests[-1].headers
    with pytest.raises(ConfigError, match="choose one authentication"):
        client_kwargs(OpenSearchConfig(aws_region="eu-west-1", user="u"))


def test_aws_without_boto3_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'gemsearch\[aws\]'"):
        client_kwargs(OpenSearchConfig(aws_region="eu-west-1"))


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate it signed for 127.0.0.1: (ca, cert, key)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key, cert, key, csr = (folder / n for n in ("ca.pem", "ca.key", "srv.pem", "srv.key", "srv.csr"))
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for cmd in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=gemsearch test CA"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "1",
        ],
    ):
        extra = ["-extfile", str(folder / "san.ext")] if cmd[0] == "x509" else []
        subprocess.run(["openssl", *map(str, cmd), *extra], check=True, capture_output=True, timeout=60)
    return ca, cert, key


def test_tls_with_a_ca_bundle(opensearch_node: OpenSearchNode, tmp_path: Path) -> None:
    ca, cert, key = _certificates(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    with FaultProxy(opensearch_node.url, tls=server) as proxy:
        assert proxy.url.startswith("https://")
        env = {"GEMSEARCH_OPENSEARCH_URL": proxy.url, "GEMSEARCH_OPENSEARCH_CA_CERTS": str(ca)}
        trusted = make_client(OpenSearchConfig.load(env=env, max_retries=0))
        assert trusted.info()["version"]["number"]
        untrusted = make_client(OpenSearchConfig(urls=(proxy.url,), max_retries=0, timeout=5))
        with pytest.raises(SSLError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.info()
        started = time.monotonic()
        with pytest.raises(BulkError, match="TLS handshake"):  # not retried for minutes
            BulkWriter(untrusted, "any").write([BulkDoc("a", {"x": 1})])
        assert time.monotonic() - started < 5
        unverified = make_client(OpenSearchConfig(urls=(proxy.url,), verify_certs=False, max_retries=0))
        assert unverified.info()["version"]["number"]
    assert len(proxy.requests) == 2  # the refused handshake never became a request


def test_create_records_the_decode_mode_and_refuses_the_other_one(
    cli: CliRunner, opensearch: OpenSearch, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = make_manifest(dims=8)
    (tmp_path / "m.json").write_text(manifest.to_json())
    name = manifest.index_name(prefix)
    assert run(cli, "create", str(tmp_path / "m.json"), "--prefix", prefix, "--exact-decode")[0] == 0
    meta = opensearch.indices.get_mapping(index=name)[name]["mappings"]["_meta"]["gemsearch"]
    assert meta["decode"] == "exact"
    code, out = run(cli, "create", str(tmp_path / "m.json"), "--prefix", prefix)  # draft: another mode
    assert code == 1 and "exact" in out and "draft" in out and len(out.strip().splitlines()) <= 3
    monkeypatch.setenv("GEMSEARCH_DECODE", "exact")  # the mode ingest and search take from it too
    assert run(cli, "create", str(tmp_path / "m.json"), "--prefix", prefix)[0] == 0
