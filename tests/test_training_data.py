"""The three training-data layouts load into one TrainingSet, and bad data gets a clear error."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from gemsearch.errors import ConfigError
from gemsearch.trainer.training.data import cid_to_path, load_folders, load_pairs, load_sfm_database


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_sfm_database(tmp_path: Path) -> None:
    cids = ["abcdef123456", "abcdef654321", "zzzzzz000001"]
    db = {
        "train": {"cids": cids, "cluster": [7, 7, 9], "qidxs": [0], "pidxs": [1]},
        "val": {"cids": cids, "cluster": [7, 7, 9], "qidxs": [1], "pidxs": [0]},
    }
    pkl = tmp_path / "db.pkl"
    pkl.write_bytes(pickle.dumps(db))
    ims = tmp_path / "ims"
    ts = load_sfm_database(pkl, ims, "train")
    assert ts.images[0] == ims / "56" / "34" / "12" / "abcdef123456"
    assert cid_to_path("abcdef123456", ims) == ts.images[0]
    assert (ts.clusters, ts.qidxs, ts.pidxs) == ([7, 7, 9], [0], [1])
    with pytest.raises(ConfigError, match="missing"):
        ts.check_files()
    for p in ts.images:
        _touch(p)
    ts.check_files()
    with pytest.raises(ConfigError, match="no split 'test'"):
        load_sfm_database(pkl, ims, "test")


def test_folders(tmp_path: Path) -> None:
    for name in ("a/1.jpg", "a/2.png", "a/3.jpg", "b/1.jpg", "b/2.jpg", "c/only.jpg", "a/notes.txt"):
        _touch(tmp_path / name)
    (tmp_path / "empty").mkdir()
    ts = load_folders(tmp_path, max_pairs_per_cluster=4)
    assert len(ts.images) == 6 and ts.clusters == [0, 0, 0, 1, 1, 2]
    pairs = list(zip(ts.qidxs, ts.pidxs, strict=True))
    assert len(pairs) == 4 + 2  # a: 6 ordered pairs sampled to 4; b: 2; c: none
    assert all(ts.clusters[q] == ts.clusters[p] and q != p for q, p in pairs)
    assert load_folders(tmp_path, max_pairs_per_cluster=4).qidxs == ts.qidxs  # seeded


def test_one_folder_has_no_negatives(tmp_path: Path) -> None:
    _touch(tmp_path / "a/1.jpg")
    _touch(tmp_path / "a/2.jpg")
    with pytest.raises(ConfigError, match="two clusters"):
        load_folders(tmp_path)


def test_pairs_jsonl_and_csv(tmp_path: Path) -> None:
    rows = [
        {"query": "q1.jpg", "positive": "p1.jpg", "cluster": "eiffel"},
        {"query": "q2.jpg", "positive": "p1.jpg", "cluster": "eiffel"},
        {"query": "n1.jpg", "cluster": "louvre"},
    ]
    jl = tmp_path / "pairs.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows))
    ts = load_pairs(jl)
    assert [p.name for p in ts.images] == ["q1.jpg", "p1.jpg", "q2.jpg", "n1.jpg"]
    assert ts.clusters == [0, 0, 0, 1] and ts.qidxs == [0, 2] and ts.pidxs == [1, 1]
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(
        "query,positive,cluster\nq1.jpg,p1.jpg,eiffel\nq2.jpg,p1.jpg,eiffel\nn1.jpg,,louvre\n"
    )
    assert load_pairs(csv_path).model_dump() == {**ts.model_dump(), "name": str(csv_path)}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"query": "a.jpg", "positive": "b.jpg"}'], "needs 'query' and 'cluster'"),
        (['{"query": "a.jpg", "cluster": 1}', "{oops"], ":2: not JSON"),
        (
            ['{"query": "a.jpg", "positive": "b.jpg", "cluster": 1}', '{"query": "a.jpg", "cluster": 2}'],
            "two clusters",
        ),
        (
            ['{"query": "a.jpg", "cluster": 1}', '{"query": "b.jpg", "cluster": 2}'],
            "every query needs a positive",
        ),
    ],
)
def test_bad_pair_lists(tmp_path: Path, lines: list[str], message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError, match=message):
        load_pairs(path)
