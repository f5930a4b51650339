"""LocalStore against oracles: numpy's exact ranking, a Python filter, and killed writers."""

from __future__ import annotations

import hashlib
import operator
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gemsearch.errors import StoreError
from gemsearch.manifest import InputSpec, ModelManifest, PoolingSpec
from gemsearch.plugin.stores.local.filters import _DISTINCT_FIELDS
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.protocols import Record, VectorStore

DIM = 16


def _manifest(dim: int = DIM, weights: bytes = b"w", **overrides: Any) -> ModelManifest:
    fields: dict[str, Any] = {
        "name": "lite0-gem",
        "version": hashlib.sha256(weights).hexdigest(),
        "backbone": "efficientnet_lite0",
        "pooling": PoolingSpec(kind="gem", p=3.0),
        "output_dim": dim,
    }
    return ModelManifest.model_validate({**fields, **overrides})


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _open(path: Path, chunk_rows: int = 37) -> LocalStore:
    store = LocalStore(path, chunk_rows=chunk_rows)
    store.ensure_index(_manifest())
    return store


def _records(ids: list[str], vectors: np.ndarray, metas: list[dict[str, Any]] | None = None) -> list[Record]:
    metas = metas or [{} for _ in ids]
    return [
        Record(id=i, vector=v, image_ref=f"img/{i}.jpg", metadata=m)
        for i, v, m in zip(ids, vectors, metas, strict=True)
    ]


def _oracle(docs: dict[str, np.ndarray], query: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    """Exact ranking by numpy; ties by write order (dict order = order of each id's last write)."""
    ids = list(docs)
    scores = np.stack([docs[i] for i in ids]) @ query
    order = np.lexsort((np.arange(len(ids)), -scores))[:k]
    return [ids[i] for i in order], scores[order]


def _check_against_oracle(store: LocalStore, docs: dict[str, np.ndarray], rng: np.random.Generator) -> None:
    for query in _unit(rng, 8):
        for k in (1, 10, len(docs) + 5):
            want_ids, want_scores = _oracle(docs, query, k)
            hits = store.search(query, k=k)
            assert [h.id for h in hits] == want_ids
            np.testing.assert_allclose([h.score for h in hits], want_scores, rtol=0, atol=1e-6)


def test_is_a_vector_store(tmp_path: Path) -> None:
    with _open(tmp_path / "s") as store:
        assert isinstance(store, VectorStore)


def test_search_equals_brute_force_also_after_overwrites_and_deletes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"d{i}" for i in range(300)]
    docs = dict(zip(ids, _unit(rng, 300), strict=True))
    with _open(tmp_path / "s") as store:
        for start in range(0, 300, 64):
            part = ids[start : start + 64]
            store.upsert(_records(part, np.stack([docs[i] for i in part])))
        _check_against_oracle(store, docs, rng)
        replaced = ids[10:60]
        new_vectors = _unit(rng, len(replaced))
        store.upsert(_records(replaced, new_vectors))
        for i, v in zip(replaced, new_vectors, strict=True):
            del docs[i]
            docs[i] = v  # an overwritten id moves to the end of the write order
        assert store.delete(ids[100:130]) == 30
        for i in ids[100:130]:
            del docs[i]
        assert store.count() == len(docs) == 270
        _check_against_oracle(store, docs, rng)


def test_an_empty_store_answers_nothing(tmp_path: Path) -> None:
    with _open(tmp_path / "s") as store:
        assert store.count() == 0 and store.get("a") is None and store.existing_ids(["a"]) == set()
        assert store.search(np.ones(DIM, np.float32), k=5) == []
        assert store.search(np.ones(DIM, np.float32), filters={"x": 1}) == []
        with pytest.raises(StoreError, match="k must be at least 1"):
            store.search(np.ones(DIM, np.float32), k=0)


def test_equal_scores_come_in_write_order_whatever_the_chunks(tmp_path: Path) -> None:
    v = _unit(np.random.default_rng(1), 1)[0]
    names = ["g", "f", "e", "d", "c", "b", "a"]
    with LocalStore(tmp_path / "s", chunk_rows=2) as store:
        store.ensure_index(_manifest())
        store.upsert(_records(names, np.stack([v] * 7)))
        assert [h.id for h in store.search(v, k=3)] == ["g", "f", "e"]
        store.upsert(_records(["g"], v[None]))  # rewritten: now the latest
        assert [h.id for h in store.search(v, k=7)] == ["f", "e", "d", "c", "b", "a", "g"]


# --- filters -----------------------------------------------------------------------------------

_MISSING = object()
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "str" if isinstance(value, str) else None


def _values(value: Any, parts: list[str]) -> list[Any]:
    """What a dotted field holds, lists expanded at every level (OpenSearch's object flattening)."""
    if isinstance(value, list):
        return [v for item in value for v in _values(item, parts)]
    if not parts:
        return [value]
    return _values(value[parts[0]], parts[1:]) if isinstance(value, dict) and parts[0] in value else []


def _matches(meta: dict[str, Any], filters: dict[str, Any]) -> bool:
    """The documented semantics, written plainly: strict types, any value of a list."""
    for field, cond in filters.items():
        values = _values(meta, field.split("."))
        if isinstance(cond, dict):
            ok = any(all(_kind(v) == _kind(b) and _OPS[op](v, b) for op, b in cond.items()) for v in values)
        else:
            terms = cond if isinstance(cond, list) else [cond]
            ok = any(_kind(v) == _kind(t) and v == t for v in values for t in terms)
        if not ok:
            return False
    return True


def _meta(rng: np.random.Generator, i: int) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "color": ["red", "green", "blue", "grey"][i % 4],
        "year": int(rng.integers(2000, 2021)),
        "score": float(rng.uniform(0, 1)),
        "taken": f"2024-0{1 + i % 9}-1{i % 10}",
        "tags": [str(t) for t in rng.choice(["sea", "city", "dog", "snow"], size=i % 3, replace=False)],
        "flag": bool(i % 5 == 0),
        "camera": {"model": ["x100", "a7"][i % 2]},
        "people": [{"name": n} for n in ["ann", "bob", "cy"][: i % 4]],
        "maybe": None if i % 3 else "x",
    }
    if i % 7 == 0:
        del meta["year"]
    if i % 11 == 0:
        meta["year"] = str(meta.get("year", 1999))  # a string where others have numbers
    return meta


FILTERS: list[dict[str, Any]] = [
    {"color": "red"},
    {"color": ["red", "blue"]},
    {"year": {"gte": 2005, "lt": 2010}},
    {"year": {"gt": 2018}},
    {"year": 2003},
    {"year": [2003, 2004, "2001"]},
    {"score": {"lte": 0.25}},
    {"taken": {"gte": "2024-03-00", "lt": "2024-06-00"}},
    {"tags": "dog"},
    {"tags": ["sea", "snow"]},
    {"flag": True},
    {"flag": [False]},
    {"camera.model": "a7"},
    {"people.name": ["bob", "cy"]},
    {"maybe": "x"},
    {"score": {"gt": 0.2, "lte": 0.7}, "tags": "sea", "flag": False},
    {"color": ["green", "grey"], "year": {"gte": 2010}, "camera.model": "a7"},
    {"color": "purple"},
    {"color": []},
    {"nothing-here": "x"},
]


@pytest.fixture(scope="module")
def filtered_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    rng = np.random.default_rng(2)
    ids = [f"m{i}" for i in range(240)]
    vectors, metas = _unit(rng, 240), [_meta(rng, i) for i in range(240)]
    store = _open(tmp_path_factory.mktemp("filters") / "s", chunk_rows=50)
    store.upsert(_records(ids, vectors, metas))
    yield store, dict(zip(ids, vectors, strict=True)), dict(zip(ids, metas, strict=True))
    store.close()


@pytest.mark.parametrize("filters", FILTERS, ids=[str(f) for f in FILTERS])
def test_filters_select_exactly_what_a_python_filter_does(
    filtered_store: Any, filters: dict[str, Any]
) -> None:
    store, docs, metas = filtered_store
    query = _unit(np.random.default_rng(3), 1)[0]
    wanted = {i: v for i, v in docs.items() if _matches(metas[i], filters)}
    assert sorted(h.id for h in store.search(query, k=1000, filters=filters)) == sorted(wanted)
    # the filter restricts the candidates before ranking: the top 5 of the matches, not fewer
    top = store.search(query, k=5, filters=filters)
    assert [h.id for h in top] == (_oracle(wanted, query, 5)[0] if wanted else [])
    assert all(h.metadata == metas[h.id] for h in top)


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"": 1}, "non-empty strings"),
        ({"x": None}, "not a string"),
        ({"x": [1, {"y": 2}]}, "not a string"),
        ({"x": float("nan")}, "not a string"),
        ({"x": {"from": 1}}, "takes gt, gte"),
        ({"x": {}}, "takes gt, gte"),
        ({"x": {"gte": 1, "lt": "z"}}, "all finite numbers or all strings"),
    ],
)
def test_bad_filters_are_refused(filtered_store: Any, filters: dict[str, Any], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        filtered_store[0].search(np.ones(DIM, np.float32), filters=filters)


# --- documents ---------------------------------------------------------------------------------


def test_upsert_overwrites_get_returns_the_latest(tmp_path: Path) -> None:
    a1, a2, a3, b = _unit(np.random.default_rng(4), 4)
    with _open(tmp_path / "s") as store:
        store.upsert(_records(["a", "b"], np.stack([a1, b]), [{"v": 1}, {"v": 0}]))
        store.upsert(
            [Record(id="a", vector=a2, metadata={"v": 2}), Record(id="a", vector=a3, metadata={"v": 3})]
        )
        assert store.count() == 2
        got = store.get("a")
        assert got is not None and got.metadata == {"v": 3} and got.image_ref is None
        assert np.array_equal(got.vector, a3)
        assert store.search(a3, k=1)[0].id == "a"
        assert store.search(a3, k=1)[0].score == pytest.approx(1.0, abs=1e-6)
        assert store.get("nope") is None


def test_delete_count_and_existing_ids(tmp_path: Path) -> None:
    vectors = _unit(np.random.default_rng(5), 4)
    with _open(tmp_path / "s") as store:
        store.upsert(_records(["a", "b", "c", "d"], vectors))
        assert store.existing_ids(["a", "x", "c", "a"]) == {"a", "c"}
        assert store.delete(["a", "zz", "a"]) == 1
        assert store.delete(["a"]) == 0
        assert store.count() == 3 and store.get("a") is None
        assert store.existing_ids(["a", "b"]) == {"b"}
        assert "a" not in {h.id for h in store.search(vectors[0], k=10)}
        with pytest.raises(StoreError, match="list of ids"):
            store.delete("b")


def test_bad_batches_are_refused_whole(tmp_path: Path) -> None:
    vectors = _unit(np.random.default_rng(6), 2)
    with _open(tmp_path / "s") as store:
        store.upsert(_records(["ok"], vectors[:1]))
        size = (tmp_path / "s" / "vectors.0.f32").stat().st_size
        bad_batches = {
            "shape": [Record(id="x", vector=vectors[1]), Record(id="y", vector=np.ones(3, np.float32))],
            "NaN": [
                Record(id="x", vector=vectors[1]),
                Record(id="y", vector=np.full(DIM, np.nan, np.float32)),
            ],
            "plain JSON": [Record(id="x", vector=vectors[1], metadata={"when": object()})],
            "non-empty": [Record(id="", vector=vectors[1])],
        }
        for message, batch in bad_batches.items():
            with pytest.raises(StoreError, match=message):
                store.upsert(batch)
        assert store.count() == 1 and store.existing_ids(["x", "y"]) == set()
        assert (tmp_path / "s" / "vectors.0.f32").stat().st_size == size
        with pytest.raises(StoreError, match="shape"):
            store.search(np.ones(DIM + 1, np.float32))
    with pytest.raises(StoreError, match="ensure_index"):
        LocalStore(tmp_path / "s").upsert(_records(["z"], vectors[:1]))


# --- folders, models, persistence --------------------------------------------------------------


def test_persists_across_reopen_and_compaction(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    ids = [f"p{i}" for i in range(100)]
    docs = dict(zip(ids, _unit(rng, 100), strict=True))
    with _open(tmp_path / "s") as store:
        store.upsert(_records(ids, np.stack(list(docs.values())), [{"i": i} for i in range(100)]))
        store.upsert(_records(ids[:20], np.stack([docs[i] for i in ids[:20]])))  # 20 garbage rows
        docs = {**{i: docs[i] for i in ids[20:]}, **{i: docs[i] for i in ids[:20]}}
        store.delete(ids[50:60])
        for i in ids[50:60]:
            del docs[i]
    query = _unit(rng, 1)[0]
    with LocalStore(tmp_path / "s", read_only=True) as reader:
        before = reader.search(query, k=30)
        assert [h.id for h in before] == _oracle(docs, query, 30)[0]
        assert reader.count() == 90
        assert reader.manifest == _manifest()
        with pytest.raises(StoreError, match="read-only"):
            reader.delete(["p1"])
    with _open(tmp_path / "s") as store:
        assert store.compact() == 30
        assert store.compact() == 0
        assert store.search(query, k=30) == before
    files = sorted(p.name for p in (tmp_path / "s").glob("vectors.*"))
    assert files == ["vectors.1.f32"]
    assert (tmp_path / "s" / files[0]).stat().st_size == 90 * DIM * 4
    with LocalStore(tmp_path / "s", read_only=True) as reader:
        assert reader.search(query, k=30) == before
        got = reader.get("p30")
        assert got is not None and got.metadata == {"i": 30} and np.array_equal(got.vector, docs["p30"])


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (_manifest(weights=b"other"), "version"),
        (_manifest(dim=32), "output_dim 16 != 32"),
        (_manifest(name="resnet-gem"), "name"),
        (_manifest(input=InputSpec(max_side=512)), "max_side"),
    ],
)
def test_a_folder_refuses_another_model(tmp_path: Path, other: ModelManifest, message: str) -> None:
    v = _unit(np.random.default_rng(8), 1)
    with _open(tmp_path / "s") as store:
        store.upsert(_records(["a"], v))
    with LocalStore(tmp_path / "s") as store:
        with pytest.raises(StoreError, match=f"refusing to mix.*{message}"):
            store.ensure_index(other)
        store.ensure_index(_manifest(provenance={"epochs": 3}))  # same weights, other notes: fine
        assert store.count() == 1


def test_refuses_foreign_folders_and_missing_stores(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"jpeg")
    with pytest.raises(StoreError, match="not a LocalStore"):
        LocalStore(tmp_path / "photos").ensure_index(_manifest())
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["cat.jpg"]
    with pytest.raises(StoreError, match="no LocalStore"):
        LocalStore(tmp_path / "missing", read_only=True)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "store.json").write_text("{not json")
    with pytest.raises(StoreError, match="damaged"):
        LocalStore(tmp_path / "bad")


def test_one_writer_many_readers(tmp_path: Path) -> None:
    a, b = _unit(np.random.default_rng(9), 2)
    writer = _open(tmp_path / "s")
    writer.upsert(_records(["a"], a[None]))
    reader = LocalStore(tmp_path / "s", read_only=True)
    assert [h.id for h in reader.search(b, k=5)] == ["a"]
    with pytest.raises(StoreError, match="being written by another"):
        LocalStore(tmp_path / "s").ensure_index(_manifest())
    writer.upsert(_records(["b"], b[None]))  # the reader sees each commit at its next call
    assert reader.count() == 2 and reader.search(b, k=1)[0].id == "b"
    writer.delete(["a"])
    writer.compact()  # replaces the file the reader has mapped
    assert [h.id for h in reader.search(a, k=5)] == ["b"]
    writer.close()
    with _open(tmp_path / "s") as second:  # the lock went with close()
        second.upsert(_records(["c"], a[None]))
    assert reader.existing_ids(["a", "b", "c"]) == {"b", "c"}
    reader.close()


# --- crash safety ------------------------------------------------------------------------------

_WRITER = """
import hashlib, sys
import numpy as np
from gemsearch.manifest import ModelManifest, PoolingSpec
from gemsearch.plugin.stores.local.filters import _DISTINCT_FIELDS
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.protocols import Record

folder, dim, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
manifest = ModelManifest(name="lite0-gem", version=hashlib.sha256(b"w").hexdigest(), output_dim=dim,
                         backbone="efficientnet_lite0", pooling=PoolingSpec(kind="gem", p=3.0))
store = LocalStore(folder)
store.ensure_index(manifest)
{prelude}
b = store.count() // batch
while True:
    vectors = np.random.default_rng(b).standard_normal((batch, dim)).astype(np.float32)
    store.upsert([Record(id=f"{{b}}-{{i}}", vector=v, metadata={{"b": b}}) for i, v in enumerate(vectors)])
    print(b, flush=True)
    b += 1
"""


def _spawn_writer(folder: Path, batch: int, prelude: str = "") -> subprocess.Popen[str]:
    script = _WRITER.format(prelude=textwrap.dedent(prelude))
    return subprocess.Popen(
        [sys.executable, "-c", script, str(folder), str(DIM), str(batch)], stdout=subprocess.PIPE, text=True
    )


def _check_complete_batches(folder: Path, batch: int, reported: list[int]) -> int:
    """Every stored batch is whole and bit-exact; all reported batches are there. The batch count."""
    with _open(folder) as store:  # a writer: repairs what the killed one left
        n = store.count()
        assert n % batch == 0 and n // batch >= len(reported)
        for b in range(n // batch):
            want = np.random.default_rng(b).standard_normal((batch, DIM)).astype(np.float32)
            # every vector of the last batches (those a kill can hit), samples of the older ones
            for i in range(batch) if b >= n // batch - 2 else (0, batch // 2, batch - 1):
                got = store.get(f"{b}-{i}")
                assert got is not None and np.array_equal(got.vector, want[i]) and got.metadata == {"b": b}
        assert store.existing_ids([f"{n // batch}-0"]) == set()  # nothing of a batch past the last
        assert len(store.search(np.ones(DIM, np.float32), k=n + 10)) == n
    size = (folder / "vectors.0.f32").stat().st_size
    assert size == n * DIM * 4  # the torn tail is gone
    return n // batch


def test_sigkill_mid_upsert_loses_nothing_reported(tmp_path: Path) -> None:
    folder, batch, batches = tmp_path / "s", 400, 0
    for delay in (0.0, 0.013, 0.029):
        child = _spawn_writer(folder, batch)
        assert child.stdout is not None
        reported = [int(child.stdout.readline()) for _ in range(3)]
        with LocalStore(folder, read_only=True) as reader:  # another process, reading while it writes
            seen = reader.search(np.ones(DIM, np.float32), k=100_000)
            assert len(seen) % batch == 0 and len(seen) >= (reported[-1] + 1) * batch
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        reported += [int(line) for line in child.stdout.read().split()]
        child.wait()
        assert reported == list(range(batches, batches + len(reported)))  # resumed where it stopped
        batches = _check_complete_batches(folder, batch, list(range(reported[-1] + 1)))


def test_killed_between_vectors_and_commit_leaves_no_trace(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    # the second upsert dies after its vectors are on disk, before its rows are committed
    prelude = """
    import os, signal
    from gemsearch.plugin.stores.local import db as _local_db
    real, calls = _local_db.write_state, []
    def dying(conn, state):
        calls.append(state)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        real(conn, state)
    _local_db.write_state = dying
    """
    child = _spawn_writer(folder, 50, prelude)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL and out.split() == ["0"]
    assert (folder / "vectors.0.f32").stat().st_size == 100 * DIM * 4  # the uncommitted append
    with LocalStore(folder, read_only=True) as reader:  # readers ignore it
        assert reader.count() == 50 and len(reader.search(np.ones(DIM, np.float32), k=100)) == 50
    assert _check_complete_batches(folder, 50, [0]) == 1


def test_torn_trailing_write_is_cut_on_open(tmp_path: Path) -> None:
    vectors = _unit(np.random.default_rng(10), 3)
    with _open(tmp_path / "s") as store:
        store.upsert(_records(["a", "b"], vectors[:2]))
    path = tmp_path / "s" / "vectors.0.f32"
    with open(path, "ab") as f:
        f.write(b"\xff" * (DIM * 4 + 7))  # one garbage row and a half
    with _open(tmp_path / "s") as store:
        assert path.stat().st_size == 2 * DIM * 4
        store.upsert(_records(["c"], vectors[2:]))
        got = store.get("c")
        assert got is not None and np.array_equal(got.vector, vectors[2])
        assert next(h.id for h in store.search(vectors[2], k=3)) == "c" and store.count() == 3


def test_failed_commit_cuts_its_vectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gemsearch.plugin.stores.local import db as _local_db

    vectors = _unit(np.random.default_rng(11), 2)
    with _open(tmp_path / "s") as store:
        store.upsert(_records(["a"], vectors[:1]))

        def broken(*_: Any) -> None:
            raise OSError("disk gone")

        monkeypatch.setattr(_local_db, "write_state", broken)
        with pytest.raises(OSError, match="disk gone"):
            store.upsert(_records(["b"], vectors[1:]))
        monkeypatch.undo()
        assert store.count() == 1 and store.existing_ids(["b"]) == set()
        assert (tmp_path / "s" / "vectors.0.f32").stat().st_size == DIM * 4
        store.upsert(_records(["b"], vectors[1:]))
        assert [h.id for h in store.search(vectors[1], k=2)] == ["b", "a"]


def test_interrupted_compaction_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gemsearch.plugin.stores.local import db as _local_db

    folder, vectors = tmp_path / "s", _unit(np.random.default_rng(12), 10)
    with _open(folder) as store:
        store.upsert(_records([f"c{i}" for i in range(10)], vectors))
        store.delete(["c1", "c2", "c3", "c4"])
        before = store.search(vectors[0], k=10)

        def broken(*_: Any) -> None:
            raise OSError("power cut")

        monkeypatch.setattr(_local_db, "renumber_docs", broken)
        with pytest.raises(OSError, match="power cut"):
            store.compact()
        monkeypatch.undo()
        assert sorted(p.name for p in folder.glob("vectors.*")) == ["vectors.0.f32"]
        assert store.search(vectors[0], k=10) == before
        assert store.compact() == 4
    (folder / "vectors.0.f32").write_bytes(b"old")  # as if killed after the commit, before the cleanup
    with _open(folder) as store:
        assert sorted(p.name for p in folder.glob("vectors.*")) == ["vectors.1.f32"]
        assert store.search(vectors[0], k=10) == before


def test_update_metadata_merges_fields_rebuilds_filters_and_keeps_vectors(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    vectors = _unit(rng, 3)
    metas: list[dict[str, Any]] = [{"n": 0, "cam": {"make": "x"}}, {"n": 1}, {"n": 2, "tags": ["a", "b"]}]
    with _open(tmp_path / "s") as store:
        store.upsert(_records(["a", "b", "c"], vectors, metas))
        updates = [
            ("a", {"album": "nature", "cam": {"model": "y"}}),
            ("c", {"tags": ["z"]}),
            ("gone", {"n": 9}),
        ]
        assert store.update_metadata(updates) == 2
        a, b, c = (store.get(i) for i in "abc")
        assert a is not None and a.metadata == {"n": 0, "cam": {"make": "x", "model": "y"}, "album": "nature"}
        assert b is not None and b.metadata == {"n": 1}
        assert c is not None and c.metadata == {"n": 2, "tags": ["z"]}
        for i, got in enumerate((a, b, c)):
            assert np.array_equal(got.vector, vectors[i]) and got.image_ref == f"img/{'abc'[i]}.jpg"
        query = vectors[1]
        assert [h.id for h in store.search(query, k=5, filters={"album": "nature"})] == ["a"]
        assert [h.id for h in store.search(query, k=5, filters={"cam.model": "y", "cam.make": "x"})] == ["a"]
        assert store.search(query, k=5, filters={"tags": "a"}) == []  # the replaced list is unindexed
        assert [h.id for h in store.search(query, k=5, filters={"tags": "z"})] == ["c"]
        assert store.count() == 3 and store.get("gone") is None
        with pytest.raises(StoreError, match="plain JSON"):  # refused whole: "a" is left as it was
            store.update_metadata([("a", {"album": "x"}), ("b", {"when": object()})])
        assert store.search(query, k=5, filters={"album": "nature"})[0].id == "a"
    with LocalStore(tmp_path / "s", read_only=True) as reader:  # durable, seen by another reader
        assert [h.id for h in reader.search(vectors[0], k=5, filters={"album": "nature"})] == ["a"]


def test_metadata_fields_follow_the_documents_and_are_found_by_index_seeks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    metas: list[dict[str, Any]] = [
        {"name": "a", "camera": {"model": "x", "iso": 100}, "flag": True, "gone": None},
        {"name": "b", "mixed": 2, "tags": ["p", "q"]},
        {"name": "c", "mixed": "two"},
    ]
    with _open(tmp_path / "s") as store:
        assert store.metadata_fields() == {}
        store.ensure_index(_manifest())
        store.upsert(_records(["a", "b", "c"], _unit(rng, 3), metas))
        assert store.metadata_fields() == {
            "camera.iso": ["number"],
            "camera.model": ["text"],
            "flag": ["boolean"],
            "mixed": ["number", "text"],
            "name": ["text"],
            "tags": ["text"],
        }
        store.delete(["a"])
        store.update_metadata([("c", {"mixed": 3, "year": 2020})])
        assert store.metadata_fields() == {
            "mixed": ["number"],
            "name": ["text"],
            "tags": ["text"],
            "year": ["number"],
        }
        plan = " ".join(
            str(row[-1]) for row in store._connection().execute("EXPLAIN QUERY PLAN " + _DISTINCT_FIELDS)
        )
        assert "SCAN terms" not in plan, plan  # each next field is one seek, never a walk of all terms
