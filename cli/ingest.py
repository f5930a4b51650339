"""``gemsearch ingest``: embed image collections and load them into a LocalStore or OpenSearch."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from ..errors import ConfigError
from ..plugin.ingest.pipeline import IngestOptions, read_sources
from ..plugin.ingest.pipeline import ingest as run_ingest
from ..plugin.ingest.report import IngestReport
from ..plugin.stores.factory import LocalStoreSpec, OpenSearchStoreSpec, open_store
from ..protocols import VectorStore
from .options import DEFAULT_STORE, opensearch_options, wants_opensearch


@click.command(name="ingest")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Exported model (.onnx from `gemsearch export onnx`); its manifest sets preprocessing and dims.",
)
@click.option(
    "--store",
    "store_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help=f"LocalStore folder (the embedded default; created if missing). Default: ./{DEFAULT_STORE}.",
)
@opensearch_options("Write into OpenSearch at this URL instead of a LocalStore")
@click.option(
    "--engine",
    type=click.Choice(["lucene", "faiss"]),
    default="lucene",
    show_default=True,
    help="k-NN engine.",
)
@click.option("--hnsw-m", default=16, show_default=True, help="HNSW graph degree (m).")
@click.option("--ef-construction", default=128, show_default=True, help="HNSW ef_construction.")
@click.option("--replicas", default=0, show_default=True, help="Replicas of a new index.")
@click.option("--index-shards", default=1, show_default=True, help="Primary shards of a new index.")
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
    "--pause-refresh",
    is_flag=True,
    help="OpenSearch: turn periodic refreshes off during the load and restore them after (faster bulk "
    "loads; only when this is the index's one writer).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when on a terminal).")
def ingest(
    sources: Sequence[str],
    model_path: Path,
    store_dir: Path | None,
    opensearch_urls: Sequence[str],
    opensearch_config: Path | None,
    prefix: str,
    engine: str,
    hnsw_m: int,
    ef_construction: int,
    replicas: int,
    index_shards: int,
    shard_spec: str | None,
    batch_size: int,
    workers: int | None,
    threads: int | None,
    parallel_runs: int | None,
    providers: str | None,
    write_batch: int,
    max_pixels: int | None,
    max_bytes: int | None,
    extensions: str | None,
    ledger: Path | None,
    dead_letter: Path | None,
    no_skip_existing: bool,
    pause_refresh: bool,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Embed the images of SOURCES and write them into a store.

    SOURCES are folders (searched recursively; symlinks leaving the folder are not followed),
    .jsonl/.csv manifests (a `path` column, optional `id`, other columns become metadata fields),
    .txt lists of paths, or - for paths on stdin.

    Document ids are the sha256 of the image bytes unless a manifest gives them, and ids already in
    the store are skipped: rerunning an interrupted ingest resumes it, and ingesting again is a
    no-op. Use --shard I/N to split one collection among N workers without coordination.

    The exit code is 0 when every input was indexed or skipped, 1 when some failed or were
    rejected (see the summary, --ledger and the dead-letter file), 2 for usage errors.

    \b
    Examples:
      gemsearch ingest photos/ --model lite0-gem.onnx --store ./store
      gemsearch ingest list.jsonl --model m.onnx --opensearch https://search:9200 --shard 0/4
    """
    from ..plugin.embedding.embedder import OnnxEmbedder, bulk_parallel_runs
    from ..plugin.inputs.images import ImageLoadConfig
    from ..plugin.inputs.sources import DEFAULT_IMAGE_EXTENSIONS, parse_shard

    use_opensearch = wants_opensearch(store_dir, opensearch_urls, opensearch_config)
    shard = parse_shard(shard_spec) if shard_spec else None
    exts = _extensions(extensions, DEFAULT_IMAGE_EXTENSIONS)
    limits = {"max_pixels": max_pixels, "max_bytes": max_bytes}
    image_cfg = ImageLoadConfig(**{k: v for k, v in limits.items() if v is not None})
    provider_list = providers.split(",") if providers else None
    embedder = OnnxEmbedder(
        model_path,
        providers=provider_list,
        threads=threads,
        batch_size=batch_size,
        parallel_runs=parallel_runs or bulk_parallel_runs(provider_list),
    )
    if use_opensearch:
        index = {"engine": engine, "m": hnsw_m, "ef_construction": ef_construction}
        sizes = {"replicas": replicas, "shards": index_shards}
        store = _opensearch_store(opensearch_urls, opensearch_config, prefix, {**index, **sizes}, dead_letter)
    else:
        store = open_store(LocalStoreSpec(path=store_dir or DEFAULT_STORE))
    options = IngestOptions(
        **({"workers": workers} if workers else {}),
        write_batch=write_batch,
        skip_existing=not no_skip_existing,
        image=image_cfg,
        ledger_path=ledger,
        pause_refresh=pause_refresh,
    )
    # the same reader as the run, so bad rows and skipped entries count as the inputs they are
    total = None if "-" in sources else sum(1 for _ in read_sources(sources, shard, exts))
    show = sys.stderr.isatty() if progress is None else progress
    click.echo(
        f"model {embedder.manifest.name}@{embedder.manifest.version8} on {embedder.providers[0]}", err=True
    )
    with store:
        report = _run(sources, shard, exts, embedder, store, options, total, show)
    _print(report, as_json)
    if not report.ok:
        sys.exit(1)


def _run(
    sources: Sequence[str],
    shard: Any,
    exts: frozenset[str] | None,
    embedder: Any,
    store: Any,
    options: IngestOptions,
    total: int | None,
    show: bool,
) -> IngestReport:
    from tqdm import tqdm

    with (
        _sigterm_as_interrupt(),
        tqdm(total=total, unit="img", disable=not show, smoothing=0.1, dynamic_ncols=True) as bar,
    ):
        items = read_sources(sources, shard, exts)
        return run_ingest(items, embedder, store, options, progress=bar.update)


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


def _opensearch_store(
    urls: Sequence[str],
    config_path: Path | None,
    prefix: str,
    index: dict[str, Any],
    dead_letter: Path | None,
) -> VectorStore:
    from ..plugin.stores.opensearch.bulk import BulkOptions
    from ..plugin.stores.opensearch.index_admin import IndexOptions

    spec = OpenSearchStoreSpec(prefix=prefix, urls=tuple(urls) or None, config=config_path)
    dead = BulkOptions(dead_letter_path=dead_letter or Path("gemsearch-dead-letter.jsonl"))
    return open_store(spec, index=IndexOptions(**index), bulk=dead)
