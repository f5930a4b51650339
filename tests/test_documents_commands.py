"""``gemsearch count`` and ``gemsearch delete`` on a LocalStore and on the real OpenSearch node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from opensearchpy import OpenSearch
from support.ingest_helpers import write_collection
from support.onnx_models import make_tiny_model

from gemsearch.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    make_tiny_model(path, name="tiny", dim=16)
    return path


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout


def _ingest(model: Path, folder: Path, *where: str) -> dict[str, Path]:
    files = write_collection(folder, 8, side=64)
    code, out = _cli("ingest", str(folder), "--model", str(model), *where, "--no-progress")
    assert code == 0, out
    return files


def _run_both(model: Path, tmp_path: Path, where: list[str]) -> None:
    files = _ingest(model, tmp_path / "photos", *where)
    assert _cli("count", *where, "--json") == (0, json.dumps({"documents": 8}) + "\n")
    ids = sorted(files)
    removed = tmp_path / "removed.jsonl"
    removed.write_text(
        "".join(json.dumps({"path": str(files[i])}) + "\n" for i in ids[:2])  # ids by content hash
        + json.dumps({"path": "gone.jpg"})
        + "\n"  # a file that is not there: failed
    )
    ledger = tmp_path / "ledger.jsonl"
    args = ["delete", ids[2], "nope", "--manifest", str(removed), *where, "--yes", "--json"]
    code, out = _cli(*args, "--ledger", str(ledger))
    assert code == 1 and json.loads(out) == {"deleted": 3, "not_found": 1, "failed": 1}
    fates = [json.loads(line)["fate"] for line in ledger.read_text().splitlines()]
    assert sorted(fates) == ["deleted", "deleted", "deleted", "failed", "not_found"]
    assert _cli("count", *where) == (0, "5 documents\n")
    code, out = _cli("delete", ids[2], *where, "--yes", "--json")  # again: nothing left to delete
    assert code == 1 and json.loads(out) == {"deleted": 0, "not_found": 1, "failed": 0}


def test_count_and_delete_in_a_local_store(model: Path, tmp_path: Path) -> None:
    _run_both(model, tmp_path, ["--store", str(tmp_path / "store")])


@pytest.mark.opensearch
def test_count_and_delete_through_a_model_alias_in_opensearch(
    model: Path, tmp_path: Path, opensearch: OpenSearch, prefix: str
) -> None:
    url = str(opensearch.transport.get_connection().host)
    _run_both(model, tmp_path, ["--model", str(model), "--opensearch", url, "--prefix", prefix])


def test_delete_needs_ids_and_opensearch_needs_the_model(tmp_path: Path) -> None:
    code, _ = _cli("delete", "--store", str(tmp_path / "s"), "--yes")
    assert code == 2
    code, _ = _cli("count", "--opensearch", "http://127.0.0.1:9")
    assert code == 2


def _run_filter(model: Path, tmp_path: Path, where: list[str]) -> None:
    files = write_collection(tmp_path / "photos", 12, side=64)
    manifest = tmp_path / "photos.jsonl"
    albums = {doc_id: ("nature" if n % 3 else "city", 2000 + n) for n, doc_id in enumerate(sorted(files))}
    manifest.write_text(
        "".join(
            json.dumps({"path": str(files[i]), "album": albums[i][0], "year": albums[i][1]}) + "\n"
            for i in sorted(files)
        )
    )
    code, out = _cli("ingest", str(manifest), "--model", str(model), *where, "--no-progress")
    assert code == 0, out
    nature = {i for i, (album, _) in albums.items() if album == "nature"}
    old_nature = {i for i in nature if albums[i][1] < 2008}
    assert _cli("count", *where, "--filter", "album=nature") == (
        0,
        f"{len(nature)} documents match album=nature\n",
    )
    both = ["--filter", "album=nature", "--filter", "year<2008"]
    assert _cli("count", *where, *both, "--json") == (0, json.dumps({"documents": len(old_nature)}) + "\n")

    code, out = _cli("delete", *both, *where, "--dry-run", "--json")
    assert code == 0 and json.loads(out)["would_delete"] == len(old_nature)
    assert set(json.loads(out)["ids"]) == old_nature and json.loads(out)["ids_listed"] == len(old_nature)
    assert _cli("count", *where) == (0, "12 documents\n")  # a dry run deletes nothing

    ledger = tmp_path / "ledger.jsonl"
    code, out = _cli("delete", *both, *where, "--yes", "--json", "--ledger", str(ledger))
    assert code == 0 and json.loads(out) == {"deleted": len(old_nature), "not_found": 0, "failed": 0}
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert {line["id"] for line in lines} == old_nature and {line["fate"] for line in lines} == {"deleted"}
    assert all(line["source"] == "filter album=nature year<2008" for line in lines)
    assert _cli("count", *where) == (0, f"{12 - len(old_nature)} documents\n")
    assert (
        _cli("count", *where, "--filter", "album=nature", "--json")[1]
        == json.dumps({"documents": len(nature - old_nature)}) + "\n"
    )
    code, out = _cli("delete", *both, *where, "--yes", "--json")  # again: nothing matches
    assert code == 0 and json.loads(out) == {"deleted": 0, "not_found": 0, "failed": 0}
    result = CliRunner().invoke(main, ["count", *where, "--filter", "albm=nature"])
    assert result.stdout.startswith("0 documents") and "no document has the field 'albm'" in result.stderr


def test_count_and_delete_by_filter_in_a_local_store(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gemsearch.cli.documents.DELETE_CHUNK", 2)  # several chunks, each reported
    _run_filter(model, tmp_path, ["--store", str(tmp_path / "store")])


@pytest.mark.opensearch
def test_count_and_delete_by_filter_through_a_model_alias_in_opensearch(
    model: Path, tmp_path: Path, opensearch: OpenSearch, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pages of 2 ids: the scroll goes on while the ids of earlier pages are being deleted
    monkeypatch.setattr("gemsearch.plugin.stores.opensearch.store.MGET_CHUNK", 2)
    monkeypatch.setattr("gemsearch.cli.documents.DELETE_CHUNK", 2)
    url = str(opensearch.transport.get_connection().host)
    _run_filter(model, tmp_path, ["--model", str(model), "--opensearch", url, "--prefix", prefix])


def test_delete_by_filter_takes_no_ids_and_parses_like_search(tmp_path: Path) -> None:
    code, _ = _cli("delete", "abc", "--filter", "a=1", "--store", str(tmp_path / "s"), "--yes")
    assert code == 2
    result = CliRunner().invoke(main, ["delete", "--filter", "a", "--store", str(tmp_path / "s"), "--yes"])
    assert result.exit_code == 1 and "must look like field=value" in result.output
