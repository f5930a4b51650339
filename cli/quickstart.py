"""``gemsearch quickstart``: the whole product on the embedded default, in one command.

Exports (or reuses) the default model, builds a small collection of real photos with transformed
copies, ingests it into a LocalStore, and answers one crop-and-search query, printing the ranking.
All of it, the default model's file included, runs on the base install: no torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from ..preprocess import Box
from .options import exported_model_option

DEFAULT_DIR = Path("gemsearch-quickstart")


def default_model_path() -> Path:
    """The default model file, built on first use (without torch) and reused afterwards."""
    from ..default_model import ensure_default_model

    return ensure_default_model()


def write_collection_manifest(sample_set: Any, path: Path) -> tuple[int, int]:
    """A JSONL manifest of every image of the sample set except the queries, with the photo and the
    transform of each view as metadata (index fields that filters can use). Returns (images, photos)."""
    queries = set(sample_set.queries)
    photos = set()
    with path.open("w", encoding="utf-8") as out:
        for i, image in enumerate(sample_set.images):
            if i in queries:
                continue
            photos.add(image.source)
            row = {"path": image.path, "photo": image.source, "transform": image.transform}
            out.write(json.dumps(row) + "\n")
    return len(sample_set.images) - len(queries), len(photos)


def central_box(width: int, height: int, fraction: float = 0.6) -> Box:
    """The central ``fraction`` of an image, as the region a user would crop."""
    dx, dy = width * (1 - fraction) / 2, height * (1 - fraction) / 2
    return (dx, dy, width - dx, height - dy)


@click.command(name="quickstart")
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Where the sample collection and the LocalStore go (reused when run again).",
)
@exported_model_option(required=False, more=". Default: EfficientNet-Lite0 + GeM, built on first use")
@click.option("-k", "k", default=5, show_default=True, help="Results to show.")
@click.option("--views", default=8, show_default=True, help="Transformed copies made of each photo.")
def quickstart(workdir: Path, model_path: Path | None, k: int, views: int) -> None:
    """Run the whole pipeline on the embedded default, no cluster needed.

    1. the model: EfficientNet-Lite0 (ImageNet weights) + GeM, built as ONNX once (no torch) and cached;
    2. a sample collection: real photos shipped by scikit-image, each with transformed copies
       (crops, scale, rotation, perspective, colour, JPEG quality), so there is something to find;
    3. ingest into a LocalStore folder;
    4. one crop-and-search: a query photo's central region, ranked against the collection.
    """
    from ..plugin.embedding.embedder import OnnxEmbedder
    from ..plugin.ingest.pipeline import ingest
    from ..plugin.inputs.sources import iter_sources
    from ..plugin.query import Searcher
    from ..plugin.stores.local.store import LocalStore
    from ..samples import build_multiview_set

    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    click.echo("1/4 model")
    path = model_path or default_model_path()
    embedder = OnnxEmbedder(path)
    m = embedder.manifest
    click.echo(f"    {m.name}@{m.version8}: {m.backbone} + {m.pooling.kind}, {m.output_dim} dims, {path}")

    click.echo("2/4 sample collection")
    sample_set = build_multiview_set(workdir / "samples", views_per_image=views)
    manifest = workdir / "collection.jsonl"
    n, photos = write_collection_manifest(sample_set, sample_set.root / manifest.name)
    click.echo(f"    {n} images: {photos} photos and their transformed copies, in {sample_set.root}")

    click.echo("3/4 ingest into a LocalStore")
    store_dir = workdir / f"store-{m.name}-{m.version8}"
    with LocalStore(store_dir) as store:
        report = ingest(iter_sources([str(sample_set.root / manifest.name)]), embedder, store)
        click.echo("    " + report.summary().replace("\n", "\n    "))
        click.echo(f"    store: {store_dir} ({store.count()} documents)")

        click.echo("4/4 crop-and-search")
        query_index = sample_set.queries[0]
        query_path = sample_set.path(query_index)
        query = sample_set.images[query_index]
        box = central_box(query.width, query.height)
        result = Searcher(embedder, store).search(query_path, crop=box, k=k)
    click.echo(f"    query: {query_path} (a view of {query.source!r}), crop {_xywh(box)} (x,y,w,h)")
    click.echo(f"    {'rank':>4}  {'score':>6}  {'same photo':<10}  image")
    same = 0
    for rank, hit in enumerate(result.hits, start=1):
        hit_photo = hit.metadata.get("photo")
        match = hit_photo == query.source
        same += match
        click.echo(f"    {rank:>4}  {hit.score:6.3f}  {'yes' if match else 'no':<10}  {hit.image_ref}")
    t = result.timings
    click.echo(
        f"    {same} of the top {len(result.hits)} are views of the query's photo; decode "
        f"{t.decode_ms:.0f} ms, embed {t.embed_ms:.0f} ms, search {t.knn_ms:.0f} ms"
    )
    click.echo(f"done in {time.perf_counter() - started:.0f} s. Next:")
    click.echo(f"    gemsearch search {query_path} --model {path} --store {store_dir} --crop {_xywh(box)}")
    click.echo(f"    gemsearch serve --model {path} --store {store_dir} --images {sample_set.root}")


def _xywh(box: Box) -> str:
    x1, y1, x2, y2 = box
    return f"{x1:.0f},{y1:.0f},{x2 - x1:.0f},{y2 - y1:.0f}"
