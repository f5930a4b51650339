"""``gemsearch index``: list, create, swap-alias and drop the OpenSearch indices of gemsearch models.

Connection settings come from ``GEMSEARCH_OPENSEARCH_*`` variables or ``--opensearch-config FILE``;
``--opensearch`` only names nodes (credentials inside it are refused), so no secret lands in the process list.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from pydantic import ValidationError

from ..errors import ModelError
from ..models_cache import resolve_model
from ..plugin.stores.opensearch.connection import OpenSearchConfig, make_client
from .options import exact_decode_option, index_build_options, opensearch_options, renamed

if TYPE_CHECKING:  # the cluster client and the manifest load when a subcommand runs, not for --help
    from ..manifest import ModelManifest
    from ..plugin.stores.opensearch.index_admin import IndexOptions

F = TypeVar("F", bound=Callable[..., Any])


def connection_options(func: F) -> F:
    """The cluster options of every runtime command (--opensearch, --opensearch-config, --prefix; the
    old --url/--config still work, with a warning); the command gets a client and the prefix."""

    @opensearch_options("OpenSearch URL", legacy=True)
    @functools.wraps(func)
    def wrapper(
        opensearch_urls: Sequence[str], opensearch_config: Path | None, prefix: str, **kwargs: Any
    ) -> Any:
        config = OpenSearchConfig.load(opensearch_config, urls=list(opensearch_urls) or None)
        return func(client=make_client(config), prefix=prefix, **kwargs)

    return wrapper  # type: ignore[return-value]


opensearch_major_option = click.option(
    "--opensearch-major",
    type=click.IntRange(1, 9),
    default=2,
    show_default=True,
    help="Major version of the cluster (plans): 3.x derives the vector and keeps no doc-values copy.",
)


@click.group(name="index")
def index() -> None:
    """Manage OpenSearch k-NN indices: one index per model version, one alias per model.

    Queries use the alias; switching a model means building the new version's index, then moving
    the alias with `gemsearch index swap-alias` (atomic). Credentials come from
    GEMSEARCH_OPENSEARCH_USER/_PASSWORD/_CA_CERTS/_AWS_REGION or an --opensearch-config file.
    """


@index.command(name="list")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(client: Any, prefix: str, as_json: bool) -> None:
    """List the indices named <prefix>-*: model, version, dimension, engine, aliases, documents."""
    from ..plugin.stores.opensearch.index_admin import list_indices

    infos = list_indices(client, prefix)
    if as_json:
        click.echo(json.dumps([i.model_dump() for i in infos], indent=2))
        return
    if not infos:
        click.echo(f"no indices named {prefix}-*")
        return
    header = ["index", "aliases", "model", "version", "dims", "engine", "space", "docs", "health", "size"]
    rows = [
        [
            i.name,
            ",".join(i.aliases) or "-",
            i.model or "-",
            (i.version or "-")[:8],
            _cell(i.dims),
            _cell(i.engine),
            _cell(i.space_type),
            _cell(i.docs),
            _cell(i.health),
            _cell(i.size),
        ]
        for i in infos
    ]
    click.echo(format_table(header, rows))


@index.command(name="create")
@click.argument("model", metavar="MODEL")
@connection_options
@index_build_options
@renamed("--shards", "shards", "--index-shards", kind=click.IntRange(min=1))
@click.option("--alias/--no-alias", default=True, help="Create the model's alias if it does not exist yet.")
@exact_decode_option
@click.option(
    "--plan",
    "show_plan",
    is_flag=True,
    help="Print the sizing plan of this index for --docs vectors and create nothing.",
)
@click.option("--docs", type=click.IntRange(min=1), help="Vectors the index will hold (for --plan).")
@opensearch_major_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def create_command(
    client: Any, prefix: str, model: str, alias: bool, show_plan: bool, docs: int | None, as_json: bool,
    opensearch_major: int, **params: Any,
) -> None:  # fmt: skip
    """Create the index of a model version from its manifest: MODEL is an exported model (an .onnx
    file or the name of one in $GEMSEARCH_CACHE/models) or a .json manifest.

    An existing index is checked instead (dimension, engine, space type, k-NN setting, version).
    With --plan --docs N it prints memory, disk and shards for N vectors instead (see `index plan`).
    """
    # the index records how its images are decoded: ingest and search must then use the same mode
    from ..plugin.embedding.embedder import default_decode

    decode = "exact" if params.pop("exact_decode") else default_decode()
    options = _index_options(prefix, {**params, "decode": decode})
    manifest = load_manifest(model)
    if show_plan:
        if docs is None:
            raise click.UsageError("--plan needs --docs N (how many vectors the index will hold)")
        _print_plan(_sizing(docs, manifest.output_dim, options, opensearch_major), (), as_json)
        return
    from ..plugin.stores.opensearch.index_admin import ensure_index

    name = ensure_index(client, manifest, options, alias=alias)
    result = {"index": name, "alias": manifest.alias_name(prefix), "dims": manifest.output_dim}
    click.echo(json.dumps(result) if as_json else f"index {name} ready ({manifest.output_dim} dims)")


def _index_options(prefix: str, params: dict[str, Any]) -> IndexOptions:
    from ..plugin.stores.opensearch.index_admin import IndexOptions

    try:
        return IndexOptions(prefix=prefix, **params)
    except ValidationError as exc:
        raise click.UsageError(_first_problem(exc)) from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return str(error["msg"]).removeprefix("Value error, ")


def _sizing(docs: int, dims: int, options: IndexOptions, opensearch_major: int) -> Any:
    from ..plugin.stores.opensearch.sizing import SizingInput

    return SizingInput(
        docs=docs, dims=dims, replicas=options.replicas, engine=options.engine, encoder=options.encoder,
        m=options.m, vector_in_source=options.vector_in_source, opensearch_major=opensearch_major,
    )  # fmt: skip


def _print_plan(sizing: Any, measured: Sequence[Path], as_json: bool) -> None:
    from ..plugin.stores.opensearch import sizing as sz

    results = sz.load_measurements(measured) if measured else sz.packaged_measurements()
    plan = sz.plan(sizing, sz.closest_measured(sizing, results))
    click.echo(plan.model_dump_json(indent=2) if as_json else "\n".join(sz.describe(plan)))


@index.command(name="plan")
@click.option("--docs", type=click.IntRange(min=1), required=True, help="Vectors the index will hold.")
@click.option(
    "--dims",
    type=click.IntRange(1, 16000),
    default=1280,
    show_default=True,
    help="Vector dimension (1280: the default model, Lite0-GeM).",
)
@click.option("--replicas", type=click.IntRange(min=0), default=0, show_default=True, help="Replicas.")
@click.option(
    "--engine",
    type=click.Choice(["lucene", "faiss"]),
    default="lucene",
    show_default=True,
    help="k-NN engine.",
)
@click.option(
    "--encoder",
    type=click.Choice(["none", "sq", "byte", "binary"]),
    default="none",
    show_default=True,
    help="sq: lucene int7 / faiss fp16; byte: byte vectors; binary: faiss BQ.",
)
@click.option(
    "--bits",
    type=click.Choice(["1", "2", "4"]),
    default="1",
    show_default=True,
    help="Bits per dimension of the binary encoder.",
)
@click.option(
    "--hnsw-m",
    "--m",
    "m",
    type=click.IntRange(2, 512),
    default=16,
    show_default=True,
    help="HNSW links per node (m).",
)
@click.option(
    "--vector-in-source/--no-vector-in-source",
    default=True,
    show_default=True,
    help="Whether _source keeps the vector (disk estimate).",
)
@opensearch_major_option
@click.option(
    "--measured",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="Results of benchmarks/knn_scale.py (default: the reference runs shipped with gemsearch).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def plan_command(measured: tuple[Path, ...], as_json: bool, bits: str, **params: Any) -> None:
    """Size an index before building it: memory (graph + vectors), disk, primary shards, and the
    recall and latency measured for the closest configuration.

    Memory and disk are formulas (the k-NN plugin's documented estimate, 1.1 x (bytes per vector +
    8 x m) per vector); recall and latency are measurements, with the size they were measured at.
    """
    from ..plugin.stores.opensearch.sizing import SizingInput

    try:
        sizing = SizingInput(bits=int(bits), **params)
    except ValidationError as exc:
        raise click.UsageError(_first_problem(exc)) from None
    _print_plan(sizing, measured, as_json)


@index.command(name="swap-alias")
@click.argument("index_name", metavar="INDEX")
@connection_options
@click.option("--alias", "alias", default=None, help="Alias to move (default: the model's, from _meta).")
@click.option("--force", is_flag=True, help="Also onto an empty index, another model's, or a foreign one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def swap_alias_command(
    client: Any, prefix: str, index_name: str, alias: str | None, force: bool, as_json: bool
) -> None:
    """Point the model's alias at INDEX only, in one atomic _aliases request."""
    from ..plugin.stores.opensearch.index_admin import swap_alias

    swap = swap_alias(client, index_name, alias, force=force)
    if as_json:
        click.echo(swap.model_dump_json())
    else:
        click.echo(f"alias {swap.alias} -> {swap.index} (was: {', '.join(swap.previous) or 'none'})")


@index.command(name="drop")
@click.argument("index_name", metavar="INDEX")
@connection_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Also drop an index an alias still serves, or a foreign one.")
def drop_command(client: Any, prefix: str, index_name: str, yes: bool, force: bool) -> None:
    """Delete INDEX (refused while an alias serves it, unless --force)."""
    if not yes:
        click.confirm(f"Delete index {index_name} and every document in it?", abort=True)
    from ..plugin.stores.opensearch.index_admin import drop_index

    drop_index(client, index_name, force=force)
    click.echo(f"dropped {index_name}")


def load_manifest(model: str | Path) -> ModelManifest:
    """The manifest in a ``.json`` file, or embedded in an exported model (a path or a cached name;
    checked against its graph, so the index gets the dimension the model really gives)."""
    from ..manifest import ModelManifest
    from ..onnx_manifest import read_manifest

    path = Path(model)
    if path.suffix.lower() != ".json":
        return read_manifest(resolve_model(model))
    try:
        return ModelManifest.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read a model manifest from {path}: {exc}") from exc


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _cell(value: object) -> str:
    return "-" if value is None else str(value)
