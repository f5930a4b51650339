"""The machine a benchmark ran on: CPU model, cores, memory, load, GPU, library versions.

Numbers from a shared or busy machine are not comparable with a quiet one, so the load average at
the start of the run travels with every result file.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LIBRARIES = (
    "gemsearch",
    "numpy",
    "pillow",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnx",
    "torch",
    "torchvision",
    "opensearch-py",
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def usable_cores() -> int:
    """Cores this process may run on (cgroup/affinity limits included where Linux says so)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def onnx_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def gpus() -> list[str]:
    """GPU names as ``nvidia-smi`` reports them; empty without an NVIDIA driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def describe() -> dict[str, Any]:
    """Everything needed to say which machine and software a number came from."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gb": memory_gb(),
        "load_average_1_5_15": [round(x, 2) for x in load],
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "onnxruntime_providers": onnx_providers(),
        "gpus": gpus(),
    }


def one_line(machine: dict[str, Any]) -> str:
    """``AMD EPYC, 2 cores, 23 GB, load 1.2`` for table captions."""
    load = machine.get("load_average_1_5_15") or [0.0]
    gpu = f", GPU {machine['gpus'][0]}" if machine.get("gpus") else ""
    return (
        f"{machine['cpu']}, {machine['usable_cores']} cores, {machine['memory_gb']} GB RAM{gpu}, "
        f"load average {load[0]} at start, {machine['date_utc']}"
    )


if __name__ == "__main__":
    import json

    print(json.dumps(describe(), indent=2))
