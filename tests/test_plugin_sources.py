"""Sources: folders, manifests and path lists give the right items in a fixed order; shards split exactly."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import pytest

from gemsearch.errors import ConfigError, SourceError
from gemsearch.plugin.inputs.sources import (
    Shard,
    SourceItem,
    doc_id_for,
    document_id,
    iter_csv,
    iter_directory,
    iter_jsonl,
    iter_sources,
    open_source,
    parse_shard,
    select_shard,
    shard_of,
)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def _keys(items: object) -> list[str]:
    return [item.shard_key for item in items]  # type: ignore[attr-defined]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in ["b.jpg", "a.PNG", "sub.jpg", "sub/c.jpeg", "sub/deeper/d.webp", "notes.txt"]:
        _touch(root / name)
    for name in [".hidden.jpg", ".cache/x.jpg", "._a.jpg"]:
        _touch(root / name)
    return root


def test_folder_recursive_filtered_sorted(tree: Path) -> None:
    items = list(iter_directory(tree))
    assert _keys(items) == ["a.PNG", "b.jpg", "sub/c.jpeg", "sub/deeper/d.webp", "sub.jpg"]
    assert all(item.path == tree / item.shard_key for item in items)
    assert {item.root for item in items} == {Path(os.path.realpath(tree))}
    assert all(item.id is None and not item.metadata for item in items)
    assert _keys(iter_directory(tree, extensions=[".TXT"])) == ["notes.txt"]
    every = _keys(iter_directory(tree, extensions=None, include_hidden=True))
    assert every == [
        "._a.jpg",
        ".cache/x.jpg",
        ".hidden.jpg",
        "a.PNG",
        "b.jpg",
        "notes.txt",
        *_keys(items)[2:],
    ]


def test_folder_symlinks_and_special_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "root"
    inside = _touch(root / "real.jpg")
    secret = _touch(tmp_path / "outside" / "secret.jpg")
    (root / "escape.jpg").symlink_to(secret)
    (root / "alias.jpg").symlink_to(inside)
    (root / "dirlink").symlink_to(root)  # a cycle, if it were followed
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    os.mkfifo(root / "pipe.jpg")
    with caplog.at_level(logging.INFO, logger="gemsearch.plugin.inputs.sources"):
        keys = _keys(iter_directory(root))
    assert keys == ["alias.jpg", "real.jpg"]
    assert "escape.jpg: a symlink to" in caplog.text and "outside" in caplog.text
    assert "pipe.jpg: not a regular file" in caplog.text


def test_missing_folder() -> None:
    with pytest.raises(SourceError, match="not a folder"):
        list(iter_directory("/no/such/folder"))


def test_jsonl_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "m" / "list.jsonl"
    manifest.parent.mkdir()
    rows = [
        {"path": "imgs/a.jpg", "id": "A", "label": "tower", "year": 1889},
        {"path": "/abs/b.png", "id": 7},
        {"path": "c.jpg", "id": "", "tags": ["x", "y"]},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    items = list(iter_jsonl(manifest))
    assert [i.path for i in items] == [
        manifest.parent / "imgs/a.jpg",
        Path("/abs/b.png"),
        manifest.parent / "c.jpg",
    ]
    assert [i.id for i in items] == ["A", "7", None]
    assert [dict(i.metadata) for i in items] == [{"label": "tower", "year": 1889}, {}, {"tags": ["x", "y"]}]
    assert _keys(items) == ["imgs/a.jpg", "/abs/b.png", "c.jpg"]
    assert items[2].origin == f"{manifest}:4"


def test_jsonl_bad_rows_name_their_line(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.jsonl"
    lines = [
        '{"path": "ok1.jpg"}',
        "{not json",
        "[1, 2]",
        '{"id": "x"}',
        '{"path": "a", "id": true}',
        '{"path": "ok2.jpg"}',
    ]
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(SourceError, match=r"bad\.jsonl:2: not valid JSON"):
        list(iter_jsonl(manifest))
    errors: list[SourceError] = []
    items = list(iter_jsonl(manifest, on_bad_row=errors.append))
    assert _keys(items) == ["ok1.jpg", "ok2.jpg"]
    assert [e.origin for e in errors] == [f"{manifest}:{n}" for n in (2, 3, 4, 5)]
    assert (
        "expected a JSON object" in str(errors[1]) and "'path'" in str(errors[2]) and "'id'" in str(errors[3])
    )


def test_csv_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(
        '\ufeffpath,id,label\na.jpg,,"Eiffel, tower"\nsub/b.jpg,B2,bridge\n', encoding="utf-8"
    )
    items = list(iter_csv(manifest))
    assert [i.path for i in items] == [tmp_path / "a.jpg", tmp_path / "sub/b.jpg"]
    assert [i.id for i in items] == [None, "B2"]
    assert [dict(i.metadata) for i in items] == [{"label": "Eiffel, tower"}, {"label": "bridge"}]
    assert items[1].origin == f"{manifest}:3"


def test_csv_bad_rows_and_headers(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.csv"
    manifest.write_text("path,label\nok.jpg,a\nx.jpg,b,extra\ny.jpg\n,empty path\n")
    errors: list[SourceError] = []
    assert _keys(iter_csv(manifest, on_bad_row=errors.append)) == ["ok.jpg"]
    assert [(e.origin, str(e).split(": ")[1]) for e in errors] == [
        (f"{manifest}:3", "more fields than the header has columns"),
        (f"{manifest}:4", "fewer fields than the header has columns"),
        (f"{manifest}:5", "'path' must be a non-empty string, got ''"),
    ]
    with pytest.raises(SourceError, match=r"bad\.csv:3: more fields"):
        list(iter_csv(manifest))
    for text, message in [
        ("", "empty CSV"),
        ("file,label\na,b\n", "no 'path' column"),
        ("path,a,a\n", "repeated"),
    ]:
        manifest.write_text(text)
        with pytest.raises(SourceError, match=message):
            list(iter_csv(manifest))


def test_paths_on_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    stdin = io.StringIO("a.jpg\n\n  sub/b.png  \n/abs/c.jpg\n")
    items = list(open_source("-", stdin=stdin))
    assert [i.path for i in items] == [tmp_path / "a.jpg", tmp_path / "sub/b.png", Path("/abs/c.jpg")]
    assert [i.origin for i in items] == ["stdin:1", "stdin:3", "stdin:4"]


def test_open_source_picks_the_reader(tmp_path: Path, tree: Path) -> None:
    (tmp_path / "m.ndjson").write_text('{"path": "p.jpg"}\n')
    (tmp_path / "m.csv").write_text("path\nq.jpg\n")
    (tmp_path / "m.txt").write_text("r.jpg\n")
    (tmp_path / "m.xml").write_text("<x/>")
    specs = [str(tree), *(str(tmp_path / f"m.{s}") for s in ("ndjson", "csv", "txt"))]
    assert _keys(iter_sources(specs))[-3:] == ["p.jpg", "q.jpg", "r.jpg"]
    assert next(iter(open_source(str(tmp_path / "m.txt")))).path == tmp_path / "r.jpg"
    with pytest.raises(SourceError, match="unknown kind of source"):
        open_source(str(tmp_path / "m.xml"))
    with pytest.raises(SourceError, match="no such file"):
        open_source(str(tmp_path / "missing.jsonl"))


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5])
def test_shards_are_disjoint_and_cover_everything(count: int) -> None:
    items = [SourceItem(path=Path(f"/c/{i // 10}/img{i}.jpg")) for i in range(300)]
    shards = [_keys(select_shard(items, Shard(i, count))) for i in range(count)]
    flat = [key for shard in shards for key in shard]
    assert len(flat) == len(set(flat)) == 300
    assert set(flat) == set(_keys(items))
    assert all(len(shard) > 300 / count / 2 for shard in shards)  # and roughly balanced
    assert shards == [_keys(select_shard(items, Shard(i, count))) for i in range(count)]  # deterministic


def test_shard_hash_is_pinned() -> None:
    """The assignment is a contract between workers, possibly running different releases."""
    digest = hashlib.sha256(b"sub/c.jpeg").digest()
    assert shard_of("sub/c.jpeg", 7) == int.from_bytes(digest[:8], "big") % 7
    assert [shard_of(f"img{i}.jpg", 4) for i in range(8)] == [1, 0, 3, 3, 2, 0, 2, 1]


def test_shards_agree_across_mount_points(tmp_path: Path) -> None:
    for mount in ("m1", "m2/deeper"):
        for i in range(40):
            _touch(tmp_path / mount / f"d{i % 3}" / f"{i}.jpg")
    one = [_keys(iter_sources([str(tmp_path / "m1")], Shard(i, 3))) for i in range(3)]
    two = [_keys(iter_sources([str(tmp_path / "m2/deeper")], Shard(i, 3))) for i in range(3)]
    assert one == two and sum(map(len, one)) == 40


def test_parse_shard() -> None:
    assert parse_shard("0/4") == Shard(0, 4)
    assert parse_shard(" 2 / 5 ") == Shard(2, 5)
    assert str(parse_shard("3/8")) == "3/8"
    for text, message in [
        ("4/4", r"index must be in 0\.\.3"),
        ("1/0", "at least 1"),
        ("-1/3", "expected I/N"),
        ("1", "expected I/N"),
        ("a/b", "expected I/N"),
        ("", "expected I/N"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_shard(text)


def test_document_ids() -> None:
    assert doc_id_for(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert document_id(SourceItem(path=Path("x")), b"abc") == doc_id_for(b"abc")
    assert document_id(SourceItem(path=Path("x"), id="given"), b"abc") == "given"
