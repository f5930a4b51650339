"""Every benchmark with its default sizes, one OpenSearch node for all, and a summary against the targets.

    python benchmarks/run_all.py                           # about 14 minutes on a 2-core machine
    python benchmarks/run_all.py --opensearch http://host:9200 --out-dir /tmp/bench
    python benchmarks/run_all.py --quick                   # tiny sizes: checks that everything runs
    python benchmarks/run_all.py --device cuda             # the embedding benchmark on the GPU, not the CPU

Writes each benchmark's ``<name>.json`` and ``<name>.md`` into ``--out-dir`` (default
``benchmarks/results/``), then ``summary.md`` / ``summary.json``: the machine, the targets of
docs/architecture.md ("Performance targets") with the measured value and whether it is met, and every table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, opensearch
from _machine import describe, one_line

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "bulk_load", "knn_recall", "embed_throughput", "ingest_throughput", "query_latency", "serve_soak",
)  # fmt: skip
QUICK: dict[str, list[str]] = {  # tiny sizes: seconds each, for smoke tests
    "bulk_load": [
        "--sizes", "200", "--local-sizes", "200", "--queries", "5", "--dim", "32", "--repeats", "1",
    ],
    "knn_recall": ["--distractors", "300", "--queries", "70", "--ef-search", "10", "100"],
    "embed_throughput": [
        "--models", "lite0-gem", "--modes", "single-scale", "--images", "3", "--repeats", "1",
        "--workers", "1", "--max-side", "96",
    ],
    "ingest_throughput": ["--images", "8", "--repeats", "1", "--max-side", "96"],
    "query_latency": ["--queries", "12", "--distractors", "100", "--max-side", "96"],
    "serve_soak": [
        "--side", "1500", "--thumbs", "8", "--uploads", "4", "--requests", "20", "--concurrency", "4",
    ],
}  # fmt: skip
# Default sizes: about 14 minutes on a busy 2-core machine (the scripts' own defaults are larger).
DEFAULT: dict[str, list[str]] = {
    "bulk_load": ["--sizes", "1000", "5000", "--local-sizes", "1000", "10000", "100000"],
    "knn_recall": [],
    "embed_throughput": ["--images", "16", "--repeats", "1"],
    "ingest_throughput": ["--images", "120"],
    "query_latency": [],
    "serve_soak": [],
}
SERVE_RSS_TARGET_MB = 1024
USES_NODE = {"bulk_load", "knn_recall", "ingest_throughput", "query_latency"}


def run_one(name: str, extra: list[str], out_dir: Path, url: str | None) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / f"{name}.py"), "--out-dir", str(out_dir), *extra]
    if url is not None and name in USES_NODE:
        cmd += ["--opensearch", url]
    print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    seconds = round(time.perf_counter() - t0, 1)
    print(f"== {name}: exit {proc.returncode} after {seconds} s", file=sys.stderr, flush=True)
    return {"name": name, "exit": proc.returncode, "seconds": seconds}


def _load(out_dir: Path, name: str) -> dict[str, Any] | None:
    path = out_dir / f"{name}.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def targets(out_dir: Path, embed_name: str = "embed_throughput_cpu") -> list[dict[str, Any]]:
    """The targets of docs/architecture.md with the measured values (None where the benchmark did not run)."""
    rows: list[dict[str, Any]] = []
    embed = _load(out_dir, embed_name)
    results = (embed or {}).get("results", [])
    speed = {(r["model"], r["mode"], r["runner"]): r.get("images_per_s") for r in results}
    for r in results:
        if r.get("runner") in ("onnx", "onnx-cuda-fp32", "onnx-trt-fp16") and "ratio_vs_baseline" in r:
            rows.append(_target(
                f"embedding {r['model']} {r['mode']} ({r['runner']}) vs PyTorch eager",
                r["ratio_vs_baseline"], embed["target_ratio"] if embed else 1.5, "x",
            ))  # fmt: skip
            tuned = speed.get((r["model"], r["mode"], "torch-1thread"))
            if tuned:
                rows.append({
                    "target": f"(for reading) {r['model']} {r['mode']} onnx vs PyTorch with 1 thread",
                    "value": round(r["images_per_s"] / tuned, 3), "met": None,
                })  # fmt: skip
    ingest = _load(out_dir, "ingest_throughput")
    for r in (ingest or {}).get("results", []):
        if r["target"] != "embed only":
            rows.append(
                _target(f"ingest into {r['target']} vs embed-only", r["ratio_vs_embed_only"], 0.8, "x")
            )
    knn = _load(out_dir, "knn_recall")
    default = _default_ef_search()
    for name, setting in (knn or {}).get("settings", {}).items():
        for s in setting.get("sweep", []):
            if s["ef_search"] != default:
                continue
            row = _target(f"recall@10 {name}, ef_search {default}", s["recall_at_10"], 0.98, "")
            if setting.get("encoder"):  # quantised vectors trade recall for memory: shown, not judged
                row["met"] = None
            rows.append(row)
    query = _load(out_dir, "query_latency")
    for store, steps in (query or {}).get("results", {}).items():
        rows.append({
            "target": f"crop-and-search on {store}: p50 / p99 ms (decode / embed / k-NN)",
            "value": " / ".join(f"{steps[s]['p50_ms']:.0f}/{steps[s]['p99_ms']:.0f}"
                                for s in ("decode", "embed", "knn")),
            "met": None,
        })  # fmt: skip
    soak = _load(out_dir, "serve_soak")
    for load in (soak or {}).get("loads", []):
        peak = load["peak_rss_mb"]
        rows.append({
            "target": f"serve peak RSS, {load['load']} load <= {SERVE_RSS_TARGET_MB} MB",
            "value": peak, "met": bool(peak <= SERVE_RSS_TARGET_MB),
        })  # fmt: skip
    return rows


def _default_ef_search() -> int:
    from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions

    return IndexOptions().ef_search


def _target(label: str, value: float, goal: float, unit: str) -> dict[str, Any]:
    return {"target": f"{label} >= {goal}{unit}", "value": value, "met": bool(value >= goal)}


def summary(out_dir: Path, runs: list[dict[str, Any]], machine: dict[str, Any], embed_name: str) -> str:
    rows = targets(out_dir, embed_name)
    lines = [
        "## Benchmark results", "", f"Machine: {one_line(machine)}", "",
        "| target | measured | met |", "|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        value = f"{r['value']:.3f}" if isinstance(r["value"], float) else r["value"]
        lines.append(f"| {r['target']} | {value} | {met} |")
    lines += ["", "| benchmark | exit | seconds |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['exit']} | {r['seconds']} |" for r in runs]
    for r in runs:
        md = out_dir / f"{r['name'] if r['name'] != 'embed_throughput' else embed_name}.md"
        if md.is_file():
            lines += ["", md.read_text().strip()]
    text = "\n".join(lines) + "\n"
    (out_dir / "summary.md").write_text(text)
    (out_dir / "summary.json").write_text(
        json.dumps({"machine": machine, "runs": runs, "targets": rows}, indent=2)
    )
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (checks that everything runs)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: the GPU embedding run")
    ap.add_argument("--opensearch", default=None, help="URL of a node; default: start one for all")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    machine = describe()
    t0 = time.perf_counter()
    runs = []
    url = args.opensearch
    needs_node = url is None and any(n in USES_NODE for n in args.only)
    node = opensearch(url) if needs_node else contextlib.nullcontext((None, {"url": url}))
    with node as (_, info):
        url = info["url"]
        for name in args.only:
            extra = list(QUICK[name] if args.quick else DEFAULT[name])
            if name == "embed_throughput":
                extra += ["--device", args.device]
            runs.append(run_one(name, extra, args.out_dir, url))
    text = summary(args.out_dir, runs, machine, f"embed_throughput_{args.device}")
    print(text)
    print(f"(all results in {args.out_dir}; {time.perf_counter() - t0:.0f} s)")
    return 0 if all(r["exit"] == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
