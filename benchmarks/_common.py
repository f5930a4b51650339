"""Shared pieces of the benchmark scripts: resource meters, an OpenSearch node, test data, output.

The scripts run from the repository root (``python benchmarks/<name>.py``); each writes
``benchmarks/results/<name>.json`` (machine description + results) and ``<name>.md`` (a table).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gemsearch.manifest import ModelManifest, PoolingSpec

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
SAMPLES_CACHE = Path.home() / ".cache" / "gemsearch" / "samples"
BENCH_CACHE = Path.home() / ".cache" / "gemsearch" / "benchmarks"


# ----------------------------------------------------------------------------- resources


def status_kb(field_name: str, pid: int | str = "self") -> int:
    """A ``VmHWM``/``VmRSS``-style field of /proc/<pid>/status in kB (0 if unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (Linux: ``clear_refs`` 5), so a meter sees its own peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


@dataclass
class Usage:
    """Wall time, CPU time (this process and its reaped children) and peak memory of a block."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    child_peak_rss_mb: float = 0.0
    cores: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))

    @property
    def cpu_util(self) -> float:
        """Share of the usable cores kept busy (1.0 = all of them, all the time)."""
        return self.cpu_s / self.wall_s / self.cores if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_util": round(self.cpu_util, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "child_peak_rss_mb": round(self.child_peak_rss_mb, 1),
        }


@contextlib.contextmanager
def measure() -> Iterator[Usage]:
    """Measure the block; worker processes count once they have exited (DataLoader, pools)."""
    usage = Usage()
    reset_peak_rss()
    t0, c0 = time.perf_counter(), os.times()
    try:
        yield usage
    finally:
        c1 = os.times()
        usage.wall_s = time.perf_counter() - t0
        usage.cpu_s = sum(c1[:4]) - sum(c0[:4])
        usage.peak_rss_mb = status_kb("VmHWM") / 1024
        usage.child_peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


# Runs argv[2:] and writes its peak RSS (kB, wait4's ru_maxrss) to argv[1]. Linux carries a process's
# high-water mark across fork and exec, so a command started straight from a process that has grown
# (torch loaded) reports at least that process's peak; this launcher is small, so the command's peak
# is its own.
PEAK_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_with_peak_rss(cmd: Sequence[str], workdir: Path, **popen: Any) -> tuple[int, float, float]:
    """Run ``cmd`` through ``PEAK_LAUNCHER``: (exit code, its own peak RSS in MB, CPU seconds of the
    launcher's children: the command and the launcher's small start)."""
    import subprocess

    peak = workdir / f"peak-{os.getpid()}-{time.monotonic_ns()}.kb"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code = subprocess.call([sys.executable, "-c", PEAK_LAUNCHER, str(peak), *cmd], **popen)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    peak_mb = int(peak.read_text()) / 1024 if peak.is_file() else float("nan")
    peak.unlink(missing_ok=True)
    return code, peak_mb, cpu_s


def percentiles(times_ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(times_ms, dtype=np.float64)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


# ----------------------------------------------------------------------------- data


def bench_manifest(dim: int, name: str = "bench") -> ModelManifest:
    """A manifest for stores fed with precomputed vectors (no model behind them)."""
    return ModelManifest(
        name=name, version=hashlib.sha256(f"{name}-{dim}".encode()).hexdigest(), backbone="none",
        pooling=PoolingSpec(kind="gem", p=3.0), output_dim=dim,
    )  # fmt: skip


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    rows: np.ndarray = x / np.linalg.norm(x, axis=1, keepdims=True)
    return rows


def distractors(real: np.ndarray, n: int, rng: np.random.Generator, noise: float = 2.0) -> np.ndarray:
    """``n`` unit vectors near the real descriptors: convex mixtures of two of them plus noise.

    Random directions in 1280 dimensions are nearly orthogonal to everything and make no HNSW
    graph hard; these lie where real descriptors lie, so neighbours compete as they would. With the
    default noise a distractor is about as close to a real image as its hardest true negative: on
    the benchmark set, 1,000 of them take the exact leave-one-out mAP from 0.99 to about 0.93.
    """
    d = real.shape[1]
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 4096):
        m = min(4096, n - start)
        a, b = real[rng.integers(0, len(real), m)], real[rng.integers(0, len(real), m)]
        w = rng.uniform(0, 1, (m, 1)).astype(np.float32)
        spread = float(np.abs(real - real.mean(0)).mean())
        x = w * a + (1 - w) * b + noise * spread * rng.standard_normal((m, d)).astype(np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def sample_set(views: int = 8, max_side: int = 512) -> Any:
    """The seeded multi-view set of scikit-image's photos (built once, then cached)."""
    from gemsearch.samples import available_clusters, build_multiview_set

    names = available_clusters()
    return build_multiview_set(
        SAMPLES_CACHE / f"bench-v{views}-s{max_side}", views_per_image=views, holdout=names,
        max_side=max_side,
    )  # fmt: skip


def sample_paths(n: int | None = None, views: int = 8) -> tuple[list[Path], list[int]]:
    """Paths of the benchmark images and their clusters (the first ``n``; repeated if fewer)."""
    s = sample_set(views)
    paths = [s.path(i) for i in range(len(s.images))]
    clusters = [im.cluster for im in s.images]
    if n is None:
        return paths, clusters
    reps = -(-n // len(paths))
    return (paths * reps)[:n], (clusters * reps)[:n]


def lite0_descriptors(views: int = 8, max_side: int = 512) -> tuple[np.ndarray, list[int]]:
    """Lite0-GeM descriptors of the benchmark set (PyTorch, single-scale), cached as .npz."""
    s = sample_set(views)
    cache = BENCH_CACHE / f"lite0-gem-v{views}-s{max_side}-{len(s.images)}.npz"
    clusters = [im.cluster for im in s.images]
    if cache.is_file():
        return np.load(cache)["x"], clusters
    from gemsearch.preprocess import prepare_file
    from gemsearch.trainer import extract_descriptors, load_model

    model = load_model("efficientnet_lite0-gem")
    cfg = model.config.preprocessing.model_copy(update={"max_side": max_side})
    images = [prepare_file(s.path(i), cfg) for i in range(len(s.images))]
    x = extract_descriptors(model.net, images)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, x=x)
    return x, clusters


# ----------------------------------------------------------------------------- OpenSearch


@contextlib.contextmanager
def opensearch(url: str | None, heap: str = "2g") -> Iterator[tuple[Any, dict[str, Any]]]:
    """A client for ``url``, or for a node started here with the test harness (stopped afterwards).

    Yields ``(client, info)``; ``info`` has the version, and the JVM's pid when we started it.
    """
    from opensearchpy import OpenSearch

    node = None
    if url is None:
        sys.path.insert(0, str(REPO / "tests"))
        from support.opensearch_harness import start_node

        print(f"starting an OpenSearch node (heap {heap}) ...", file=sys.stderr, flush=True)
        node = start_node(heap=heap)
        url = node.url
    client = OpenSearch(hosts=[url], timeout=120)
    try:
        version = client.info()["version"]["number"]
        plugins = client.cat.plugins(format="json")
        knn = next((p["version"] for p in plugins if p.get("component") == "opensearch-knn"), None)
        info = {
            "url": url, "version": version, "knn_plugin": knn, "started_here": node is not None,
            "heap": heap if node is not None else None,
            "pid": node.process.pid if node is not None and node.process else None,
        }  # fmt: skip
        yield client, info
    finally:
        client.close()
        if node is not None:
            node.stop()


def jvm_memory_mb(client: Any, pid: int | None = None) -> dict[str, float]:
    """Heap in use (as the node reports it) and, for a node started here, its resident memory."""
    stats = client.nodes.stats(metric="jvm")["nodes"]
    node = next(iter(stats.values()))
    out = {"heap_used_mb": round(node["jvm"]["mem"]["heap_used_in_bytes"] / 2**20, 1)}
    if pid is not None:
        out["node_rss_mb"] = round(status_kb("VmRSS", pid) / 1024, 1)
        out["node_peak_rss_mb"] = round(status_kb("VmHWM", pid) / 1024, 1)
    return out


# ----------------------------------------------------------------------------- output


def write_results(
    name: str, results: dict[str, Any], table: str, out_dir: Path | None = None
) -> tuple[Path, Path]:
    """``<out_dir>/<name>.json`` (with the machine) and ``<name>.md``; returns both paths."""
    from _machine import describe, one_line

    out = out_dir or RESULTS
    out.mkdir(parents=True, exist_ok=True)
    machine = results.get("machine") or describe()
    payload = {"benchmark": name, "machine": machine, **{k: v for k, v in results.items() if k != "machine"}}
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    md_path.write_text(f"### {name}\n\n{one_line(machine)}\n\n{table}\n")
    return json_path, md_path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
