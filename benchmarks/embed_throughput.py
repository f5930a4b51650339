"""Embedding throughput: the plugin's ingest path (decode pool + onnxruntime) vs a plain PyTorch loop.

    python benchmarks/embed_throughput.py                       # Lite0-GeM and ResNet50-GeM, CPU
    python benchmarks/embed_throughput.py --photos wallpapers --models lite0-gem   # real photos, 1280-5120 px
    python benchmarks/embed_throughput.py --models lite0-gem --modes single-scale --images 16
    python benchmarks/embed_throughput.py --device cuda         # GPU: torch and ORT CUDA/TensorRT, fp32/fp16

The PyTorch baseline is cirtorch's ``extract_vectors``: a ``DataLoader`` with batch size 1 and
``--workers`` worker processes, each loading, shrinking (PIL LANCZOS) and normalising one image,
and the network in eval mode, one forward per image (per scale for multi-scale). The plugin path is
``gemsearch.plugin.ingest.pipeline.ingest`` with the same images into a store that keeps nothing: read and
decode threads run ahead of onnxruntime, images of one shape share a batch. Both use the same
network (the ONNX file is exported from it, multi-scale inside the graph), the same images and the
same shrinking; the ONNX graph normalises uint8 pixels itself.

``torch-1thread`` is the same loop with one intra-op thread: on a small or shared machine
PyTorch's OpenMP threads (one per core by default) compete with the DataLoader workers and other
processes, and a parallel region waits for its slowest thread, so the plain loop can be several
times slower than this tuned one; it is reported so the ratio to the plain baseline can be read in
that light. Each case runs in a fresh process (its peak memory is its own), cases alternate
between the paths and repeat ``--repeats`` times (3 by default); the median images/s is reported,
with every run's figure beside it. CPU utilisation is CPU time (the process and its worker
processes) over wall time and usable cores. The PyTorch loop's clock starts once its DataLoader
workers have delivered the first image (which warms the network and is not counted): worker
start-up is not charged to the baseline.

The ingest path decodes as ``--exact-decode`` does (every pixel, then cirtorch's shrink), as the
baseline does; the default draft JPEG decoding, faster still on large photos, is measured by
``ingest_throughput.py --wallpapers``.

Images (``--photos``): ``samples``, the multi-view set of scikit-image's photos (small: longer side
177-447 px),
or ``wallpapers``, 30 full-size Debian wallpapers (1280-5120 px, the sizes cameras produce;
``_real_photos.py``), which the model shrinks to ``--max-side``.

Parity: every image of every run is compared with the baseline's descriptor of the same image
(cosine). That is evidence only for a network with real weights (Lite0-GeM, ImageNet): a randomly
initialised one (ResNet50-GeM: no pretrained weights offline) gives nearly the same descriptor to
any image, so its rows are speed only, and the table shows the cosine between different images
next to the parity cosine so the two can be compared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from _common import BENCH_CACHE, markdown_table, measure, sample_paths, write_results
from _machine import usable_cores

from gemsearch.protocols import ItemOutcome, Outcome, WriteReport

MODELS: dict[str, tuple[str, str, bool]] = {  # name -> (backbone, pooling, pretrained weights offline)
    "lite0-gem": ("efficientnet_lite0", "gem", True),
    "resnet50-gem": ("resnet50", "gem", False),
}
MODES = ("single-scale", "multi-scale")
CPU_RUNNERS = ("torch", "onnx", "torch-1thread")  # the first is the baseline of the ratios
GPU_RUNNERS = (
    "torch-cuda-fp32", "torch-cuda-fp16",
    "onnx-cuda-fp32", "onnx-cuda-fp16", "onnx-trt-fp32", "onnx-trt-fp16",
)  # fmt: skip
TARGET_CPU, TARGET_GPU = 1.5, 3.0
PHOTO_SETS = ("samples", "wallpapers")


def image_paths(photos: str, n: int | None) -> list[Path]:
    """The first ``n`` images of the set (repeated if fewer; all of it when ``n`` is None)."""
    if photos == "wallpapers":
        from _real_photos import photo_paths, wallpapers

        return photo_paths(wallpapers(), n)
    paths, _ = sample_paths(n)
    return paths


def image_sizes(paths: Sequence[Path]) -> dict[str, int]:
    """How many of the distinct images have each size (``WxH``), largest first."""
    from PIL import Image

    sizes: dict[str, int] = {}
    for path in sorted(set(paths)):
        with Image.open(path) as im:
            key = f"{im.width}x{im.height}"
        sizes[key] = sizes.get(key, 0) + 1
    return dict(sorted(sizes.items(), key=lambda kv: -int(kv[0].split("x")[0]) * int(kv[0].split("x")[1])))


# ----------------------------------------------------------------------------- models


def scales_of(mode: str) -> tuple[float, ...]:
    from gemsearch.trainer import MULTISCALE

    return tuple(MULTISCALE) if mode == "multi-scale" else (1.0,)


def retrieval_model(name: str) -> Any:
    import torch

    from gemsearch.trainer import NetworkConfig, RetrievalModel, build_network

    backbone, pooling, pretrained = MODELS[name]
    torch.manual_seed(0)
    config = NetworkConfig(backbone=backbone, pooling=pooling)
    return RetrievalModel(build_network(config, pretrained=pretrained), config, origin=f"benchmark {name}")


def onnx_model(name: str, mode: str, max_side: int, precision: str = "fp32") -> Path:
    """The exported ONNX file of ``name`` for ``mode`` (exported once into the benchmark cache)."""
    from gemsearch.exporters import export_onnx

    path = BENCH_CACHE / "models" / f"{name}-{mode}-{max_side}-{precision}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"exporting {path.name} ...", file=sys.stderr, flush=True)
        scales = scales_of(mode)
        export_onnx(
            retrieval_model(name), path, name=name, scales=scales, multiscale_in_graph=len(scales) > 1,
            max_side=max_side, precision=precision,
        )  # fmt: skip
    return path


# ----------------------------------------------------------------------------- the two paths


class _Images:
    """cirtorch's ``ImagesFromList``: one image per item, loaded, shrunk and normalised."""

    def __init__(self, paths: Sequence[Path], cfg: Any) -> None:
        self.paths, self.cfg = list(paths), cfg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Any:
        import torch

        from gemsearch.preprocess import prepare_file

        return torch.from_numpy(prepare_file(self.paths[i], self.cfg))


def run_torch(name: str, mode: str, paths: Sequence[Path], workers: int, max_side: int, runner: str) -> Any:
    """The cirtorch loop over ``paths``; its usage covers images 2..n (the first one warms up)."""
    import torch
    from torch.utils.data import DataLoader

    from gemsearch.trainer.models.extraction import describe_batch

    device = "cuda" if "cuda" in runner else "cpu"
    if runner == "torch-1thread":  # one intra-op thread: no OpenMP oversubscription next to the workers
        torch.set_num_threads(1)
    dtype = torch.float16 if runner.endswith("fp16") else torch.float32
    model = retrieval_model(name)
    net = model.net.eval().to(device, dtype)
    cfg = model.config.preprocessing.model_copy(update={"max_side": max_side})
    dataset = _Images(paths, cfg)
    loader: DataLoader[Any] = DataLoader(
        cast(Any, dataset), batch_size=1, shuffle=False, num_workers=workers, pin_memory=device == "cuda"
    )
    scales = scales_of(mode)
    out = np.zeros((len(paths), net.output_dim), dtype=np.float32)
    with torch.inference_mode():
        batches = iter(loader)  # starts the worker processes
        first = next(batches)  # the workers are up: the clock starts after this image
        out[0] = describe_batch(net, first.to(device, dtype), scales).float().cpu().numpy()[0]  # warms
        _sync(device)
        with measure() as usage, _GpuSampler(device == "cuda") as gpu:
            for i, x in enumerate(batches, start=1):
                out[i] = describe_batch(net, x.to(device, dtype), scales).float().cpu().numpy()[0]
            _sync(device)
    return usage, out, gpu.utilisation


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class _KeepVectors:
    """A VectorStore that keeps the vectors in memory: ingest without any store cost."""

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    def ensure_index(self, manifest: Any, *, decode: str = "draft") -> None:
        pass

    def upsert(self, records: Sequence[Any]) -> None:
        self.vectors.update((r.id, r.vector) for r in records)

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        return set()

    def count(self, filters: Any = None) -> int:
        return 0 if filters else len(self.vectors)  # it keeps no metadata: no filter matches

    def ids_matching(self, filters: Any = None) -> Iterator[str]:
        return iter([] if filters else list(self.vectors))

    def get(self, doc_id: str) -> Any:
        return None

    def search(self, vector: Any, k: int = 10, filters: Any = None) -> list[Any]:
        return []

    def delete(self, ids: Iterable[str]) -> int:
        return 0

    # the rest of the store contract: nothing to report, refresh or close
    manifest = None
    dead_letter_path = None
    decode = None

    def write(self, records: Iterable[Any], *, refresh: bool | None = None) -> WriteReport:
        batch = list(records)
        self.upsert(batch)
        return WriteReport([ItemOutcome(r.id, Outcome.INDEXED, attempts=1) for r in batch], requests=1)

    def refresh(self) -> None:
        pass

    def known_fields(self, fields: Iterable[str]) -> set[str]:
        return set()  # it keeps no metadata

    def metadata_fields(self) -> dict[str, list[str]]:
        return {}  # it keeps no metadata

    def update_metadata(
        self, items: Sequence[tuple[str, Mapping[str, Any]]], *, refresh: bool | None = None
    ) -> int:
        return 0  # it keeps no metadata

    def bulk_load(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def close(self) -> None:
        pass

    def __enter__(self) -> _KeepVectors:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def onnx_providers(runner: str) -> list[str] | None:
    if "trt" in runner:
        return ["tensorrt", "cuda"]
    if "cuda" in runner:
        return ["cuda"]
    return ["cpu"]


def run_onnx(name: str, mode: str, paths: Sequence[Path], workers: int, max_side: int, runner: str) -> Any:
    from PIL import Image

    from gemsearch.plugin.embedding.embedder import OnnxEmbedder, bulk_parallel_runs
    from gemsearch.plugin.ingest.pipeline import IngestOptions, ingest
    from gemsearch.plugin.inputs.sources import SourceItem

    precision = "fp16" if runner.endswith("fp16") else "fp32"
    providers = onnx_providers(runner)
    embedder = OnnxEmbedder(  # as `gemsearch ingest --exact-decode` runs it: concurrent runs by default
        onnx_model(name, mode, max_side, precision),
        providers=providers,
        parallel_runs=bulk_parallel_runs(providers),
        decode="exact",  # the baseline's decode and shrink: parity checks the network, speed is like for like
    )
    with Image.open(paths[0]) as im:
        embedder.embed([im.convert("RGB")])  # warm: session allocations, TensorRT engine build
    store = _KeepVectors()
    items = [SourceItem(path=p, id=f"img-{i}") for i, p in enumerate(paths)]  # ids: repeats are not skipped
    with measure() as usage, _GpuSampler("onnx-" in runner and runner != "onnx") as gpu:
        report = ingest(items, embedder, store, IngestOptions(workers=workers))
    if report.embedded != len(paths):
        raise RuntimeError(f"ingest embedded {report.embedded} of {len(paths)}: {report.to_dict()}")
    out = np.stack([store.vectors[f"img-{i}"] for i in range(len(paths))])
    return usage, out, gpu.utilisation


class _GpuSampler:
    """Mean GPU utilisation (nvidia-smi, every 0.2 s) while the block runs; None on CPU."""

    def __init__(self, active: bool) -> None:
        self.active = active and shutil.which("nvidia-smi") is not None
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> _GpuSampler:
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.active:
            self._thread.join()

    def _loop(self) -> None:
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.wait(0.2):
            out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
            if out.isdigit():
                self.samples.append(float(out))

    @property
    def utilisation(self) -> float | None:
        return round(statistics.mean(self.samples) / 100, 3) if self.samples else None


# ----------------------------------------------------------------------------- cases


def timed_images(runner: str, n: int) -> int:
    """Images the clock covers: the PyTorch loop's first image warms up outside it."""
    return n - 1 if runner.startswith("torch") else n


def run_case(case: dict[str, Any], vectors_out: Path | None) -> dict[str, Any]:
    paths = image_paths(case.get("photos", "samples"), case["images"])
    if case["runner"].startswith("torch") and len(paths) < 2:
        raise SystemExit("the PyTorch loop needs at least 2 images (the first one warms up)")
    run = run_torch if case["runner"].startswith("torch") else run_onnx
    usage, vectors, gpu = run(
        case["model"], case["mode"], paths, case["workers"], case["max_side"], case["runner"]
    )
    if vectors_out is not None:
        np.save(vectors_out, vectors)  # every image: parity is checked on all of them
    measured: dict[str, Any] = usage.as_dict()
    if not case["runner"].startswith("torch"):  # threads, no worker processes (children are helpers)
        measured["child_peak_rss_mb"] = None
    timed = timed_images(case["runner"], len(paths))
    rate = round(timed / usage.wall_s, 3)
    return {**case, "timed_images": timed, "images_per_s": rate, **measured, "gpu_util": gpu}


def _spawn(case: dict[str, Any], vectors_out: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--case", json.dumps(case), "--vectors-out", str(vectors_out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {**case, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    runners = GPU_RUNNERS if args.device == "cuda" else CPU_RUNNERS
    tmp = Path(tempfile.mkdtemp(prefix="gemsearch-embed-"))
    rows = []
    try:
        for model in args.models:
            for mode in args.modes:
                runs: dict[str, list[dict[str, Any]]] = {r: [] for r in runners}
                for rep in range(args.repeats):  # alternate, so load changes hit both paths alike
                    for runner in runners:
                        case = {
                            "model": model, "mode": mode, "runner": runner, "photos": args.photos,
                            "images": args.images, "workers": args.workers, "max_side": args.max_side,
                        }  # fmt: skip
                        vectors = tmp / f"{model}-{mode}-{runner}-{rep}.npy"
                        runs[runner].append({**_spawn(case, vectors), "vectors": str(vectors)})
                        print(f"{model} {mode} {runner} #{rep + 1} done", file=sys.stderr, flush=True)
                rows.extend(summarise(runs, model, mode))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def parity(baseline: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]]) -> tuple[float, int] | None:
    """Lowest cosine between a run's descriptor and the baseline's of the same image, and how many
    descriptors were compared: every image of every repeat (each against the baseline run of its
    repeat, or the first one)."""
    base = [np.load(r["vectors"]) for r in baseline if "error" not in r and Path(r["vectors"]).is_file()]
    if not base:
        return None
    lowest, checked = 1.0, 0
    for i, r in enumerate(runs):
        if "error" in r or not Path(r["vectors"]).is_file():
            continue
        a, b = base[min(i, len(base) - 1)], np.load(r["vectors"])
        lowest = min(lowest, float(np.min(np.sum(a * b, axis=1))))
        checked += len(b)
    return (round(lowest, 5), checked) if checked else None


def between_images(vectors: np.ndarray, paths: Sequence[Path]) -> float:
    """Median cosine between the descriptors of different images: what parity must beat to mean anything."""
    first = {p: i for i, p in reversed(list(enumerate(paths)))}  # each distinct image once
    x = vectors[sorted(first.values())]
    cos = x @ x.T
    return round(float(np.median(cos[~np.eye(len(x), dtype=bool)])), 5) if len(x) > 1 else float("nan")


def summarise(runs: dict[str, list[dict[str, Any]]], model: str, mode: str) -> list[dict[str, Any]]:
    """One row per runner: median images/s of its repeats, every run's figure, parity on every image."""
    baseline_runner = next(iter(runs))
    evidence = MODELS[model][2]  # real weights: parity means something
    out = []
    for runner, results in runs.items():
        ok = [r for r in results if "error" not in r]
        if not ok:
            out.append({"model": model, "mode": mode, "runner": runner, "error": results[0]["error"]})
            continue
        median = statistics.median(r["images_per_s"] for r in ok)
        row = dict(min(ok, key=lambda r: abs(r["images_per_s"] - median)))  # its CPU and memory figures
        row.pop("vectors", None)
        row["images_per_s"] = round(median, 3)
        row["runs_images_per_s"] = [r["images_per_s"] for r in ok]
        row["runs_wall_s"] = [r["wall_s"] for r in ok]
        row["weights"] = "ImageNet" if evidence else "random (speed only)"
        checked = parity(runs[baseline_runner], results) if runner != baseline_runner else None
        if checked is not None:
            key = "min_cosine_vs_baseline" if evidence else "min_cosine_vs_baseline_speed_only"
            row[key], row["parity_images_checked"] = checked
        if runner == baseline_runner and Path(ok[0]["vectors"]).is_file():
            paths = image_paths(ok[0].get("photos", "samples"), ok[0]["images"])
            row["median_cosine_between_images"] = between_images(np.load(ok[0]["vectors"]), paths)
        out.append(row)
    base_rows = [r for r in out if r["runner"] == baseline_runner and "error" not in r]
    for r in out:
        if base_rows and "error" not in r:
            r["ratio_vs_baseline"] = round(r["images_per_s"] / base_rows[0]["images_per_s"], 3)
            r["median_cosine_between_images"] = base_rows[0].get("median_cosine_between_images")
    return out


def _parity_cell(r: dict[str, Any]) -> str:
    if r["runner"] == CPU_RUNNERS[0] or r["runner"] == GPU_RUNNERS[0]:
        return "(baseline)"
    if "min_cosine_vs_baseline" in r:
        return f"{r['min_cosine_vs_baseline']:.5f} ({r['parity_images_checked']} images)"
    return "speed only (random weights)" if r.get("weights", "").startswith("random") else "-"


def table(rows: list[dict[str, Any]]) -> str:
    out: list[list[Any]] = []
    for r in rows:
        if "error" in r:
            out.append([r["model"], r["mode"], r["runner"], *["-"] * 7, f"error: {r['error'][:100]}"])
            continue
        gpu = f", GPU {100 * r['gpu_util']:.0f}%" if r.get("gpu_util") is not None else ""
        between = r.get("median_cosine_between_images")
        out.append([
            r["model"], r["mode"], r["runner"], f"{r['images_per_s']:.2f}",
            " / ".join(f"{v:.2f}" for v in r["runs_images_per_s"]), f"{r['ratio_vs_baseline']:.2f}x",
            f"{100 * r['cpu_util']:.0f}%{gpu}", f"{r['peak_rss_mb']:,.0f}",
            "-" if r["child_peak_rss_mb"] is None else f"{r['child_peak_rss_mb']:,.0f}",
            _parity_cell(r), "-" if between is None else f"{between:.4f}",
        ])  # fmt: skip
    header = [
        "model", "mode", "path", "images/s (median)", "runs", "vs baseline", "CPU util", "peak RSS MB",
        "DataLoader worker peak MB", "min cos vs baseline (parity)", "median cos between images",
    ]  # fmt: skip
    return markdown_table(header, out)


def check_gpu() -> None:
    """Refuse ``--device cuda`` early, with the reason, on a machine without a usable GPU."""
    import onnxruntime as ort
    import torch

    providers = ort.get_available_providers()
    if not torch.cuda.is_available() and "CUDAExecutionProvider" not in providers:
        sys.exit(
            "--device cuda: no CUDA GPU here (torch.cuda.is_available() is False and onnxruntime offers "
            f"{providers}); run on a GPU machine with gemsearch[gpu] (onnxruntime-gpu) installed"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument(
        "--photos", choices=PHOTO_SETS, default="samples",
        help="samples: scikit-image's multi-view set (177-447 px); wallpapers: 30 Debian wallpapers "
        "(1280-5120 px)",
    )  # fmt: skip
    ap.add_argument(
        "--images", type=int, default=None,
        help="images per run (the set, repeated if needed; default: 32 samples, every wallpaper)",
    )  # fmt: skip
    ap.add_argument("--repeats", type=int, default=3, help="runs per path, alternating: median")
    ap.add_argument("--workers", type=int, default=usable_cores(), help="DataLoader workers / decode threads")
    ap.add_argument("--max-side", type=int, default=1024, help="longer image side (cirtorch's test size)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    ap.add_argument("--vectors-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case), args.vectors_out)))
        return
    if args.device == "cuda":
        check_gpu()
    if args.images is None:
        args.images = None if args.photos == "wallpapers" else 32
    paths = image_paths(args.photos, args.images)
    args.images = len(paths)
    t0 = time.perf_counter()
    rows = run_all(args)
    md = table(rows)
    target = TARGET_GPU if args.device == "cuda" else TARGET_CPU
    results = {
        "device": args.device, "photos": args.photos, "images": args.images,
        "image_sizes": image_sizes(paths), "workers": args.workers, "max_side": args.max_side,
        "repeats": args.repeats, "target_ratio": target, "results": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    suffix = "_photos" if args.photos == "wallpapers" else ""
    out = write_results(f"embed_throughput_{args.device}{suffix}", results, md, args.out_dir)
    print(md)
    print(f"\n(results in {out[0]})")


if __name__ == "__main__":
    main()
