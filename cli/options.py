"""The click options every command shares: one definition and one help text per option.

Runtime commands (ingest, search, serve, index) share the store and cluster options; the trainer's
(describe, evaluate) share the checkpoint and extraction options; crops parse the same everywhere.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from ..errors import ConfigError
from ..models_cache import resolve_model
from ..plugin.stores.factory import DEFAULT_STORE

__all__ = [
    "DEFAULT_STORE",
    "exact_decode_option",
    "exported_model_option",
    "filter_option",
    "index_build_options",
    "opensearch_options",
    "parse_filters",
    "renamed",
    "store_option",
    "wants_opensearch",
]

F = TypeVar("F", bound=Callable[..., Any])


# the variables that name a cluster; either one makes OpenSearch the store of a command given no --store
CLUSTER_VARIABLES = ("GEMSEARCH_OPENSEARCH_URL", "GEMSEARCH_OPENSEARCH_CONFIG")


def wants_opensearch(store_dir: Path | None, urls: Sequence[str], config_path: Path | None) -> bool:
    """Whether the command's store is OpenSearch rather than a LocalStore: ``--opensearch`` or
    ``--opensearch-config``, else ``$GEMSEARCH_OPENSEARCH_URL``/``_CONFIG`` unless ``--store`` is
    given (the flag wins over the variables); ``--store`` with an OpenSearch flag is a usage error."""
    remote = bool(urls) or config_path is not None
    if remote and store_dir is not None:
        raise click.UsageError("give either --store or --opensearch, not both")
    if store_dir is not None:
        return False
    return remote or any(os.environ.get(name, "").strip() for name in CLUSTER_VARIABLES)


def store_option(help_text: str) -> Callable[[F], F]:
    """``--store DIR``: a LocalStore folder; ``help_text`` says what the command does with it."""
    return click.option(
        "--store", "store_dir", type=click.Path(file_okay=False, path_type=Path),
        help=f"{help_text} Default: ./{DEFAULT_STORE}, unless --opensearch, --opensearch-config, "
        "$GEMSEARCH_OPENSEARCH_URL or $GEMSEARCH_OPENSEARCH_CONFIG names a cluster (--store wins over "
        "the variables).",
    )  # fmt: skip


def opensearch_options(what: str, *, legacy: bool = False) -> Callable[[F], F]:
    """``--opensearch URL`` (repeatable), ``--opensearch-config FILE`` and ``--prefix``; ``what`` says
    what the command does with the cluster, e.g. "Write into OpenSearch at this URL". ``legacy``
    also takes ``gemsearch index``'s old spellings ``--url``/``--config``, with a warning."""

    def decorate(func: F) -> F:
        if legacy:
            func = renamed("--url", "opensearch_urls", "--opensearch", multiple=True)(func)
            func = renamed("--config", "opensearch_config", "--opensearch-config", path=True)(func)
        func = click.option(
            "--prefix", default="gemsearch", show_default=True, help="OpenSearch index name prefix."
        )(func)
        func = click.option(
            "--opensearch-config",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="YAML/JSON connection file (URLs, user, password, CA bundle, AWS region).",
        )(func)
        return click.option(
            "--opensearch",
            "opensearch_urls",
            multiple=True,
            callback=check_urls,
            help=f"{what} (repeat or comma-separate for more nodes). Default: $GEMSEARCH_OPENSEARCH_URL "
            "(when no --store is given). Credentials and TLS come from $GEMSEARCH_OPENSEARCH_* or "
            "--opensearch-config, never the URL.",
        )(func)

    return decorate


def check_urls(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """``--opensearch`` values as the nodes' URLs (comma-separated ones split), each checked as the
    connection settings check them: a URL without a scheme is a usage error, not a cluster's."""
    if not value:
        return value
    from pydantic import ValidationError

    from ..plugin.stores.opensearch.connection import OpenSearchConfig

    try:
        return OpenSearchConfig.model_validate({"urls": value}).urls
    except ValidationError as exc:
        raise click.BadParameter(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None


def filter_option(where: str) -> Callable[[F], F]:
    """``--filter`` (repeatable), the metadata filter of ``search``, ``count`` and ``delete``; parse
    the values with ``parse_filters``. ``where`` says how the command applies it."""
    return click.option(
        "--filter", "filter_specs", multiple=True,
        help=f"Metadata filter{where}: field=value, field>=2020, field<5; repeatable (all must match, "
        "a repeated field=value matches any of its values).",
    )  # fmt: skip


_OPS = ((">=", "gte"), ("<=", "lte"), (">", "gt"), ("<", "lt"), ("=", None))


def parse_filters(specs: Sequence[str]) -> dict[str, Any] | None:
    """``field=value``, ``field>=value`` (also ``<=``, ``>``, ``<``) -> the store's filter object.

    Values are JSON where they parse as a number, ``true``/``false`` or a quoted string, else plain
    text; repeating ``field=`` gives any-of, range operators on one field combine.
    """
    from ..plugin.query_checks import check_filters  # numpy: when a command runs, not for --help

    out: dict[str, Any] = {}
    for spec in specs:
        field, op, raw = _split(spec)
        value = _value(raw)
        if op is None:
            old = out.get(field)
            if isinstance(old, dict):
                raise ConfigError(f"filter {spec!r}: {field} already has a range condition")
            out[field] = value if old is None else [*(old if isinstance(old, list) else [old]), value]
        else:
            old = out.setdefault(field, {})
            if not isinstance(old, dict):
                raise ConfigError(f"filter {spec!r}: {field} already has an equality condition")
            old[op] = value
    return check_filters(out)


def _split(spec: str) -> tuple[str, str | None, str]:
    for symbol, op in _OPS:
        field, sep, raw = spec.partition(symbol)
        if sep and field.strip() and not any(c in field for c in "<>="):
            return field.strip(), op, raw.strip()
    raise ConfigError(f"filter {spec!r} must look like field=value, field>=value, field<value, ...")


def _value(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, (str, int, float, bool)) else raw


def renamed(
    old: str, dest: str, new: str, *, multiple: bool = False, path: bool = False, kind: Any = None
) -> Callable[[F], F]:
    """A hidden ``old`` spelling of option ``new`` that still works for one release, with a warning
    on stderr; its values join ``dest``'s."""
    if kind is None:
        kind = click.Path(exists=True, dir_okay=False, path_type=Path) if path else click.STRING

    def moved(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value in (None, ()):
            return
        click.echo(
            f"warning: {old} is deprecated, use {new} (the old spelling goes in the next release)", err=True
        )
        ctx.meta.setdefault("gemsearch.renamed", {})[dest] = value

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = click.get_current_context()
            value = ctx.meta.get("gemsearch.renamed", {}).pop(dest, None)
            if isinstance(value, tuple):
                kwargs[dest] = (*(kwargs.get(dest) or ()), *value)
            elif value is not None and ctx.get_parameter_source(dest) in (None, ParameterSource.DEFAULT):
                kwargs[dest] = value  # the new spelling, if given too, wins
            return func(*args, **kwargs)

        option = click.option(  # a name of its own: sharing dest's would merge the two options
            old, f"renamed_{old.lstrip('-').replace('-', '_')}", multiple=multiple, type=kind, hidden=True,
            expose_value=False, callback=moved,
        )  # fmt: skip
        return option(wrapper)  # type: ignore[return-value]

    return decorate


def exported_model_option(
    *, multiple: bool = False, required: bool = True, more: str = ""
) -> Callable[[F], F]:
    """``--model``: an exported model, as a path to its .onnx file or the name of one in the models
    cache (``lite0-gem``); the command gets the file's path."""

    def resolve(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        # a ModelError, like every library error, becomes the CLI's one-line error (exit 1)
        if multiple:
            return tuple(resolve_model(v) for v in value)
        return None if value is None else resolve_model(value)

    return click.option(
        "--model",
        "model_path" if not multiple else "model_paths",
        required=required,
        multiple=multiple,
        callback=resolve,
        help=f"Exported model: an .onnx file or the name of one in {MODELS_HELP} (e.g. lite0-gem){more}.",
    )


MODELS_HELP = "$GEMSEARCH_CACHE/models"


def exact_decode_option(func: F) -> F:
    """``--exact-decode``: decode JPEGs in full (cirtorch's preprocessing bit for bit) instead of the
    default draft decoding; the command gets ``exact_decode``."""
    return click.option(
        "--exact-decode",
        is_flag=True,
        help="Decode every JPEG pixel before shrinking, as cirtorch does (bit for bit; slower, more "
        "memory). Default: let the JPEG decoder scale down first (descriptors within a hair of exact). "
        "A store records the mode it was built with; ingest and search must use the same one.",
    )(func)


def index_build_options(func: F) -> F:
    """How a new OpenSearch index is built: --engine, --space-type, --hnsw-m, --ef-construction,
    --ef-search, --index-shards, --replicas, --encoder, --refresh-interval, --[no-]vector-in-source
    (an existing index is checked, not changed)."""
    options = (
        click.option("--engine", type=click.Choice(["lucene", "faiss"]), default="lucene", show_default=True,
                     help="k-NN engine."),
        click.option("--space-type", type=click.Choice(["innerproduct", "cosinesimil", "l2"]),
                     default="innerproduct", show_default=True, help="k-NN space."),
        click.option("--hnsw-m", "m", type=click.IntRange(2, 512), default=16, show_default=True,
                     help="HNSW links per node (m)."),
        click.option("--ef-construction", type=click.IntRange(min=2), default=128, show_default=True,
                     help="HNSW ef_construction."),
        click.option("--ef-search", type=click.IntRange(min=1), default=100, show_default=True,
                     help="HNSW ef_search."),
        click.option("--index-shards", "shards", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Primary shards of a new index."),
        click.option("--replicas", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Replicas of a new index."),
        click.option("--encoder", type=click.Choice(["none", "sq", "binary"]), default="none",
                     show_default=True, help="Quantisation inside OpenSearch: sq = lucene int7 / faiss "
                     "fp16 (less memory, a little recall); binary = faiss 1-bit (faiss only)."),
        click.option("--refresh-interval", default="1s", show_default=True,
                     help="index.refresh_interval of a new index (-1: none; ingest --pause-refresh turns "
                     "it off during a load only)."),
        click.option("--vector-in-source/--no-vector-in-source", default=True, show_default=True,
                     help="Keep the vector in the stored _source; --no-vector-in-source derives it on "
                     "read instead (k-NN 2.19+), which cuts the index size on disk several-fold."),
    )  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def parse_crop(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[float, float, float, float] | None:
    """``--crop x,y,w,h`` as PIL's / cirtorch's box ``(x1, y1, x2, y2)``: the query API's parser."""
    from ..plugin.query_checks import parse_crop as query_crop

    if value is None:
        return None
    try:
        return query_crop(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_scales(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[float, ...]:
    from ..preprocess import MULTISCALE

    if value == "ms":
        return MULTISCALE
    try:
        scales = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected comma-separated numbers, e.g. 1,0.7071,0.5, or 'ms'") from None
    if not scales or min(scales) <= 0:
        raise click.BadParameter("scales must be positive")
    return scales


model_option = click.option(
    "--model",
    "model_spec",
    required=True,
    help="A checkpoint (gemsearch's or cirtorch's), a released cirtorch network name, or "
    "BACKBONE-POOLING for an off-the-shelf ImageNet network, e.g. efficientnet_lite0-gem.",
)

_EXTRACTION_OPTIONS = (
    click.option("--max-side", type=click.IntRange(min=1), help="Longer image side (default: the model's)."),
    click.option(
        "--scales",
        default="1",
        show_default=True,
        callback=parse_scales,
        help="Comma-separated scales, e.g. 1,0.7071,0.5; 'ms' is 1,1/sqrt(2),1/2.",
    ),
    click.option("--lw", help="Dataset of the learned whitening to use, for checkpoints with several."),
    click.option("--no-whiten", is_flag=True, help="Skip the model's learned (post-hoc) whitening."),
    click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1, ..."),
    click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True),
)


def extraction_options(command: F) -> F:
    """--max-side, --scales, --lw, --no-whiten, --device, --batch-size (in that order in --help)."""
    for option in reversed(_EXTRACTION_OPTIONS):
        command = option(command)
    return command
