"""GPU embedding: PyTorch eager vs onnxruntime's CUDA and TensorRT providers, fp32 and fp16, on real photos.

    python benchmarks/gpu_embed.py                 # every backend, Lite0-GeM, wallpapers at 1024 px
    python benchmarks/gpu_embed.py --backends torch-fp32 ort-cuda-fp32 --models lite0-gem resnet50-gem
    python benchmarks/gpu_embed.py --out /tmp/gpu.json          # default: $OUT/gpu_embed.json, else
                                                                # benchmarks/results/gpu/gpu_embed.json

The model alone, on the GPU: the photos (Debian's wallpapers, ``_real_photos.py``, 1280-5120 px) are
decoded and shrunk to ``--max-side`` once, before any clock starts, so the CPU's JPEG decoding does
not hide the GPU's speed (``embed_throughput.py --device cuda`` measures the whole ingest path).
Photos of one shrunk size form a bucket; the ``--max-shapes`` most common sizes are kept (TensorRT
builds one engine per input shape), and each bucket runs in batches of exactly ``--batch-size``
(the last batch of a bucket is filled with its first images again, so no new shape appears).

Backends: ``torch-fp32``/``torch-fp16`` (eager, the network cast to the dtype; the baseline is
``torch-fp32``); ``ort-cuda-fp32``/``ort-cuda-fp16`` (CUDA execution provider; fp16 runs the fp16
export, whose backbone is in half precision); ``ort-trt-fp32``/``ort-trt-fp16`` (TensorRT execution
provider over the fp32 export, fp16 kernels allowed in the fp16 case; engines cached in the
benchmark cache). Each backend warms up on every shape first (untimed, reported as ``warmup_s``),
then the backends alternate for ``--repeats`` timed passes over all batches; the median images/s is
reported, with GPU utilisation sampled by ``nvidia-smi``. Parity: every photo's descriptor is
compared with ``torch-fp32``'s (lowest cosine). On a machine without a CUDA device it stops at once
with the reason and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("torch-fp32", "torch-fp16", "ort-cuda-fp32", "ort-cuda-fp16", "ort-trt-fp32", "ort-trt-fp16")
NO_CUDA_EXIT = 3
Runner = Callable[[list[np.ndarray]], np.ndarray]


def cuda_problem() -> str | None:
    """Why this machine cannot run the benchmark, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install 'gemsearch[train]', with a CUDA build of torch)"
    if not torch.cuda.is_available():
        return f"no CUDA device: torch {torch.__version__} sees none (torch.cuda.is_available() is False)"
    return None


def out_path(given: Path | None) -> Path:
    if given is not None:
        return given
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_embed.json"
    return Path(__file__).resolve().parent / "results" / "gpu" / "gpu_embed.json"


# ----------------------------------------------------------------------------- inputs


def load_photos(paths: list[Path], max_side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each photo shrunk as cirtorch does: (uint8 CHW for the ONNX graph, normalised float32 CHW)."""
    from gemsearch.preprocess import load_rgb, shrink, to_array

    out = []
    for path in paths:
        img = shrink(load_rgb(path), max_side)
        pixels = np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
        out.append((pixels, to_array(img)))  # ImageNet's mean and std, as both networks were trained
    return out


def buckets(shapes: list[tuple[int, ...]], max_shapes: int, batch_size: int) -> list[list[int]]:
    """Batches of exactly ``batch_size`` indices of one shape, for the ``max_shapes`` commonest shapes."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(shape, []).append(i)
    kept = sorted(groups.values(), key=len, reverse=True)[:max_shapes]
    batches = []
    for idx in kept:
        size = -(-len(idx) // batch_size) * batch_size  # whole batches only: no new shape for TensorRT
        filled = (idx * (size // len(idx) + 1))[:size]
        batches += [filled[i : i + batch_size] for i in range(0, len(filled), batch_size)]
    return batches


# ----------------------------------------------------------------------------- backends


def torch_runner(model: str, mode: str, fp16: bool) -> Runner:
    import torch
    from embed_throughput import retrieval_model, scales_of

    from gemsearch.trainer.models.extraction import describe_batch

    dtype = torch.float16 if fp16 else torch.float32
    net = retrieval_model(model).net.eval().to("cuda", dtype)
    scales = scales_of(mode)

    def run(batch: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.stack(batch)).to("cuda", dtype, non_blocking=True)
            out: np.ndarray = describe_batch(net, x, scales).float().cpu().numpy()
        return out

    return run


def ort_runner(model: str, mode: str, max_side: int, provider: str, fp16: bool) -> Runner:
    import onnxruntime as ort
    from _common import BENCH_CACHE
    from embed_throughput import onnx_model

    if hasattr(ort, "preload_dlls"):  # CUDA and cuDNN from torch's pip packages (onnxruntime-gpu >= 1.21)
        ort.preload_dlls()

    if provider == "trt":
        cache = BENCH_CACHE / "trt-engines"
        cache.mkdir(parents=True, exist_ok=True)
        trt = {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
        providers: list[Any] = [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider"]
        path = onnx_model(model, mode, max_side, "fp32")
    else:
        providers = ["CUDAExecutionProvider"]
        path = onnx_model(model, mode, max_side, "fp16" if fp16 else "fp32")
    wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    if wanted not in ort.get_available_providers():
        raise RuntimeError(f"onnxruntime offers no {wanted} here ({ort.get_available_providers()})")
    session = ort.InferenceSession(str(path), providers=providers)
    if session.get_providers()[0] != wanted:
        raise RuntimeError(f"{wanted} did not load; the session runs on {session.get_providers()}")
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(batch: list[np.ndarray]) -> np.ndarray:
        out: np.ndarray = session.run([output], {name: np.stack(batch)})[0]
        return out.astype(np.float32)

    return run


def make_runner(backend: str, model: str, mode: str, max_side: int) -> tuple[Runner, bool]:
    """The backend's batch function, and whether it takes uint8 pixels (the ONNX graph normalises)."""
    fp16 = backend.endswith("fp16")
    if backend.startswith("torch"):
        return torch_runner(model, mode, fp16), False
    return ort_runner(model, mode, max_side, backend.split("-")[1], fp16), True


# ----------------------------------------------------------------------------- measurement


def timed_pass(run: Runner, inputs: list[np.ndarray], batches: list[list[int]]) -> tuple[float, np.ndarray]:
    """Seconds for one pass over every batch (the GPU finished), and each input's descriptor."""
    import torch

    out: dict[int, np.ndarray] = {}
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in batches:
        for i, vector in zip(batch, run([inputs[i] for i in batch]), strict=True):
            out[i] = vector
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return seconds, np.stack([out[i] for i in sorted(out)])


def measure_model(args: argparse.Namespace, model: str, photos: list[Any]) -> list[dict[str, Any]]:
    from embed_throughput import _GpuSampler

    shapes = [p[0].shape for p in photos]
    batches = buckets(shapes, args.max_shapes, args.batch_size)
    used = sorted({i for b in batches for i in b})
    n_timed = sum(len(b) for b in batches)
    runners: dict[str, tuple[Runner, bool]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for backend in args.backends:
        t0 = time.perf_counter()
        try:
            runners[backend] = make_runner(backend, model, args.mode, args.max_side)
            run, raw = runners[backend]
            timed_pass(run, [p[0] if raw else p[1] for p in photos], batches)  # warm: engines, kernels
        except Exception as exc:  # one backend missing (no TensorRT) must not stop the others
            runners.pop(backend, None)
            rows[backend] = {"backend": backend, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"{model} {backend}: {rows[backend]['error']}", file=sys.stderr, flush=True)
            continue
        rows[backend] = {"backend": backend, "warmup_s": round(time.perf_counter() - t0, 1), "runs": []}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.repeats):  # alternate, so a slow minute hits every backend alike
        for backend, (run, raw) in runners.items():
            with _GpuSampler(True) as gpu:
                seconds, vectors[backend] = timed_pass(run, [p[0] if raw else p[1] for p in photos], batches)
            rows[backend]["runs"].append({"seconds": round(seconds, 4), "gpu_util": gpu.utilisation})
    base = vectors.get("torch-fp32")
    out = []
    for backend, row in rows.items():
        if "error" not in row:
            rates = [n_timed / r["seconds"] for r in row["runs"]]
            row["images_per_s"] = round(statistics.median(rates), 1)
            row["runs_images_per_s"] = [round(r, 1) for r in rates]
            if base is not None:
                row["min_cosine_vs_torch_fp32"] = round(float(np.min(np.sum(base * vectors[backend], 1))), 5)
        sizes = sorted({"x".join(map(str, shapes[b[0]][1:])) for b in batches})
        out.append({
            "model": model, "mode": args.mode, "photos_used": len(used), "images_per_pass": n_timed,
            "shapes": sizes, **row,
        })  # fmt: skip
    baseline = rows.get("torch-fp32", {}).get("images_per_s")
    for row in out:
        if baseline and "images_per_s" in row:
            row["ratio_vs_torch_fp32"] = round(row["images_per_s"] / baseline, 3)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | backend | images/s (median) | runs | vs torch fp32 | GPU util | min cos vs torch fp32 "
        "| warm-up s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['backend']} | - | - | - | - | - | error: {r['error'][:80]} |")
            continue
        utils = [u["gpu_util"] for u in r["runs"] if u["gpu_util"] is not None]
        util = f"{100 * statistics.mean(utils):.0f}%" if utils else "-"
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['images_per_s']} "
            f"| {' / '.join(map(str, r['runs_images_per_s']))} "
            f"| {r.get('ratio_vs_torch_fp32', '-')}x | {util} | {r.get('min_cosine_vs_torch_fp32', '-')} "
            f"| {r['warmup_s']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ap.add_argument("--models", nargs="+", choices=["lite0-gem", "resnet50-gem"], default=["lite0-gem"])
    ap.add_argument("--mode", choices=["single-scale", "multi-scale"], default="single-scale")
    ap.add_argument(
        "--photos", type=Path, default=None, help="a folder of JPEGs (default: Debian's wallpapers)"
    )
    ap.add_argument(
        "--max-side", type=int, default=1024, help="longer side the model sees (cirtorch's test size)"
    )
    ap.add_argument("--batch-size", type=int, default=8, help="images per batch, all of one size")
    ap.add_argument(
        "--max-shapes", type=int, default=2, help="most common input sizes kept (TensorRT engines)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per backend, alternating: median")
    ap.add_argument("--out", type=Path, default=None, help="results JSON (a .md table beside it)")
    args = ap.parse_args(argv)
    problem = cuda_problem()
    if problem is not None:
        print(f"gpu_embed: {problem}; nothing measured", file=sys.stderr)
        return NO_CUDA_EXIT
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _machine import describe
    from _real_photos import photo_paths, wallpapers

    paths = photo_paths(args.photos or wallpapers(), None)
    photos = load_photos(paths, args.max_side)
    t0 = time.perf_counter()
    rows = [row for model in args.models for row in measure_model(args, model, photos)]
    results = {
        "benchmark": "gpu_embed", "machine": describe(), "photos": str(args.photos or "wallpapers"),
        "photos_found": len(paths), "max_side": args.max_side, "batch_size": args.batch_size,
        "max_shapes": args.max_shapes, "repeats": args.repeats, "mode": args.mode, "results": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    path = out_path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md = table(rows)
    path.with_suffix(".md").write_text(f"### gpu_embed\n\n{md}\n")
    print(md)
    print(f"\n(results in {path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
