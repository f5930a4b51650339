"""``gemsearch search``: table and JSON output, crops, filters, search by id, both stores, usage errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from opensearchpy import OpenSearch
from PIL import Image
from support.opensearch_harness import OpenSearchNode
from support.query_data import Photo, fill_store, tiny_model, write_photos

from gemsearch.cli import main
from gemsearch.cli.search import parse_filters
from gemsearch.errors import ConfigError
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Photo]]:
    root = tmp_path_factory.mktemp("search-cli")
    photos = write_photos(root / "photos")
    tiny_model(root / "tiny.onnx")
    with LocalStore(root / "store") as store:
        fill_store(store, OnnxEmbedder(root / "tiny.onnx"), photos)
    return root, photos


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["search", *args])
    return result.exit_code, result.output


def test_table_lists_the_photo_itself_first(setup: tuple[Path, list[Photo]]) -> None:
    root, photos = setup
    code, out = _run(str(photos[0].path), "--model", str(root / "tiny.onnx"), "--store", str(root / "store"))
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["#", "score", "id", "image", "metadata"]
    assert len(lines) == 1 + len(photos)  # k=10 > 7 documents: every one of them
    first = lines[1].split()
    assert first[0] == "1" and float(first[1]) == pytest.approx(1.0, abs=1e-3)
    assert first[2] == photos[0].id and first[3] == str(photos[0].path)


def test_the_id_the_table_prints_is_one_search_and_delete_take(
    setup: tuple[Path, list[Photo]], tmp_path: Path
) -> None:
    root, photos = setup
    store = tmp_path / "store"
    shutil.copytree(root / "store", store)
    where = ["--model", str(root / "tiny.onnx"), "--store", str(store)]
    code, out = _run(str(photos[3].path), *where, "-k", "1")
    assert code == 0, out
    printed = out.splitlines()[1].split()[2]
    code, out = _run("--id", printed, *where, "-k", "1")
    assert code == 0 and "no document" not in out, out
    deleted = CliRunner().invoke(main, ["delete", printed, "--store", str(store), "--yes"])
    assert deleted.exit_code == 0 and deleted.output.startswith("deleted 1, not_found 0"), deleted.output
    again = CliRunner().invoke(main, ["delete", printed, "--store", str(store), "--yes"])
    assert again.exit_code == 1, again.output
    assert again.output.strip() == "deleted 0, not_found 1, failed 0 (exit code 1: 1 not found)"


def test_json_with_crop_filter_and_k(setup: tuple[Path, list[Photo]]) -> None:
    root, photos = setup
    with Image.open(photos[2].path) as im:
        w, h = im.size
    args = [str(photos[2].path), "--model", str(root / "tiny.onnx"), "--store", str(root / "store")]
    crop = f"{w // 5},{h // 5},{w * 3 // 5},{h * 3 // 5}"
    code, out = _run(*args, "--crop", crop, "-k", "2", "--filter", "group=even", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["model"] == "tiny" and result["k"] == 2 and len(result["hits"]) == 2
    assert all(hit["metadata"]["group"] == "even" for hit in result["hits"])
    assert set(result["timings"]) == {"decode_ms", "embed_ms", "knn_ms", "expand_ms"}
    assert set(result) == {"model", "k", "hits", "timings"}
    for rank, hit in enumerate(result["hits"], 1):
        assert list(hit) == ["rank", "id", "score", "image_ref", "metadata"]
        assert hit["rank"] == rank and hit["score"] == round(hit["score"], 4)
        assert len(str(hit["score"]).partition(".")[2]) <= 4
    code, out = _run(*args, "--filter", "year>=2005", "--json", "--expand", "2")
    assert code == 0, out
    assert sorted(h["metadata"]["year"] for h in json.loads(out)["hits"]) == [2005, 2006]


def test_a_filter_on_a_field_no_document_has_warns(setup: tuple[Path, list[Photo]]) -> None:
    root, photos = setup
    args = [str(photos[0].path), "--model", str(root / "tiny.onnx"), "--store", str(root / "store")]
    result = CliRunner().invoke(main, ["search", *args, "--filter", "album=x", "--filter", "group=even"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "no results"
    warning = "warning: no document has the field 'album'; the filter matches nothing"
    assert result.stderr.strip() == warning  # group is known: no warning for it
    result = CliRunner().invoke(main, ["search", *args, "--filter", "album=x", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["hits"] == []
    assert result.stderr.strip() == warning
    result = CliRunner().invoke(main, ["search", *args, "--filter", "group=none"])
    assert result.exit_code == 0 and result.stderr == ""  # a known field that matches nothing
    result = CliRunner().invoke(main, ["search", *args, "--filter", "group>=5"])  # group holds text
    assert result.exit_code == 0 and result.stdout.strip() == "no results"
    assert "warning: the field 'group' holds only text" in result.stderr
    where = ["--model", str(root / "tiny.onnx"), "--store", str(root / "store")]
    result = CliRunner().invoke(main, ["count", *where, "--filter", "group>=5"])
    assert result.stdout.startswith("0 documents") and "the field 'group' holds only text" in result.stderr


def test_search_by_id(setup: tuple[Path, list[Photo]]) -> None:
    root, photos = setup
    code, out = _run("--id", photos[1].id, "--model", str(root / "tiny.onnx"), "--store", str(root / "store"))
    assert code == 0, out
    assert len(out.splitlines()) == len(photos)  # header + everything but the document itself
    assert photos[1].id not in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "either IMAGE or --id"),
        (["--crop", "1,2,3"], "four numbers"),
        (["--crop", "0,0,9999,10"], "crop 0,0,9999,10 (x,y,w,h) leaves the "),
        (["--filter", "nonsense"], "must look like"),
        (["-k", "0"], "k must be"),
        (["--id", "nope"], "either IMAGE or --id"),
    ],
)
def test_usage_errors_are_readable(setup: tuple[Path, list[Photo]], extra: list[str], message: str) -> None:
    root, photos = setup
    image = [] if extra == [] else [str(photos[0].path)]
    code, out = _run(*image, "--model", str(root / "tiny.onnx"), "--store", str(root / "store"), *extra)
    assert code != 0
    assert message in out
    assert "Traceback" not in out


def test_missing_document_and_missing_store(setup: tuple[Path, list[Photo]], tmp_path: Path) -> None:
    root, _ = setup
    code, out = _run("--id", "nope", "--model", str(root / "tiny.onnx"), "--store", str(root / "store"))
    assert code == 1 and "no document 'nope'" in out
    code, out = _run("--id", "x", "--model", str(root / "tiny.onnx"), "--store", str(tmp_path / "none"))
    assert code == 1 and "no LocalStore" in out


def test_parse_filters() -> None:
    assert parse_filters(["a=x", "a=2", "b>=1", "b<3.5", "c=true", 'd="7"']) == {
        "a": ["x", 2],
        "b": {"gte": 1, "lt": 3.5},
        "c": True,
        "d": "7",
    }
    assert parse_filters([]) is None
    with pytest.raises(ConfigError):
        parse_filters(["a>=1", "a=2"])
    with pytest.raises(ConfigError):
        parse_filters(["=3"])


def test_opensearch_store(
    setup: tuple[Path, list[Photo]], opensearch: OpenSearch, opensearch_node: OpenSearchNode, prefix: str
) -> None:
    root, photos = setup
    store = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    fill_store(store, OnnxEmbedder(root / "tiny.onnx"), photos)
    args = ["--model", str(root / "tiny.onnx"), "--opensearch", opensearch_node.url, "--prefix", prefix]
    code, out = _run(str(photos[4].path), *args, "-k", "3", "--filter", "group=odd", "--json")
    assert code == 0, out
    hits = json.loads(out)["hits"]
    assert len(hits) == 3 and all(h["metadata"]["group"] == "odd" for h in hits)
    code, out = _run(str(photos[4].path), *args, "-k", "1")
    assert code == 0 and photos[4].id in out
    result = CliRunner().invoke(main, ["search", str(photos[4].path), *args, "--filter", "album=x"])
    assert result.exit_code == 0 and result.stdout.strip() == "no results", result.output
    assert "no document has the field 'album'" in result.stderr
    result = CliRunner().invoke(main, ["search", str(photos[4].path), *args, "--filter", "group=none"])
    assert result.exit_code == 0 and result.stderr == "", result.output  # mapped: no warning


def test_model_by_name_from_the_cache(
    setup: tuple[Path, list[Photo]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, photos = setup
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.onnx").write_bytes((root / "tiny.onnx").read_bytes())
    monkeypatch.setenv("GEMSEARCH_CACHE", str(tmp_path))
    code, out = _run(str(photos[5].path), "--model", "tiny", "--store", str(root / "store"), "-k", "1")
    assert code == 0, out
    assert photos[5].id in out
    code, out = _run(str(photos[5].path), "--model", "no-such-model", "--store", str(root / "store"))
    assert code == 1 and "no such model file" in out
