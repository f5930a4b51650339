"""Every benchmark with its default sizes, one OpenSearch node for all, and a summary against the targets.

    python benchmarks/run_all.py                           # about 14 minutes on a 2-core machine
    python benchmarks/run_all.py --opensearch http://host:9200 --out-dir /tmp/bench
    python benchmarks/run_all.py --quick                   # tiny sizes: checks that everything runs
    python benchmarks/run_all.py --device cuda             # the embedding benchmark on the GPU, not the CPU
    python benchmarks/run_all.py --reference               # the reference run: benchmarks/reference/summary.*
    python benchmarks/run_all.py --only embed_photos --with embed_photos="--images 12"   # other sizes

Writes each benchmark's ``<name>.json`` and ``<name>.md`` into ``--out-dir`` (default
``benchmarks/results/``), then ``summary.md`` / ``summary.json``: the machine, the targets of
docs/architecture.md ("Performance targets") with the measured value and whether it is met, and every table.
``--reference`` writes the summary into ``benchmarks/reference/`` (committed: the README's and
docs/benchmarks.md's figures are generated from it by ``readme_tables.py``), with the command, the
machine, the date, the image sizes and every benchmark's full results.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, opensearch
from _machine import describe, one_line

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference"
BENCHMARKS = (
    "embed_photos", "embed_throughput", "ingest_photos", "bulk_load", "knn_recall", "ingest_throughput",
    "query_latency", "serve_soak",
)  # fmt: skip
SCRIPTS = {"embed_photos": "embed_throughput", "ingest_photos": "ingest_throughput"}  # else NAME.py
SHARED_MACHINE_NOTE = (
    "Compare the paths by their ratios within the run (they run alternately in the same minutes), "
    "not by absolute times: those depend on the machine and on what else runs on it (see the load "
    "average)."
)
QUICK: dict[str, list[str]] = {  # tiny sizes: seconds each, for smoke tests
    "bulk_load": [
        "--sizes", "200", "--local-sizes", "200", "--queries", "5", "--dim", "32", "--repeats", "1",
    ],
    "knn_recall": ["--distractors", "300", "--queries", "70", "--ef-search", "10", "100"],
    "embed_throughput": [
        "--models", "lite0-gem", "--modes", "single-scale", "--images", "3", "--repeats", "1",
        "--workers", "1", "--max-side", "96",
    ],
    "embed_photos": [
        "--photos", "wallpapers", "--models", "lite0-gem", "--modes", "single-scale", "--images", "3",
        "--repeats", "1", "--workers", "1", "--max-side", "96",
    ],
    "ingest_photos": ["--wallpapers", "--images", "4", "--repeats", "1", "--max-side", "96"],
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
    "embed_photos": ["--photos", "wallpapers", "--models", "lite0-gem"],  # 3 repeats, every wallpaper
    "embed_throughput": ["--images", "32"],
    "ingest_photos": ["--wallpapers"],
    "ingest_throughput": ["--images", "120"],
    "query_latency": [],
    "serve_soak": [],
}
SERVE_RSS_TARGET_MB = 1024
USES_NODE = {"bulk_load", "knn_recall", "ingest_throughput", "query_latency"}


def run_one(name: str, extra: list[str], out_dir: Path, url: str | None) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / f"{SCRIPTS.get(name, name)}.py"), "--out-dir", str(out_dir), *extra]
    if url is not None and name in USES_NODE:
        cmd += ["--opensearch", url]
    print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    seconds = round(time.perf_counter() - t0, 1)
    print(f"== {name}: exit {proc.returncode} after {seconds} s", file=sys.stderr, flush=True)
    return {"name": name, "exit": proc.returncode, "seconds": seconds, "args": extra}


def result_name(name: str, device: str = "cpu") -> str:
    """The results file (without .json) a benchmark of ``run_all`` writes."""
    return {
        "embed_throughput": f"embed_throughput_{device}", "embed_photos": f"embed_throughput_{device}_photos",
        "ingest_photos": "ingest_real_photos",
    }.get(name, name)  # fmt: skip


def _load(out_dir: Path, name: str) -> dict[str, Any] | None:
    path = out_dir / f"{name}.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


EMBED_SETS = {"embed_photos": "real photos", "embed_throughput": "small images"}


def targets(out_dir: Path, device: str = "cpu") -> list[dict[str, Any]]:
    """The targets of docs/architecture.md with the measured values (None where the benchmark did not run)."""
    rows: list[dict[str, Any]] = []
    for bench, label in EMBED_SETS.items():
        rows += _embed_targets(_load(out_dir, result_name(bench, device)), label)
    rows += _real_ingest_targets(_load(out_dir, "ingest_real_photos"))
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


def _real_ingest_targets(data: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``gemsearch ingest`` at its defaults on real photos: its speed against the best PyTorch loop
    and its peak RSS."""
    row = next((r for r in (data or {}).get("results", []) if r["path"] == "gemsearch ingest"), None)
    if data is None or row is None:
        return []
    limit = data["target_peak_rss_mb"]
    return [
        _target("ingest, real photos: gemsearch ingest vs the best PyTorch loop", row["ratio_vs_best_torch"],
                data["target_ratio"], "x"),
        {"target": f"ingest, real photos: gemsearch ingest peak RSS <= {limit} MB",
         "value": row["peak_rss_mb"], "met": bool(row["peak_rss_mb"] <= limit)},
    ]  # fmt: skip


def _embed_targets(embed: dict[str, Any] | None, label: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    results = (embed or {}).get("results", [])
    speed = {(r["model"], r["mode"], r["runner"]): r.get("images_per_s") for r in results}
    for r in results:
        if r.get("runner") in ("onnx", "onnx-cuda-fp32", "onnx-trt-fp16") and "ratio_vs_baseline" in r:
            rows.append(_target(
                f"embedding, {label}: {r['model']} {r['mode']} ({r['runner']}) vs PyTorch eager",
                r["ratio_vs_baseline"], embed["target_ratio"] if embed else 1.5, "x",
            ))  # fmt: skip
            tuned = speed.get((r["model"], r["mode"], "torch-1thread"))
            if tuned:
                rows.append({
                    "target": f"(for reading) {label}: {r['model']} {r['mode']} onnx vs PyTorch, 1 thread",
                    "value": round(r["images_per_s"] / tuned, 3), "met": None,
                })  # fmt: skip
    return rows


def _default_ef_search() -> int:
    from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions

    return IndexOptions().ef_search


def _target(label: str, value: float, goal: float, unit: str) -> dict[str, Any]:
    return {"target": f"{label} >= {goal}{unit}", "value": value, "met": bool(value >= goal)}


def summary(
    out_dir: Path, runs: list[dict[str, Any]], machine: dict[str, Any], device: str = "cpu",
    summary_dir: Path | None = None, command: str | None = None,
) -> str:  # fmt: skip
    """``summary.md`` and ``summary.json`` (with every benchmark's results) into ``summary_dir``."""
    rows = targets(out_dir, device)
    lines = ["## Benchmark results", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [f"Machine: {one_line(machine)}", "", SHARED_MACHINE_NOTE, ""]
    lines += ["| target | measured | met |", "|---|---|---|"]
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "**no**")
        value = f"{r['value']:.3f}" if isinstance(r["value"], float) else r["value"]
        lines.append(f"| {r['target']} | {value} | {met} |")
    lines += ["", "| benchmark | arguments | exit | seconds |", "|---|---|---|---|"]
    lines += [
        f"| {r['name']} | `{' '.join(r.get('args', []))}` | {r['exit']} | {r['seconds']} |" for r in runs
    ]
    results = {r["name"]: _load(out_dir, result_name(r["name"], device)) for r in runs}
    for r in runs:
        data = results[r["name"]]
        if data and data.get("image_sizes"):
            sizes = ", ".join(f"{n} x {size}" for size, n in data["image_sizes"].items())
            lines += ["", f"{r['name']}: {data['images']} images per run, of these sizes: {sizes}"]
        md = out_dir / f"{result_name(r['name'], device)}.md"
        if md.is_file():
            lines += ["", md.read_text().strip()]
    text = "\n".join(lines) + "\n"
    dest = summary_dir or out_dir
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "summary.md").write_text(text)
    payload = {
        "command": command, "date_utc": machine.get("date_utc"), "machine": machine,
        "note": SHARED_MACHINE_NOTE, "runs": runs, "targets": rows, "benchmarks": results,
    }  # fmt: skip
    (dest / "summary.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (checks that everything runs)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: the GPU embedding run")
    ap.add_argument("--opensearch", default=None, help="URL of a node; default: start one for all")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: benchmarks/results/")
    ap.add_argument(
        "--reference", action="store_true",
        help="the reference run: summary.md/.json into benchmarks/reference/ (committed), results of "
        "each benchmark into benchmarks/results/reference/",
    )  # fmt: skip
    ap.add_argument(
        "--with", dest="extra", action="append", default=[], metavar="NAME=ARGS",
        help='more arguments for one benchmark, after its defaults: --with embed_photos="--images 12"',
    )  # fmt: skip
    args = ap.parse_args(argv)
    extra = _extra_args(args.extra)
    out_dir = args.out_dir or (RESULTS / "reference" if args.reference else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    machine = describe()
    t0 = time.perf_counter()
    runs = []
    url = args.opensearch
    needs_node = url is None and any(n in USES_NODE for n in args.only)
    node = opensearch(url) if needs_node else contextlib.nullcontext((None, {"url": url}))
    with node as (_, info):
        url = info["url"]
        for name in args.only:
            cmd = list(QUICK[name] if args.quick else DEFAULT[name]) + extra.get(name, [])
            if name in EMBED_SETS:
                cmd += ["--device", args.device]
            runs.append(run_one(name, cmd, out_dir, url))
    command = shlex.join(["python", "benchmarks/run_all.py", *(sys.argv[1:] if argv is None else argv)])
    summary_dir = REFERENCE if args.reference else out_dir
    text = summary(out_dir, runs, machine, args.device, summary_dir, command)
    print(text)
    print(f"(all results in {out_dir}, the summary in {summary_dir}; {time.perf_counter() - t0:.0f} s)")
    return 0 if all(r["exit"] == 0 for r in runs) else 1


def _extra_args(pairs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in BENCHMARKS:
            raise SystemExit(f"--with {pair!r}: expected NAME=ARGS with NAME one of {', '.join(BENCHMARKS)}")
        out.setdefault(name, []).extend(shlex.split(value))
    return out


if __name__ == "__main__":
    sys.exit(main())
