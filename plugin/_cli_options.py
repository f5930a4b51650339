"""Click options shared by the runtime's commands (ingest, search, serve)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from .stores.factory import DEFAULT_STORE

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
