"""Scale-out ingest on Ray Data: the same ids, vectors and ledger as ``ingest``, on a Ray cluster.

Ray is an optional extra (``pip install 'gemsearch[ray]'``); nothing here imports it until a run
starts, so the base install never needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..._lazy import lazy_exports

if TYPE_CHECKING:
    from .options import RayIngestOptions
    from .run import ingest_dataset

_EXPORTS = {
    "options": ("RayIngestOptions",),
    "run": ("ingest_dataset",),
}
__all__ = ["RayIngestOptions", "ingest_dataset"]
_lazy = lazy_exports(__name__, _EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS["run"]:  # without the extra: one error naming it, not pyarrow's ImportError
        from .runtime import require_ray

        require_ray()
    return _lazy(name)
