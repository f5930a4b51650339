"""``gemsearch search``: query a LocalStore or OpenSearch with an image, a region of it, or a document id."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..plugin.query import SearchResult
    from ..protocols import VectorStore
from .options import (
    DEFAULT_STORE,
    exact_decode_option,
    exported_model_option,
    filter_option,
    opensearch_options,
    parse_crop,
    parse_filters,
    store_option,
    wants_opensearch,
)


def json_result(result: SearchResult) -> dict[str, Any]:
    """What ``--json`` prints (its fields are documented in docs/search.md and stay stable):
    ``model``, ``k``, ``hits`` (``rank`` from 1, ``id``, ``score`` to 4 decimals, ``image_ref``,
    ``metadata``) and ``timings`` in milliseconds (to 2 decimals)."""
    hits = [
        {
            "rank": rank,
            "id": hit.id,
            "score": round(hit.score, 4),
            "image_ref": hit.image_ref,
            "metadata": hit.metadata,
        }
        for rank, hit in enumerate(result.hits, 1)
    ]
    timings = {name: round(ms, 2) for name, ms in result.timings.model_dump().items()}
    return {"model": result.model, "k": result.k, "hits": hits, "timings": timings}


def _open_store(
    store_dir: Path | None, urls: Sequence[str], config_path: Path | None, prefix: str, model: str
) -> VectorStore:
    from ..plugin.stores.factory import LocalStoreSpec, OpenSearchStoreSpec, open_store

    if wants_opensearch(store_dir, urls, config_path):
        remote = OpenSearchStoreSpec(prefix=prefix, urls=tuple(urls) or None, config=config_path)
        return open_store(remote, model=model)
    return open_store(LocalStoreSpec(path=store_dir or DEFAULT_STORE), read_only=True)


@click.command(name="search")
@click.argument("image", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@exported_model_option(more="; the one the store was built with")
@click.option(
    "--crop",
    callback=parse_crop,
    help="Search for this region only: x,y,w,h in pixels of the full (upright) image.",
)
@click.option("-k", "k", default=10, show_default=True, help="Number of results.")
@filter_option(", applied inside the k-NN search")
@click.option("--id", "doc_id", help="Search with an indexed document instead of IMAGE (it is left out).")
@click.option("--expand", type=click.IntRange(1, 100), help="Alpha query expansion with the top N results.")
@click.option("--alpha", default=3.0, show_default=True, help="Alpha-QE weight exponent (similarity^alpha).")
@store_option("LocalStore folder to search.")
@opensearch_options("Search OpenSearch at this URL; queries go to the model's alias")
@exact_decode_option
@click.option("--json", "as_json", is_flag=True, help="Print the hits and timings as JSON.")
def search(
    image: Path | None,
    model_path: Path,
    crop: tuple[float, float, float, float] | None,
    k: int,
    filter_specs: Sequence[str],
    doc_id: str | None,
    expand: int | None,
    alpha: float,
    store_dir: Path | None,
    opensearch_urls: Sequence[str],
    opensearch_config: Path | None,
    prefix: str,
    exact_decode: bool,
    as_json: bool,
) -> None:
    """Find the indexed images most similar to IMAGE, or to a region of it (--crop).

    The region is cut from the full image before it is shrunk, as in evaluation, so an object keeps
    its scale. Filters restrict the candidates inside the k-NN search (not afterwards).

    \b
    Examples:
      gemsearch search query.jpg --model lite0-gem.onnx --store ./store
      gemsearch search query.jpg --model m.onnx --crop 120,40,300,200 -k 20 --filter camera=x100
      gemsearch search --id 3f2a...e1 --model m.onnx --opensearch https://search:9200 --json
    """
    from ..plugin.query import QueryExpansion, Searcher, open_model
    from .index import format_table  # with the store's client, not for --help

    if (image is None) == (doc_id is None):
        raise click.UsageError("give either IMAGE or --id")
    if doc_id is not None and crop is not None:
        raise click.UsageError("--crop applies to IMAGE, not to --id")
    filters = parse_filters(filter_specs)
    qe = QueryExpansion(n=expand, alpha=alpha) if expand else None
    embedder = open_model(model_path, decode="exact" if exact_decode else None)
    store = _open_store(store_dir, opensearch_urls, opensearch_config, prefix, embedder.manifest.name)
    try:
        searcher = Searcher(embedder, store)
        if doc_id is not None:
            result = searcher.search_by_id(doc_id, k, filters, qe)
        else:
            assert image is not None
            result = searcher.search(image, crop, k, filters, qe)
    finally:
        store.close()
    for field in result.unknown_filter_fields:
        click.echo(f"warning: no document has the field {field!r}; the filter matches nothing", err=True)
    for line in result.filter_warnings:
        click.echo(f"warning: {line}", err=True)
    if as_json:
        click.echo(json.dumps(json_result(result), indent=2))
        return
    if not result.hits:
        click.echo("no results")
        return
    rows = [
        [str(i), f"{h.score:.4f}", h.id, h.image_ref or "-", json.dumps(h.metadata, sort_keys=True)]
        for i, h in enumerate(result.hits, 1)
    ]
    click.echo(format_table(["#", "score", "id", "image", "metadata"], rows))
