"""``gemsearch ingest --executor ray``: the same command, run on Ray (gemsearch.plugin.ray)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..plugin.ingest.report import IngestReport

# options of the single-process pipeline that have no meaning on Ray
_LOCAL_ONLY = {
    "workers": "--workers",
    "parallel_runs": "--parallel-runs",
    "update_metadata": "--update-metadata",
}


def ingest_on_ray(
    sources: Sequence[str],
    model_path: Path,
    shard_spec: str | None,
    extensions: frozenset[str] | None,
    params: dict[str, Any],
    bar: Any,
) -> IngestReport:
    """Run the ingest on Ray with the command's options; ``bar`` counts inputs as they finish."""
    from ..plugin.ray.runtime import require_ray
    from .ingest import store_spec

    given = [flag for name, flag in _LOCAL_ONLY.items() if params[name]]
    if given:
        raise click.UsageError(f"{', '.join(given)}: not available with --executor ray")
    require_ray()  # the install hint before anything imports Ray's parts
    from ..plugin.ray.run import ingest_dataset

    spec, index, bulk = store_spec(params)
    return ingest_dataset(
        list(sources),
        model_path,
        spec,
        options=_options(params, index, bulk),
        shard=shard_spec,
        extensions=extensions,
        progress=bar.update,
    )


def _options(params: dict[str, Any], index: Any, bulk: Any) -> Any:
    from ..plugin.embedding.embedder import default_decode
    from ..plugin.inputs.images import ImageLoadConfig
    from ..plugin.ray.options import RayIngestOptions

    limits = {name: params[name] for name in ("max_pixels", "max_bytes") if params[name] is not None}
    providers = tuple(params["providers"].split(",")) if params["providers"] else None
    return RayIngestOptions(
        address=params["ray_address"],
        providers=providers,
        batch_size=params["batch_size"],
        write_batch=params["write_batch"],
        skip_existing=not params["no_skip_existing"],
        image=ImageLoadConfig(**limits),
        decode="exact" if params["exact_decode"] else default_decode(),
        ledger_path=params["ledger"],
        pause_refresh=params["pause_refresh"],
        index=index,
        bulk=bulk,
        **({"embed_threads": params["threads"]} if params["threads"] else {}),
    )
