"""benchmarks/gpu_embed.py: its help, its refusal without a GPU, and on a GPU a small real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_embed.py"


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=900,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_help_names_every_backend_and_where_results_go() -> None:
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    for backend in (
        "torch-fp32",
        "torch-fp16",
        "ort-cuda-fp32",
        "ort-cuda-fp16",
        "ort-trt-fp32",
        "ort-trt-fp16",
    ):
        assert backend in proc.stdout
    assert "--max-shapes" in proc.stdout and "$OUT/gpu_embed.json" in proc.stdout


@pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA device")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path: Path) -> None:
    proc = _run(env={"OUT": str(tmp_path)})
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        line for line in proc.stderr.strip().splitlines() if line.startswith("gpu_embed: ")
    ]  # one line, no traceback
    assert "no CUDA device" in proc.stderr and "nothing measured" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_batches_are_whole_and_of_one_shape() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from gpu_embed import buckets
    finally:
        sys.path.remove(str(SCRIPT.parent))
    shapes = [(3, 640, 1024)] * 5 + [(3, 576, 1024)] * 3 + [(3, 768, 1024)]
    batches = buckets(shapes, max_shapes=2, batch_size=4)
    assert all(len(b) == 4 for b in batches)
    assert all(len({shapes[i] for i in b}) == 1 for b in batches)
    assert sorted({i for b in batches for i in b}) == list(range(8))  # the rarest shape is left out
    assert len(batches) == 3  # 5 images -> 2 batches (3 filled in again), 3 -> 1 batch


@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")
def test_gpu_run_writes_rates_and_parity(tmp_path: Path) -> None:
    from support.ingest_helpers import photo

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        photo(name).save(photos / f"{name}.jpg", quality=95)
    out = tmp_path / "gpu.json"
    proc = _run(
        "--photos", str(photos), "--backends", "torch-fp32", "torch-fp16", "ort-cuda-fp32",
        "--max-side", "256", "--batch-size", "2", "--repeats", "2", "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["backend"]: r for r in json.loads(out.read_text())["results"]}
    for backend in ("torch-fp32", "torch-fp16", "ort-cuda-fp32"):
        assert "error" not in rows[backend], rows[backend]
        assert len(rows[backend]["runs_images_per_s"]) == 2 and rows[backend]["images_per_s"] > 0
    assert rows["ort-cuda-fp32"]["min_cosine_vs_torch_fp32"] >= 0.999
    assert rows["torch-fp16"]["min_cosine_vs_torch_fp32"] >= 0.99
    assert out.with_suffix(".md").is_file()
