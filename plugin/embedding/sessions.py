"""Opening an exported model with onnxruntime for inference: execution providers and threads.

Its manifest is read with ``gemsearch.onnx_manifest`` (onnxruntime only, shared with the exporter).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import ModelError
from ...onnx_manifest import read_manifest as read_manifest  # re-exported: the runtime's reader

log = logging.getLogger(__name__)

# Preferred order when the caller does not choose: the fastest provider this onnxruntime build has.
PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def _ort() -> Any:
    import onnxruntime  # a base dependency; imported here so `gemsearch --help` stays light

    onnxruntime.set_default_logger_severity(3)  # ORT's own warnings (e.g. unused initialisers) are noise
    return onnxruntime


def resolve_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Execution providers to use: ``requested`` (full names or cpu/cuda/tensorrt), or the best ones
    available in the order TensorRT, CUDA, CPU. CPU is always last, as the fallback."""
    available = list(_ort().get_available_providers())
    if not requested:
        chosen = [p for p in PROVIDER_PREFERENCE if p in available]
    else:
        chosen = [_PROVIDER_ALIASES.get(p.lower(), p) for p in requested]
        missing = [p for p in chosen if p not in available]
        if missing:
            raise ModelError(
                f"execution provider(s) {missing} are not available in this onnxruntime build "
                f"(available: {available}); install gemsearch[gpu] for CUDA/TensorRT"
            )
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def default_threads() -> int:
    """Intra-op threads: the CPUs this process may use (cgroup/affinity aware), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def open_session(
    path: str | os.PathLike[str], providers: Sequence[str] | None = None, threads: int | None = None
) -> Any:
    """An ``onnxruntime.InferenceSession`` for the model at ``path``, or ``ModelError``."""
    ort = _ort()
    file = Path(path)
    if not file.is_file():
        raise ModelError(f"{file}: no such model file")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    # Photos come in many shapes: a memory pattern is planned and kept per input shape, each a block
    # for the whole run, which only grows the arena; without it tensors come from the arena one by
    # one and are reused across shapes. The arena itself stays: without it every run page-faults
    # its activations afresh (~40% more CPU per image on Lite0, measured).
    chosen = resolve_providers(providers)
    options.enable_mem_pattern = chosen[0] != "CPUExecutionProvider"
    try:
        return ort.InferenceSession(str(file), sess_options=options, providers=chosen)
    except ModelError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ModelError(f"{file}: onnxruntime cannot load this model ({exc})") from exc
