"""benchmarks/knn_scale.py at a tiny size on the real node, and the properties its data relies on."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.opensearch_harness import OpenSearchNode

from gemsearch.plugin.stores.opensearch.sizing import SOURCE_BYTES_PER_DIM

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def scale_data() -> Iterator[object]:
    sys.path.insert(0, str(BENCH))
    try:
        import _scale_data

        yield _scale_data
    finally:
        sys.path.remove(str(BENCH))


def _toy_real(mod: object, n_regions: int = 12, views: int = 10, dim: int = 64) -> object:
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((n_regions, dim))
    x = np.repeat(centres, views, axis=0) + 0.3 * rng.standard_normal((n_regions * views, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    region = np.repeat(np.arange(n_regions), views)
    query = np.tile(np.arange(views) >= views - 2, n_regions)
    return mod.RealSet(x, region, query)  # type: ignore[attr-defined]


def test_synthetic_vectors_depend_only_on_their_index(scale_data: object) -> None:
    """A resumed load sends exactly the vectors an uninterrupted one would have sent."""
    mod = scale_data
    gen = mod.Synthetic(_toy_real(mod), seed=3)  # type: ignore[attr-defined]
    whole = np.concatenate([x for _, x in gen.rows(0, 3000)])
    tail = np.concatenate([x for _, x in gen.rows(1500, 3000)])
    np.testing.assert_array_equal(whole[1500:], tail)
    assert np.allclose(np.linalg.norm(whole, axis=1), 1.0, atol=1e-5)
    other = mod.Synthetic(_toy_real(mod), seed=4)  # type: ignore[attr-defined]
    assert not np.allclose(next(other.rows(0, 10))[1], whole[:10])
    # views of one object are each other's neighbours, as views of one photo region are
    sims = whole[:400] @ whole[:400].T
    same = np.equal.outer(np.arange(400) // mod.OBJECT_VIEWS, np.arange(400) // mod.OBJECT_VIEWS)  # type: ignore[attr-defined]
    np.fill_diagonal(same, False)
    off = ~same
    np.fill_diagonal(off, False)
    assert sims[same].mean() > sims[off].mean() + 0.1


def test_exact_top_matches_a_full_sort(scale_data: object) -> None:
    mod = scale_data
    rng = np.random.default_rng(0)
    x, q = rng.standard_normal((500, 16)).astype(np.float32), rng.standard_normal((7, 16)).astype(np.float32)
    chunks = iter([(0, x[:200]), (200, x[200:450]), (450, x[450:])])
    top = mod.exact_top(q, chunks, 10)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(top, np.argsort(-(q @ x.T), axis=1)[:, :10])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 9 minutes on a busy 2-core machine
def test_knn_scale_small_run(opensearch_node: OpenSearchNode, tmp_path: Path) -> None:
    out = tmp_path / "knn_scale.json"
    cmd = [
        sys.executable, str(BENCH / "knn_scale.py"), "--docs", "5000", "--configs", "f32-1280-m16",
        "f32-256-m16", "--queries", "200", "--opensearch", str(opensearch_node.url),
        "--node-pid", str(opensearch_node.process.pid if opensearch_node.process else 0), "--fresh",
        "--realism-queries", "100",
        "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["benchmark"] == "knn_scale" and data["docs"] == 5000 and data["queries"] == 200
    assert data["machine"]["usable_cores"] >= 1
    assert [c["name"] for c in data["configs"]] == ["f32-1280-m16", "f32-256-m16"]
    for cfg in data["configs"]:
        assert "error" not in cfg, cfg
        assert cfg["load"]["loaded"] == 5000 and cfg["load"]["docs_per_s"] > 0
        assert cfg["load"]["force_merge_s"] >= 0 and cfg["index"]["segments"] == 1
        # 5,000 float32 vectors at least, and the disk holds more than the vector files
        assert cfg["index"]["knn_files_mb"] >= 5000 * 4 * cfg["dims"] / 2**20
        assert cfg["index"]["store_mb"] > cfg["index"]["knn_files_mb"]
        if cfg["vector_in_source"] and not data["opensearch"]["version"].startswith("3."):
            # the planner's constant for the vector's JSON in _source (stored fields, per dimension)
            per_dim = cfg["index"]["file_sizes_mb"]["fdt"] * 2**20 / 5000 / cfg["dims"]
            assert per_dim == pytest.approx(SOURCE_BYTES_PER_DIM, rel=0.25)
        assert (
            cfg["memory"]["heap_used_mb"] > 0 and cfg["memory"]["rss_mb"] > cfg["memory"]["heap_used_mb"] / 4
        )
        rows = {(r["k"], r["ef_search"]): r for r in cfg["queries"]}
        swept = {(10, 10), (10, 20), (10, 40), (10, 100), (100, 100), (100, 200), (100, 400)}
        extra = {(10, 200), (10, 400), (10, 800), (100, 800)}  # --extra-ef's default: 200, 400, 800
        assert set(rows) == swept | extra
        for r in rows.values():
            assert 0 < r["p50_ms"] <= r["p99_ms"] and 0 <= r["recall"] <= 1
        assert rows[(10, 100)]["recall"] >= 0.95  # the index default ef_search, against brute force
        assert rows[(10, 40)]["recall"] >= rows[(10, 10)]["recall"] - 0.01  # more ef, no less recall
    faiss = data["formula_only"]  # what this node cannot run is a formula, and says so
    assert faiss and all(r["engine"] == "faiss" and r["measured"] is False for r in faiss)
    assert data["realism"]["queries"] == 100
    real, synthetic = data["realism"]["real"], data["realism"]["synthetic"]
    assert set(real["recall_at_10"]) == set(synthetic["recall_at_10"])
    assert 0.5 < real["sim_at_1"] <= 1 and 0.5 < synthetic["sim_at_1"] <= 1
    table = out.with_suffix(".md").read_text()
    assert table.startswith("### knn_scale") and "f32-256-m16" in table and "Realism check" in table


@pytest.mark.slow
def test_a_kept_complete_index_is_reused_with_its_load_figures(
    opensearch_node: OpenSearchNode, tmp_path: Path
) -> None:
    """A second run over a kept, complete index loads nothing and reports the first run's load."""
    base = [
        sys.executable, str(BENCH / "knn_scale.py"), "--docs", "2048", "--configs", "f32-256-m16",
        "--queries", "20", "--opensearch", str(opensearch_node.url), "--no-realism", "--seed", "11",
    ]  # fmt: skip
    runs = []
    # the first run keeps its index; the second reuses it, then drops it
    for i, extra in enumerate((["--fresh", "--keep", "--extra-ef"], ["--extra-ef", "300"])):
        out = tmp_path / f"run{i}.json"
        proc = subprocess.run([*base, *extra, "--out", str(out)], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(out.read_text())["configs"][0])
    first, second = runs
    assert first["load"]["loaded"] == 2048 and "measured_by_an_earlier_run" not in first["load"]
    assert second["load"] == {**first["load"], "measured_by_an_earlier_run": True}
    assert {r["ef_search"] for r in second["queries"] if r["k"] == 10} == {10, 20, 40, 100, 300}
    assert {r["ef_search"] for r in first["queries"] if r["k"] == 10} == {10, 20, 40, 100}
    indices = opensearch_node.request("GET", "/_cat/indices?format=json&h=index")
    assert second["index_name"] not in [row["index"] for row in indices]


def test_the_dealer_keeps_writers_within_reach_of_the_resume_point(scale_data: object) -> None:
    """A writer stuck on a block holds the others back, so a load stopped at any moment resumes
    from ``resume_point`` without leaving a partly written block behind; a failure stops the deal."""
    import threading

    import knn_scale  # scale_data put benchmarks/ on the path

    block = scale_data.BLOCK  # type: ignore[attr-defined]
    rows = ((b * block, np.zeros((block, 2), np.float32)) for b in range(10))
    dealer = knn_scale.Dealer(rows, 0, clients=2)
    first, second = dealer.take(), dealer.take()
    assert first is not None and second is not None and (first[0], second[0]) == (0, block)
    dealer.done(second[0])  # block 0 is still being written
    got: list[object] = []
    waiting = threading.Thread(target=lambda: got.append(dealer.take()))
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and not got  # block 2 would be 2 past the unfinished block 0
    # stopped here, the index holds blocks 1 (and part of 0): the resume point is below block 0's end
    assert knn_scale.resume_point(2 * block, clients=2) == 0
    dealer.done(first[0])
    waiting.join(5)
    assert got and got[0][0] == 2 * block  # type: ignore[index]
    dealer.stop()
    assert dealer.take() is None
