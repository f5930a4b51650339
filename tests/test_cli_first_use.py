"""The command line as a new user meets it: the cluster named by the environment, URLs as the
variable takes them, full ids that other commands accept, short usage errors and a light --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from support.ingest_helpers import write_collection
from support.onnx_models import make_tiny_model
from support.opensearch_harness import OpenSearchNode

from gemsearch.cli import main
from gemsearch.cli.serve import build_config


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    make_tiny_model(path, name="tiny", dim=16)
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No cluster variables from the caller's shell; the working folder is the test's own."""
    for name in [n for n in os.environ if n.startswith("GEMSEARCH_OPENSEARCH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


# ---------------------------------------------------------------- the cluster from the environment


def test_the_url_variable_selects_opensearch_unless_store_is_given(
    model: Path, opensearch_node: OpenSearchNode, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_collection(tmp_path / "photos", 3, side=48)
    monkeypatch.setenv("GEMSEARCH_OPENSEARCH_URL", opensearch_node.url)
    common = ["--model", str(model), "--prefix", prefix]
    report = json.loads(ok("ingest", "photos", *common, "--no-progress", "--json"))
    assert not (tmp_path / "gemsearch-store").exists()  # the documents went to the cluster
    assert report["indexed"] == 3 and report["dead_letter"] is None  # nothing rejected: no file
    assert not (tmp_path / "gemsearch-dead-letter.jsonl").exists()
    assert json.loads(ok("count", *common, "--json")) == {"documents": 3}
    hits = json.loads(ok("search", "--id", _any_id(tmp_path), *common, "--json"))["hits"]
    assert len(hits) == 2
    # --store wins over the variable
    ok("ingest", "photos", "--model", str(model), "--store", "local", "--no-progress")
    assert json.loads(ok("count", "--store", "local", "--json")) == {"documents": 3}
    ok("delete", "--filter", "path=none", *common, "--yes")  # through the cluster: nothing matches
    assert json.loads(ok("count", *common, "--json")) == {"documents": 3}


def _any_id(folder: Path) -> str:
    import hashlib

    first = sorted((folder / "photos").rglob("*.*"))[0]
    return hashlib.sha256(first.read_bytes()).hexdigest()


def test_the_config_variable_selects_opensearch(
    model: Path, opensearch_node: OpenSearchNode, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(f"urls: [{opensearch_node.url}]\n")
    monkeypatch.setenv("GEMSEARCH_OPENSEARCH_CONFIG", str(config))
    result = cli("count", "--model", str(model), "--prefix", prefix)
    # the cluster answered (this model has no alias there), not a missing ./gemsearch-store
    assert result.exit_code == 1 and "no index for model tiny" in result.output, result.output
    assert opensearch_node.url in result.output


def test_serve_takes_the_cluster_from_the_environment(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flags = {"config_path": None, "model_paths": (model,), "stores": (), "opensearch_urls": ()}
    flags |= {"opensearch_config": None, "prefix": "gemsearch", "image_roots": (), "title_field": None}
    monkeypatch.setenv("GEMSEARCH_OPENSEARCH_URL", "http://search.example:9200")
    assert build_config(dict(flags), {}).models[0].store.kind == "opensearch"
    local = build_config(flags | {"stores": ("store",)}, {})  # --store wins over the variable
    assert local.models[0].store.kind == "local"


# ---------------------------------------------------------------- URLs


def test_comma_separated_urls_are_several_nodes(tmp_path: Path) -> None:
    down = [f"http://127.0.0.1:{port}" for port in (9, 13)]  # discard and daytime: nothing listens
    result = cli("index", "list", "--opensearch", ",".join(down), "--opensearch-config", _quick(tmp_path))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert f"cannot reach OpenSearch at {down[0]}, {down[1]} " in result.output


def _quick(folder: Path) -> str:
    """A connection file that gives up at once (no retries on the next node)."""
    path = folder / "quick.yaml"
    path.write_text("timeout: 2\nmax_retries: 0\n")
    return str(path)


@pytest.mark.parametrize("url", ["http://a:92x0", "http://a:9200,http://b:port"])
def test_an_invalid_url_is_one_line(url: str) -> None:
    result = cli("index", "list", "--opensearch", url)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert len(result.output.strip().splitlines()) <= 2 and "has no valid port" in result.output


# ---------------------------------------------------------------- usage errors


def gemsearch(*args: str) -> subprocess.CompletedProcess[str]:
    """The command in a fresh interpreter, named as users type it."""
    return subprocess.run(
        [sys.executable, "-m", "gemsearch.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "command", "message"),
    [
        (["ingest"], "ingest", "Missing argument 'SOURCES...'"),
        (["search", "{image}", "--model", "{model}", "--crop", "1,2"], "search", "four numbers"),
        (["search", "{image}", "--model", "{model}", "--crop", "a,b,c,d"], "search", "four numbers"),
        (["ingest", "{image}", "--model", "{model}", "--opensearch", "localhost:9200"], "ingest",
         "'localhost:9200' is not an http(s) URL"),
        (["count", "--no-such-option"], "count", "No such option"),
        (["index", "drop"], "index drop", "Missing argument 'INDEX'"),
        (["no-such-command"], "", "No such command"),
    ],
)  # fmt: skip
def test_a_usage_error_is_two_lines_and_exit_code_2(
    args: list[str], command: str, message: str, model: Path, tmp_path: Path
) -> None:
    image = tmp_path / "q.png"
    image.write_bytes(b"")  # never read: the error comes first
    given = [a.format(image=image, model=model) for a in args]
    result = gemsearch(*given)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert lines[1] == f"Try '{' '.join(['gemsearch', command]).strip()} --help'.", result.stderr


def test_ingest_help_names_exit_code_2_for_usage_errors() -> None:
    text = " ".join(ok("ingest", "--help").split())
    assert "2 for usage errors" in text


# ---------------------------------------------------------------- credentials


def with_env(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GEMSEARCH_OPENSEARCH_")}
    return subprocess.run(
        [sys.executable, "-m", "gemsearch.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "GEMSEARCH_OPENSEARCH_TIMEOUT": "2", **env},
    )


DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"GEMSEARCH_OPENSEARCH_USER": "ingest"}, "not GEMSEARCH_OPENSEARCH_PASSWORD"),
        ({"GEMSEARCH_OPENSEARCH_PASSWORD": "s3cret-pw"}, "not GEMSEARCH_OPENSEARCH_USER"),
    ],
)
def test_half_of_basic_auth_is_one_line_naming_the_other_half(env: dict[str, str], missing: str) -> None:
    result = with_env("index", "list", "--opensearch", DOWN, **env)
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()] and missing in result.stderr
    assert "s3cret-pw" not in result.stderr


@pytest.mark.parametrize(
    ("wrong", "right"), [("USERNAME", "USER"), ("PASS", "PASSWORD"), ("CA_CERT", "CA_CERTS")]
)
def test_a_misspelt_variable_is_named_with_the_right_spelling(wrong: str, right: str) -> None:
    env = {"GEMSEARCH_OPENSEARCH_USER": "u", "GEMSEARCH_OPENSEARCH_PASSWORD": "p"}
    env.pop(f"GEMSEARCH_OPENSEARCH_{right}", None)
    result = with_env("index", "list", "--opensearch", DOWN, **env, **{f"GEMSEARCH_OPENSEARCH_{wrong}": "x"})
    warning = f"unknown variable GEMSEARCH_OPENSEARCH_{wrong} (did you mean GEMSEARCH_OPENSEARCH_{right}?)"
    lines = [line for line in result.stderr.splitlines() if warning in line]
    assert len(lines) == 1, result.stderr


def test_basic_auth_over_http_warns_that_the_password_is_not_encrypted() -> None:
    env = {"GEMSEARCH_OPENSEARCH_USER": "u", "GEMSEARCH_OPENSEARCH_PASSWORD": "s3cret-pw"}
    result = with_env("index", "list", "--opensearch", DOWN, **env)
    warnings = [line for line in result.stderr.splitlines() if "travels unencrypted" in line]
    assert len(warnings) == 1 and DOWN in warnings[0] and "s3cret-pw" not in result.stderr
    plain = with_env("index", "list", "--opensearch", DOWN)
    assert "unencrypted" not in plain.stderr


def test_an_unknown_config_key_suggests_the_known_one(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(f"url: {DOWN}\n")
    result = with_env("index", "list", "--opensearch-config", str(config))
    assert result.returncode == 1 and "url: unknown setting (did you mean 'urls'?)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_library_errors_name_settings_and_the_cli_names_its_options() -> None:
    from gemsearch.errors import StoreError
    from gemsearch.plugin.stores.opensearch.connection import OpenSearchConfig, make_client
    from gemsearch.plugin.stores.opensearch.index_admin import list_indices

    client = make_client(OpenSearchConfig(urls=(DOWN,), timeout=2, max_retries=0))
    with pytest.raises(StoreError) as raised:
        list_indices(client, "gemsearch")
    assert "the urls setting or GEMSEARCH_OPENSEARCH_URL" in str(raised.value)
    assert "--" not in str(raised.value)  # no option of a command the caller is not running
    result = with_env("index", "list", "--opensearch", DOWN)
    assert "Set the URL with --opensearch or GEMSEARCH_OPENSEARCH_URL." in result.stderr


# ---------------------------------------------------------------- delete


def test_delete_without_a_terminal_says_to_pass_yes_and_dry_run_lists_the_ids(
    model: Path, tmp_path: Path
) -> None:
    files = write_collection(tmp_path / "photos", 3, side=48)
    ok("ingest", "photos", "--model", str(model), "--store", "s", "--no-progress")
    ids = sorted(files)
    for answer in (None, "y\n"):  # stdin is no terminal: nothing is asked, nothing deleted
        result = cli("delete", ids[0], "--store", "s", input=answer)
        assert result.exit_code == 1 and "Aborted" not in result.output, result.output
        assert result.output == "Error: no terminal to confirm the deletion on: pass --yes\n"
    dry = json.loads(ok("delete", ids[0], ids[1], "0" * 64, "--store", "s", "--dry-run", "--json"))
    assert dry == {"would_delete": 2, "ids": ids[:2], "ids_listed": 2}
    assert json.loads(ok("count", "--store", "s", "--json")) == {"documents": 3}
