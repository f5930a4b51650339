"""``gemsearch ingest``: embed image collections and load them into a LocalStore or OpenSearch."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ConfigError
from ..plugin.stores.factory import LocalStoreSpec, OpenSearchStoreSpec, open_store
from .options import (
    DEFAULT_STORE,
    exact_decode_option,
    exported_model_option,
    index_build_options,
    opensearch_options,
    store_option,
    wants_opensearch,
)

if TYPE_CHECKING:  # the pipeline loads when a run starts, not for --help
    from ..plugin.ingest.pipeline import IngestOptions
    from ..plugin.ingest.report import IngestReport
    from ..protocols import VectorStore


@click.command(name="ingest")
@click.argument("sources", nargs=-1, required=True)
@exported_model_option(more="; its manifest sets preprocessing and dims")
@store_option("LocalStore folder to write into (the embedded default; created if missing).")
@opensearch_options("Write into OpenSearch at this URL instead of a LocalStore")
@index_build_options
@click.option("--shard", "shard_spec", help="Only this part of the input, e.g. 2/8 (workers 0/8..7/8).")
@click.option("--batch-size", default=8, show_default=True, help="Most same-size images per model run.")
@click.option("--workers", type=int, help="Read/decode threads. Default: the CPUs available.")
@click.option("--threads", type=int, help="onnxruntime threads in all. Default: the CPUs available.")
@click.option(
    "--parallel-runs",
    type=click.IntRange(1, 64),
    help="Images embedded at once, sharing --threads. Default: one per 2 CPUs (2 on 2 CPUs), 1 on a GPU.",
)
@click.option(
    "--providers",
    help="Comma-separated onnxruntime providers (cpu, cuda, tensorrt). Default: the best present.",
)
@exact_decode_option
@click.option("--write-batch", default=256, show_default=True, help="Documents per store write.")
@click.option("--max-pixels", type=int, help="Refuse images with more pixels (decompression bombs).")
@click.option("--max-bytes", type=int, help="Refuse files larger than this many bytes.")
@click.option(
    "--extensions",
    help="Comma-separated file extensions taken from folders (default: common image types; '*' for all).",
)
@click.option(
    "--ledger", type=click.Path(dir_okay=False, path_type=Path), help="JSONL file: each input's fate."
)
@click.option(
    "--dead-letter",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL file for documents OpenSearch rejects. Default: ./gemsearch-dead-letter.jsonl.",
)
@click.option("--no-skip-existing", is_flag=True, help="Re-embed ids already in the store (overwrites).")
@click.option(
    "--update-metadata",
    is_flag=True,
    help="For ids already in the store, write the manifest row's metadata fields onto the stored "
    "document (new columns added, changed values replaced) without decoding or embedding.",
)
@click.option(
    "--pause-refresh",
    is_flag=True,
    help="OpenSearch: turn periodic refreshes off during the load and restore them after (faster bulk "
    "loads; only when this is the index's one writer).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this process (threads). ray: a Ray cluster (pip install 'gemsearch[ray]'; docs/ray.md).",
)
@click.option(
    "--ray-address", help="With --executor ray: auto or ray://HEAD:10001. Default: Ray on this machine."
)
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when on a terminal).")
def ingest(
    sources: Sequence[str],
    model_path: Path,
    shard_spec: str | None,
    as_json: bool,
    progress: bool | None,
    **params: Any,
) -> None:
    """Embed the images of SOURCES and write them into a store.

    SOURCES are folders (searched recursively; symlinks leaving the folder are not followed),
    .jsonl/.csv manifests (a `path` column, optional `id`, other columns become metadata fields),
    .txt lists of paths, or - for paths on stdin.

    Document ids are the sha256 of the image bytes unless a manifest gives them, and ids already in
    the store are skipped: rerunning an interrupted ingest resumes it, and ingesting again is a
    no-op (with --update-metadata, it writes the manifest's metadata onto the stored documents).
    Use --shard I/N to split one collection among N workers without coordination.

    The progress bar counts inputs embedded (or ended without embedding: skipped, failed);
    written=N is how many of them the store has acknowledged.

    The exit code is 0 when every input was indexed or skipped, 1 when some failed or were
    rejected (see the summary, --ledger and the dead-letter file), 2 for usage errors (a missing or
    bad option, e.g. an --opensearch URL without its scheme).

    \b
    Examples:
      gemsearch ingest photos/ --model lite0-gem --store ./store
      gemsearch ingest list.jsonl --model m.onnx --opensearch https://search:9200 --shard 0/4
    """
    from tqdm import tqdm

    from ..plugin.inputs.sources import DEFAULT_IMAGE_EXTENSIONS, parse_shard, read_sources

    if params["update_metadata"] and params["no_skip_existing"]:
        raise click.UsageError("--update-metadata and --no-skip-existing exclude each other")
    if params["executor"] == "ray" or params["ray_address"]:
        _on_ray(sources, model_path, shard_spec, as_json, progress, params)
        return
    store = _store(params)  # usage errors (both stores) before the model loads
    shard = parse_shard(shard_spec) if shard_spec else None
    exts = _extensions(params["extensions"], DEFAULT_IMAGE_EXTENSIONS)
    embedder = _embedder(model_path, params)
    # the same reader as the run, so bad rows and skipped entries count as the inputs they are
    total = None if "-" in sources else sum(1 for _ in read_sources(sources, shard, exts))
    show = sys.stderr.isatty() if progress is None else progress
    click.echo(
        f"model {embedder.manifest.name}@{embedder.manifest.version8} on {embedder.providers[0]}", err=True
    )
    bar = tqdm(total=total, unit="img", disable=not show, smoothing=0.1, dynamic_ncols=True)
    with store, bar:
        report = _run(read_sources(sources, shard, exts), embedder, store, _options(params), bar)
    _print(report, as_json)
    if not report.ok:
        sys.exit(1)


def _on_ray(
    sources: Sequence[str],
    model_path: Path,
    shard: str | None,
    as_json: bool,
    progress: bool | None,
    params: dict[str, Any],
) -> None:
    from tqdm import tqdm

    from ..plugin.inputs.sources import DEFAULT_IMAGE_EXTENSIONS
    from .ingest_ray import ingest_on_ray

    if params["executor"] != "ray":
        raise click.UsageError("--ray-address needs --executor ray")
    exts = _extensions(params["extensions"], DEFAULT_IMAGE_EXTENSIONS)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(unit="img", disable=not show, smoothing=0.1, dynamic_ncols=True) as bar:
        report = ingest_on_ray(sources, model_path, shard, exts, params, bar)
    _print(report, as_json)
    if not report.ok:
        sys.exit(1)


def _embedder(model_path: Path, params: dict[str, Any]) -> Any:
    from ..plugin.embedding.embedder import OnnxEmbedder, bulk_parallel_runs

    providers = params["providers"].split(",") if params["providers"] else None
    return OnnxEmbedder(
        model_path,
        providers=providers,
        threads=params["threads"],
        batch_size=params["batch_size"],
        parallel_runs=params["parallel_runs"] or bulk_parallel_runs(providers),
        decode="exact" if params["exact_decode"] else None,
    )


def _store(params: dict[str, Any]) -> VectorStore:
    spec, index, bulk = store_spec(params)
    return open_store(spec, index=index, bulk=bulk)


def store_spec(params: dict[str, Any]) -> tuple[LocalStoreSpec | OpenSearchStoreSpec, Any, Any]:
    """The store the options name: its spec, and for OpenSearch the index and bulk options."""
    from ..plugin.stores.opensearch.bulk import BulkOptions
    from ..plugin.stores.opensearch.index_admin import IndexOptions

    urls, config = params["opensearch_urls"], params["opensearch_config"]
    if not wants_opensearch(params["store_dir"], urls, config):
        return LocalStoreSpec(path=params["store_dir"] or DEFAULT_STORE), None, None
    spec = OpenSearchStoreSpec(prefix=params["prefix"], urls=tuple(urls) or None, config=config)
    names = (
        "engine", "space_type", "m", "ef_construction", "ef_search", "shards", "replicas", "encoder",
        "refresh_interval", "vector_in_source",
    )  # fmt: skip
    index = IndexOptions(**{name: params[name] for name in names})
    dead = params["dead_letter"] or Path("gemsearch-dead-letter.jsonl")
    return spec, index, BulkOptions(dead_letter_path=dead.absolute())


def _options(params: dict[str, Any]) -> IngestOptions:
    from ..plugin.ingest.pipeline import IngestOptions
    from ..plugin.inputs.images import ImageLoadConfig

    limits = {name: params[name] for name in ("max_pixels", "max_bytes") if params[name] is not None}
    return IngestOptions(
        **({"workers": params["workers"]} if params["workers"] else {}),
        write_batch=params["write_batch"],
        skip_existing=not params["no_skip_existing"],
        image=ImageLoadConfig(**limits),
        ledger_path=params["ledger"],
        pause_refresh=params["pause_refresh"],
        update_metadata=params["update_metadata"],
    )


def _run(items: Iterable[Any], embedder: Any, store: Any, options: IngestOptions, bar: Any) -> IngestReport:
    from ..plugin.ingest.pipeline import ingest as run_ingest

    with _sigterm_as_interrupt():
        return run_ingest(items, embedder, store, options, progress=bar.update, written=_WrittenPostfix(bar))


class _WrittenPostfix:
    """Shows the store's acknowledgements as the bar's ``written=N`` (from the writer thread; the
    bar is redrawn at most every ``every_s``, and once more when it closes)."""

    def __init__(self, bar: Any, every_s: float = 0.5) -> None:
        self.bar, self.every_s = bar, every_s
        self.count = 0
        self._shown = 0.0
        self._lock = threading.Lock()

    def __call__(self, n: int) -> None:
        with self._lock:
            self.count += n
            now = time.monotonic()
            redraw = now - self._shown >= self.every_s
            if redraw:
                self._shown = now
            self.bar.set_postfix(written=self.count, refresh=redraw)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler stopping the job) unwinds like Ctrl-C, so the ledger gets its pending
    lines and the store its clean close instead of the process vanishing mid-batch."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _print(report: IngestReport, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.summary())


def _extensions(text: str | None, default: frozenset[str]) -> frozenset[str] | None:
    if text is None:
        return default
    if text.strip() == "*":
        return None
    exts = frozenset("." + e.strip().lower().lstrip(".") for e in text.split(",") if e.strip())
    if not exts:
        raise ConfigError("--extensions is empty")
    return exts
