"""Connecting to Ray: the extra's install hint, a local Ray or an existing cluster, quiet Ray Data."""

from __future__ import annotations

import logging
from types import ModuleType

from ..._deps import require
from ...errors import GemsearchError

log = logging.getLogger(__name__)


class RayRunError(GemsearchError):
    """The Ray run failed in a way Ray's retries and restarts did not mend."""


def require_ray() -> ModuleType:
    """The ``ray`` module, or a MissingDependencyError naming the extra (``gemsearch[ray]``)."""
    for module in ("ray.data", "pyarrow"):  # the extra's parts the stages import
        require(module, "ray", "ray[data]")
    return require("ray", "ray", "ray[data]")


def connect(address: str | None, *, num_cpus: int | None = None) -> ModuleType:
    """Ray, initialised: ``address`` is ``auto`` (the cluster this machine belongs to) or
    ``ray://host:10001`` (Ray Client); None starts Ray on this machine (or reuses the Ray this
    process already joined)."""
    ray = require_ray()
    if not ray.is_initialized():
        kwargs: dict[str, object] = {"address": address, "log_to_driver": False}
        if address is None and num_cpus is not None:
            kwargs["num_cpus"] = num_cpus
        ray.init(**kwargs)
        log.info("Ray: %s", ray.cluster_resources())
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows its own bar; Ray's would interleave with it
    return ray


def cluster_gpus(ray: ModuleType) -> int:
    """GPUs the connected cluster has, in all."""
    return int(ray.cluster_resources().get("GPU", 0))
