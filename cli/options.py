"""The click options every command shares: one definition and one help text per option.

Runtime commands (ingest, search, serve, index) share the store and cluster options; the trainer's
(describe, evaluate) share the checkpoint and extraction options; crops parse the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from ..errors import ConfigError
from ..plugin.query_checks import parse_crop as query_crop
from ..plugin.stores.factory import DEFAULT_STORE
from ..preprocess import MULTISCALE as MULTISCALE

__all__ = ["DEFAULT_STORE", "opensearch_options", "wants_opensearch"]

F = TypeVar("F", bound=Callable[..., Any])


def wants_opensearch(store_dir: Path | None, urls: Sequence[str], config_path: Path | None) -> bool:
    """Whether the command's store is OpenSearch (``--opensearch``/``--opensearch-config``) rather
    than a LocalStore; both at once is a usage error."""
    remote = bool(urls) or config_path is not None
    if remote and store_dir is not None:
        raise click.UsageError("give either --store or --opensearch, not both")
    return remote


def opensearch_options(what: str) -> Callable[[F], F]:
    """``--opensearch URL`` (repeatable), ``--opensearch-config FILE`` and ``--prefix``; ``what`` says
    what the command does with the cluster, e.g. "Write into OpenSearch at this URL"."""

    def decorate(func: F) -> F:
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
            help=f"{what} (repeat for more nodes). Credentials and TLS come from "
            "$GEMSEARCH_OPENSEARCH_* or --opensearch-config, never the URL.",
        )(func)

    return decorate


def parse_crop(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    """``--crop x,y,w,h`` as PIL's / cirtorch's box ``(x1, y1, x2, y2)``: the query API's parser."""
    if value is None:
        return None
    try:
        return query_crop(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def parse_scales(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[float, ...]:
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
