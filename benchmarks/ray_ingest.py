"""Ingest on Ray vs the single-process ingest: images/s and peak RSS of the whole process tree.

    python benchmarks/ray_ingest.py                      # 48 images, Lite0-GeM (models cache)
    python benchmarks/ray_ingest.py --images 200 --model m.onnx

Each path runs once, in a fresh child process, on the same images (a JSONL manifest with fresh
ids, so nothing is skipped) into a fresh LocalStore: ``ingest_collection`` (threads) and
``ingest_dataset`` on a Ray started on this machine (its start-up is timed apart from the run).
The parent samples the RSS of the child and all its descendants (Ray's GCS, raylet and workers)
every 0.1 s and reports the peak of the sum. A third child measures one embedding actor's rate
(one session, ``--actor-threads`` threads) and one CPU's decode+shrink rate; the projection table
multiplies those measured rates out to cluster shapes and is labelled as a projection.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from _common import markdown_table, sample_paths, write_results
from _machine import usable_cores

# cluster shapes of the projection: (nodes, GPUs per node, CPU cores per node)
SHAPES = ((1, 1, 16), (1, 4, 32), (1, 8, 64), (4, 8, 64))


def tree_rss_kb(root: int) -> int:
    """The summed VmRSS of ``root`` and every descendant, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == pid and p not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def run_child(args: list[str]) -> dict[str, Any]:
    """Run this script in ``--child`` mode; its JSON result plus the peak RSS of its process tree."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_kb(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed with {proc.returncode}")
    return {**json.loads(out.strip().splitlines()[-1]), "tree_peak_rss_mb": round(peak / 1024, 1)}


def child(mode: str, manifest: Path, model: Path, store: Path, cores: int, threads: int) -> dict[str, Any]:
    if mode == "single":
        from gemsearch.plugin.ingest.pipeline import ingest_collection

        start = time.perf_counter()
        report = ingest_collection([str(manifest)], model, store)
        return {"run_s": time.perf_counter() - start, "start_s": 0.0, **_checked(report)}
    if mode == "ray":
        import ray

        from gemsearch.plugin.ray import RayIngestOptions, ingest_dataset

        start = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter()
        options = RayIngestOptions(embed_threads=threads)
        report = ingest_dataset([str(manifest)], model, store, options=options)
        first = time.perf_counter()
        again = _fresh_ids(manifest)  # the same images under new ids: a second run on the warm Ray
        _checked(ingest_dataset([str(again)], model, store, options=options))
        warm_s = time.perf_counter() - first
        return {
            "run_s": first - started,
            "start_s": started - start,
            "warm_run_s": warm_s,
            **_checked(report),
        }
    return _actor_rates(manifest, model, threads)


def _fresh_ids(manifest: Path) -> Path:
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    out = manifest.with_suffix(".again.jsonl")
    out.write_text("".join(json.dumps({**r, "id": r["id"] + "-again"}) + "\n" for r in rows))
    return out


def _checked(report: Any) -> dict[str, Any]:
    if not report.ok or report.embedded != report.read:
        raise RuntimeError(f"not every image was stored: {report.to_dict()}")
    return {"images": report.embedded}


def _actor_rates(manifest: Path, model: Path, threads: int) -> dict[str, Any]:
    """One embedding actor's images/s (one session, ``threads`` threads) and one CPU's decode rate."""
    from gemsearch.manifest import ModelManifest
    from gemsearch.plugin.embedding.embedder import OnnxEmbedder, prepare_image
    from gemsearch.plugin.inputs.images import load_image_file

    paths = [json.loads(line)["path"] for line in manifest.read_text().splitlines()]
    embedder = OnnxEmbedder(model, threads=threads)
    m: ModelManifest = embedder.manifest
    embedder.embed_prepared([prepare_image(m, load_image_file(paths[0]).image)])  # warm the session
    t0 = time.perf_counter()
    arrays = [prepare_image(m, load_image_file(p).image) for p in paths]
    t1 = time.perf_counter()
    embedder.embed_prepared(arrays)
    t2 = time.perf_counter()
    return {"decode_per_cpu": len(paths) / (t1 - t0), "embed_per_actor": len(paths) / (t2 - t1)}


def projection(rates: dict[str, Any], gpu_actor_rate: float | None) -> list[list[Any]]:
    """Cluster shapes x the measured rates. With GPUs the decode tasks on the CPUs bound the
    ingest; ``gpu_actor_rate`` (images/s of one actor on one GPU, measured elsewhere) adds the
    embedding bound, otherwise the column says how fast each GPU must embed to reach the bound."""
    rows = []
    for nodes, gpus, cores in SHAPES:
        decode_cpus = nodes * (cores - gpus)  # one CPU per GPU actor, the rest decode
        decode_bound = decode_cpus * rates["decode_per_cpu"]
        cpu_only = nodes * cores // 2 * rates["embed_per_actor"]  # half the CPUs embed, half decode
        needed = decode_bound / (nodes * gpus)
        embed = f"{nodes * gpus * gpu_actor_rate:.0f}" if gpu_actor_rate else f"needs {needed:.0f}/GPU"
        projected = min(decode_bound, nodes * gpus * gpu_actor_rate) if gpu_actor_rate else decode_bound
        rows.append([f"{nodes} x ({gpus} GPU, {cores} CPU)", f"{cpu_only:.0f}", f"{decode_bound:.0f}", embed,
                     f"{projected:.0f}"])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--model", default="lite0-gem", help="ONNX file or cached model name")
    ap.add_argument("--cores", type=int, default=usable_cores(), help="CPUs Ray may use")
    ap.add_argument("--actor-threads", type=int, default=1, help="onnxruntime threads per embedding actor")
    ap.add_argument(
        "--gpu-actor-rate", type=float, default=None, help="images/s of one GPU actor, if measured"
    )
    ap.add_argument("--child", choices=["single", "ray", "rates"], help=argparse.SUPPRESS)
    ap.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from gemsearch.models_cache import resolve_model

    model = Path(resolve_model(args.model))
    if args.child:
        result = child(args.child, args.manifest, model, args.store, args.cores, args.actor_threads)
        print(json.dumps(result))
        return
    tmp = Path(tempfile.mkdtemp(prefix="gemsearch-ray-bench-"))
    paths, _ = sample_paths(args.images)
    common = ["--model", str(model), "--cores", str(args.cores), "--actor-threads", str(args.actor_threads)]
    results: dict[str, dict[str, Any]] = {}
    for mode in ("single", "ray", "rates"):
        manifest = tmp / f"{mode}.jsonl"
        tag = uuid.uuid4().hex[:8]  # fresh ids: nothing is skipped
        lines = [json.dumps({"path": str(p), "id": f"{tag}-{i}"}) for i, p in enumerate(paths)]
        manifest.write_text("\n".join(lines) + "\n")
        store = ["--store", str(tmp / f"store-{mode}")]
        results[mode] = run_child(["--child", mode, "--manifest", str(manifest), *store, *common])
        print(f"{mode}: {results[mode]}", file=sys.stderr, flush=True)
    report(args, results)


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    single, ray_run, rates = results["single"], results["ray"], results["rates"]
    rate = {k: r["images"] / r["run_s"] for k, r in (("single", single), ("ray", ray_run))}
    ratio = rate["ray"] / rate["single"]
    warm = ray_run["images"] / ray_run["warm_run_s"]
    body = [
        ["single process (threads)", f"{rate['single']:.2f}", "1.00x", "-",
         f"{single['tree_peak_rss_mb']:,.0f}"],
        ["Ray, local: first run", f"{rate['ray']:.2f}", f"{ratio:.2f}x", f"{ray_run['start_s']:.1f}",
         f"{ray_run['tree_peak_rss_mb']:,.0f}"],
        ["Ray, local: second run (Ray started)", f"{warm:.2f}", f"{warm / rate['single']:.2f}x", "-",
         "(same tree)"],
    ]  # fmt: skip
    md = markdown_table(
        ["executor", "images/s", "vs single", "Ray start s", "peak RSS MB (process tree)"], body
    )
    md += (
        f"\n\nMeasured rates: one embedding actor ({args.actor_threads} thread) "
        f"{rates['embed_per_actor']:.2f} images/s; decode+shrink {rates['decode_per_cpu']:.2f} "
        "images/s per CPU.\n\n**Projection** (not measured: the measured rates multiplied out; "
        "GPU actors need one CPU each):\n\n"
    )
    md += markdown_table(
        [
            "cluster",
            "CPU actors only, images/s",
            "decode bound, images/s",
            "GPU embedding, images/s",
            "projected",
        ],
        projection(rates, args.gpu_actor_rate),
    )
    payload = {
        "images": args.images, "model": args.model, "cores": args.cores, "actor_threads": args.actor_threads,
        "results": results, "ratio_ray_vs_single": round(ratio, 3),
        "ratio_warm_ray_vs_single": round(warm / rate["single"], 3),
        "gpu_actor_rate": args.gpu_actor_rate,
    }  # fmt: skip
    paths = write_results("ray_ingest", payload, md)
    print(md)
    print(f"\n(results in {paths[0]})")


if __name__ == "__main__":
    main()
