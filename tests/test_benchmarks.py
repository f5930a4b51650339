"""The benchmark scripts at tiny sizes: they run, and what they write is well-formed and sane."""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.opensearch_harness import OpenSearchNode

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def bench_modules() -> Iterator[None]:
    """The benchmarks import each other as top-level modules (they run as scripts)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield
    finally:
        sys.path.remove(str(BENCH))


def run_script(
    script: str, out_dir: Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(BENCH / script), "--out-dir", str(out_dir), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr[-3000:]}"
    return proc


def load(out_dir: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out_dir / f"{name}.json").read_text())
    assert data["benchmark"] == name
    assert data["machine"]["usable_cores"] >= 1 and data["machine"]["cpu"]
    table = (out_dir / f"{name}.md").read_text()
    assert table.startswith(f"### {name}") and "|---|" in table
    return data


HALF = 5e-4  # the results round seconds, rates and ratios to 3 decimals: half of the last one
ROUNDED_RATES = ((0.0, HALF), (0.0, HALF))  # the rounding errors of the two rates of a ratio


def agrees(reported: float, formula: Callable[..., float], *inputs: tuple[float, float]) -> bool:
    """``reported`` (to 3 decimals) is ``formula`` of ``inputs``, each known as (value, +- half-width).

    The formulas are monotonic in each input, so their range is spanned by the corners of the box.
    """
    corners = [formula(*c) for c in itertools.product(*[(v - h, v + h) for v, h in inputs])]
    return min(corners) - HALF - 1e-9 <= reported <= max(corners) + HALF + 1e-9


def rate_ratio(images: int) -> Callable[[float, float, float, float], float]:
    """A rate ratio from two wall times, each rate rounded (errors ``e``, ``f``) before dividing."""
    return lambda wall, base, e, f: (images / wall + e) / (images / base + f)


def test_results_are_checked_against_raw_timings_by_rounding_bounds() -> None:
    assert agrees(round(3 / 1.2344, 3), lambda w: 3 / w, (1.234, HALF))
    assert not agrees(round(3 / 1.3, 3), lambda w: 3 / w, (1.234, HALF))
    assert agrees(1.0, rate_ratio(6), (0.2, HALF), (0.2, HALF), *ROUNDED_RATES)
    assert not agrees(0.9, rate_ratio(6), (0.2, HALF), (0.2, HALF), *ROUNDED_RATES)


def test_machine_description_names_cpu_cores_and_versions() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "_machine.py")], capture_output=True, text=True, check=True
    ).stdout
    machine = json.loads(out)
    assert machine["usable_cores"] >= 1 and machine["logical_cores"] >= machine["usable_cores"]
    assert machine["libraries"]["numpy"] == np.__version__
    assert "CPUExecutionProvider" in machine["onnxruntime_providers"]
    assert len(machine["load_average_1_5_15"]) == 3


def test_targets_are_judged_from_the_measured_values(tmp_path: Path, bench_modules: None) -> None:
    import run_all

    ingest = {"results": [
        {"target": "embed only", "ratio_vs_embed_only": 1.0},
        {"target": "LocalStore", "ratio_vs_embed_only": 0.95},
        {"target": "OpenSearch", "ratio_vs_embed_only": 0.5},
    ]}  # fmt: skip
    (tmp_path / "ingest_throughput.json").write_text(json.dumps(ingest))
    embed = {"target_ratio": 1.5, "results": [
        {"model": "lite0-gem", "mode": "single-scale", "runner": "torch", "images_per_s": 2.0,
         "ratio_vs_baseline": 1.0},
        {"model": "lite0-gem", "mode": "single-scale", "runner": "onnx", "images_per_s": 5.0,
         "ratio_vs_baseline": 2.5},
        {"model": "lite0-gem", "mode": "single-scale", "runner": "torch-1thread", "images_per_s": 4.0,
         "ratio_vs_baseline": 2.0},
    ]}  # fmt: skip
    (tmp_path / "embed_throughput_cpu_photos.json").write_text(json.dumps(embed))
    rows = {r["target"]: r for r in run_all.targets(tmp_path)}
    photos = rows["embedding, real photos: lite0-gem single-scale (onnx) vs PyTorch eager >= 1.5x"]
    assert photos["value"] == 2.5 and photos["met"] is True
    tuned = rows["(for reading) real photos: lite0-gem single-scale onnx vs PyTorch, 1 thread"]
    assert tuned["value"] == 1.25 and tuned["met"] is None
    assert rows["ingest into LocalStore vs embed-only >= 0.8x"]["met"] is True
    assert rows["ingest into OpenSearch vs embed-only >= 0.8x"]["met"] is False
    assert len(rows) == 4  # nothing is claimed for benchmarks that did not run


def test_reference_summary_carries_command_machine_sizes_and_results(
    tmp_path: Path, bench_modules: None
) -> None:
    import run_all

    embed = {"images": 8, "image_sizes": {"2560x1600": 6, "1920x1200": 2}, "target_ratio": 1.5,
             "results": [{"model": "lite0-gem", "mode": "single-scale", "runner": "onnx",
                          "images_per_s": 3.0, "ratio_vs_baseline": 2.0}]}  # fmt: skip
    (tmp_path / "embed_throughput_cpu_photos.json").write_text(json.dumps(embed))
    (tmp_path / "embed_throughput_cpu_photos.md").write_text("### embed_throughput_cpu_photos\n\n| t |\n")
    runs = [{"name": "embed_photos", "exit": 0, "seconds": 1.0, "args": ["--images", "8"]}]
    machine = {"cpu": "CPU X", "usable_cores": 2, "memory_gb": 4, "date_utc": "2026-01-01 00:00 UTC",
               "load_average_1_5_15": [3.0, 2.0, 1.0], "gpus": []}  # fmt: skip
    dest = tmp_path / "reference"
    command = "python benchmarks/run_all.py --reference --only embed_photos"
    run_all.summary(tmp_path, runs, machine, "cpu", dest, command)
    data = json.loads((dest / "summary.json").read_text())
    assert (
        data["command"] == command and data["machine"] == machine and data["date_utc"] == machine["date_utc"]
    )
    assert data["benchmarks"]["embed_photos"] == embed  # every figure, as the benchmark wrote it
    assert data["runs"] == runs and "ratios" in data["note"] and "load average" in data["note"]
    md = (dest / "summary.md").read_text()
    assert command in md and "6 x 2560x1600, 2 x 1920x1200" in md and "| t |" in md
    assert "2.000 | yes" in md


def test_run_all_extra_arguments_name_a_benchmark(bench_modules: None) -> None:
    import run_all

    assert run_all._extra_args(["embed_photos=--images 4 --repeats 5"]) == {
        "embed_photos": ["--images", "4", "--repeats", "5"]
    }
    with pytest.raises(SystemExit, match="expected NAME=ARGS"):
        run_all._extra_args(["nonsense=--x"])


def test_gpu_mode_refuses_clearly_without_a_gpu(tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    if torch.cuda.is_available() or "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has a GPU")
    cmd = [sys.executable, str(BENCH / "embed_throughput.py"), "--device", "cuda", "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no CUDA GPU here" in proc.stderr
    assert not list(tmp_path.iterdir())  # no numbers claimed


@pytest.mark.slow
def test_bulk_load_smoke(opensearch_node: OpenSearchNode, tmp_path: Path) -> None:
    run_script(
        "bulk_load.py", tmp_path, "--sizes", "150", "--local-sizes", "150", "--queries", "5", "--dim", "16",
        "--repeats", "2", "--opensearch", opensearch_node.url,
    )  # fmt: skip
    data = load(tmp_path, "bulk_load")
    (os_row,) = data["opensearch_results"]
    assert os_row["vectors"] == 150 and os_row["dim"] == 16
    runs = {loader: os_row[f"{loader}_runs"] for loader in ("helpers_bulk", "ours", "ours_refresh_off")}
    for loader, values in runs.items():
        assert len(values) == 2 and min(values) > 0  # one per --repeats
        # the reported rate is the median of the listed runs (which are rounded to 0.1 docs/s)
        assert os_row[f"{loader}_docs_per_s"] == pytest.approx(statistics.median(values), abs=0.05)
    # the ratio, recomputed from the per-run rates rather than from the reported medians
    ratio = statistics.median(runs["ours"]) / statistics.median(runs["helpers_bulk"])
    assert os_row["ratio_vs_helpers_bulk"] == pytest.approx(ratio, rel=1e-3)
    assert os_row["search"]["p50_ms"] > 0 and os_row["memory"]["heap_used_mb"] > 0
    (local,) = data["local_store_results"]
    assert (local["vectors"], local["dim"], local["count"]) == (150, 16, 150)  # every vector stored
    assert local["upsert_per_s"] > 0


@pytest.mark.slow
def test_knn_recall_smoke(opensearch_node: OpenSearchNode, tmp_path: Path) -> None:
    run_script(
        "knn_recall.py", tmp_path, "--distractors", "250", "--queries", "70", "--ef-search", "10", "100",
        "--opensearch", opensearch_node.url,
    )  # fmt: skip
    data = load(tmp_path, "knn_recall")
    assert data["vectors"] == data["real_images"] + 250 and data["queries"] == 70
    default = next(s for name, s in data["settings"].items() if name.startswith("default"))
    assert [s["ef_search"] for s in default["sweep"]] == [10, 100]
    at_100 = default["sweep"][1]
    assert 0.9 <= at_100["recall_at_10"] <= 1.0  # a few hundred vectors: HNSW is nearly exact
    assert at_100["map_at_100"] == pytest.approx(data["exact"]["map_at_100"], abs=0.05)
    assert 0.9 <= data["exact_fp16"]["recall_at_10"] <= 1.0
    assert 0 < data["exact"]["map_at_100"] <= 1


@pytest.mark.slow
def test_embed_throughput_smoke_and_parity(tmp_path: Path) -> None:
    run_script(
        "embed_throughput.py", tmp_path, "--models", "lite0-gem", "resnet50-gem", "--modes", "single-scale",
        "--images", "3", "--repeats", "2", "--workers", "1", "--max-side", "96",
    )  # fmt: skip
    data = load(tmp_path, "embed_throughput_cpu")
    assert data["repeats"] == 2 and data["photos"] == "samples"
    assert sum(data["image_sizes"].values()) == 3  # the sizes of the distinct images measured
    rows = {(r["model"], r["runner"]): r for r in data["results"]}
    assert {runner for _, runner in rows} == {"torch", "onnx", "torch-1thread"}
    lite0 = {runner: r for (model, runner), r in rows.items() if model == "lite0-gem"}
    # the same network on the same images: the ONNX path gives the PyTorch descriptors, on every
    # image of every repeat, and much closer than two different images are
    for runner in ("onnx", "torch-1thread"):
        assert lite0[runner]["min_cosine_vs_baseline"] >= 0.999
        assert lite0[runner]["parity_images_checked"] == 3 * 2
        assert lite0[runner]["median_cosine_between_images"] < 0.99
    # random weights: no parity claimed, only speed
    for (model, _runner), r in rows.items():
        if model == "resnet50-gem":
            assert r["weights"].startswith("random") and "min_cosine_vs_baseline" not in r
    cores = data["machine"]["usable_cores"]
    for (model, runner), r in rows.items():
        base = rows[model, "torch"]
        # the PyTorch loop's first image warms up after its workers start: the clock counts the rest
        assert r["timed_images"] == (2 if runner.startswith("torch") else 3)
        assert len(r["runs_images_per_s"]) == 2 and len(r["runs_wall_s"]) == 2
        assert r["images_per_s"] == pytest.approx(statistics.median(r["runs_images_per_s"]), abs=HALF + 1e-9)
        # rates, utilisation and ratios recomputed from each run's raw wall and CPU seconds
        for rate, wall in zip(r["runs_images_per_s"], r["runs_wall_s"], strict=True):
            assert agrees(rate, lambda w, n=r["timed_images"]: n / w, (wall, HALF))
        assert agrees(r["cpu_util"], lambda c, w: c / w / cores, (r["cpu_s"], HALF), (r["wall_s"], HALF))
        ratio = r["images_per_s"] / base["images_per_s"]
        assert r["ratio_vs_baseline"] == pytest.approx(ratio, abs=HALF + 1e-9)
        assert r["peak_rss_mb"] > 0
    assert rows["lite0-gem", "torch"]["child_peak_rss_mb"] > 0
    assert rows["lite0-gem", "onnx"]["child_peak_rss_mb"] is None
    table = (tmp_path / "embed_throughput_cpu.md").read_text()
    assert "speed only (random weights)" in table and "(6 images)" in table


def test_embed_throughput_parity_compares_every_image(tmp_path: Path, bench_modules: None) -> None:
    import embed_throughput

    rng = np.random.default_rng(0)
    base = rng.standard_normal((5, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    off = base.copy()
    off[4] = -off[4]  # only the last image of the second run disagrees
    files = []
    for i, x in enumerate((base, base, base, off)):
        files.append(tmp_path / f"{i}.npy")
        np.save(files[-1], x)
    baseline = [{"vectors": str(files[0])}, {"vectors": str(files[1])}]
    runs = [{"vectors": str(files[2])}, {"vectors": str(files[3])}]
    assert embed_throughput.parity(baseline, runs) == (-1.0, 10)
    assert embed_throughput.parity(baseline, runs[:1]) == (1.0, 5)


@pytest.mark.slow
def test_ingest_and_query_smoke(opensearch_node: OpenSearchNode, tmp_path: Path) -> None:
    url = opensearch_node.url
    run_script("ingest_throughput.py", tmp_path, "--images", "6", "--repeats", "1", "--max-side", "96",
               "--opensearch", url)  # fmt: skip
    ingest = load(tmp_path, "ingest_throughput")
    rows = {r["target"]: r for r in ingest["results"]}
    assert set(rows) == {"embed only", "LocalStore", "OpenSearch"} and ingest["images"] == 6
    for r in rows.values():
        assert r["runs_images_per_s"] == [r["images_per_s"]]  # one run each
        # rates and ratios recomputed from each run's raw wall seconds: 6 images each
        wall, base = r["wall_s"], rows["embed only"]["wall_s"]
        assert agrees(r["images_per_s"], lambda w: 6 / w, (wall, HALF))
        assert agrees(r["ratio_vs_embed_only"], rate_ratio(6), (wall, HALF), (base, HALF), *ROUNDED_RATES)
    run_script("query_latency.py", tmp_path, "--queries", "12", "--distractors", "50", "--max-side", "96",
               "--opensearch", url)  # fmt: skip
    query = load(tmp_path, "query_latency")
    assert (query["queries"], query["distractors"], query["k"]) == (12, 50, 10)
    assert set(query["results"]) == {"LocalStore", "OpenSearch"}
    for steps in query["results"].values():
        # each query's total wraps its decode, embed and k-NN steps: means add up, medians dominate
        parts = ("decode", "embed", "knn")
        assert steps["total"]["mean_ms"] >= sum(steps[s]["mean_ms"] for s in parts) - 0.03
        assert all(steps["total"]["p50_ms"] >= steps[s]["p50_ms"] for s in parts)
        assert all(steps[s]["mean_ms"] > 0 for s in ("embed", "knn", "total"))
