"""``gemsearch serve``: the HTTP search API and the demo page over LocalStores or OpenSearch."""

from __future__ import annotations

import errno
import logging
import os
import socket
from pathlib import Path
from typing import Any

import click

from .._deps import require
from ..errors import ConfigError
from .options import exact_decode_option, exported_model_option, opensearch_options, wants_opensearch

log = logging.getLogger(__name__)


def build_config(flags: dict[str, Any], limits: dict[str, Any]) -> Any:
    """A ServeConfig from ``--config`` or from the flags (one ``--store`` per ``--model``, or OpenSearch)."""
    from ..plugin.query import resolve_model
    from ..plugin.web.config import Limits, LocalStoreSpec, ModelSpec, OpenSearchStoreSpec, ServeConfig

    config_path, model_paths, stores = flags["config_path"], flags["model_paths"], flags["stores"]
    opensearch_urls, opensearch_config = flags["opensearch_urls"], flags["opensearch_config"]
    prefix, image_roots, title_field = flags["prefix"], flags["image_roots"], flags["title_field"]
    given = {k: v for k, v in limits.items() if v is not None}
    embed_api = _embed_api(flags)
    if config_path is not None:
        if model_paths or stores or opensearch_urls:
            raise click.UsageError("give either --config or --model/--store/--opensearch, not both")
        config = ServeConfig.load(config_path)
        if image_roots:
            config = config.model_copy(update={"image_roots": tuple(p.resolve() for p in image_roots)})
        if given:
            config = config.model_copy(update={"limits": config.limits.model_copy(update=given)})
        if title_field:
            config = _with_title_field(config, title_field)
        if embed_api is not None:
            config = config.model_copy(update={"embed_api": embed_api})
        return config
    if not model_paths:
        raise click.UsageError("give --model (with --store or --opensearch) or --config")
    use_opensearch = wants_opensearch(Path(stores[0]) if stores else None, opensearch_urls, opensearch_config)
    if not use_opensearch and len(stores) != len(model_paths):
        raise click.UsageError("give one --store per --model, in the same order (or --opensearch)")
    models = []
    for i, path in enumerate(model_paths):
        store: LocalStoreSpec | OpenSearchStoreSpec
        if use_opensearch:
            urls = tuple(opensearch_urls) or None
            store = OpenSearchStoreSpec(prefix=prefix, urls=urls, config=opensearch_config)
        else:
            store = LocalStoreSpec(path=Path(stores[i]).resolve())
        models.append(ModelSpec(path=resolve_model(path).resolve(), store=store))
    try:
        return ServeConfig(
            models=tuple(models),
            image_roots=tuple(p.resolve() for p in image_roots),
            limits=Limits(**given),
            title_field=title_field,
            embed_api=embed_api,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid serve settings: {exc}") from exc


def check_port(host: str, port: int) -> None:
    """ConfigError, in one line, when ``host:port`` cannot be listened on (taken, say)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} is in use: pass --port") from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def store_warnings(registry: Any) -> list[str]:
    """One line per model whose store does not answer now (the cluster is down, its index is
    missing); the server starts anyway and answers those searches with 503 or 404."""
    from ..errors import StoreError

    lines = []
    for slot in registry:
        try:
            slot.searcher.store.count()
        except StoreError as exc:
            lines.append(f"model {slot.name}: {str(exc).splitlines()[0]} (serving anyway)")
    return lines


def _with_title_field(config: Any, title_field: str) -> Any:
    """``config`` with ``--title-field`` in place of its file's ``title_field``, checked as the file's is."""
    try:
        type(config)(models=config.models, title_field=title_field)
    except ValueError as exc:
        raise ConfigError(f"invalid --title-field {title_field!r}: a dotted metadata field name") from exc
    return config.model_copy(update={"title_field": title_field})


def _embed_api(flags: dict[str, Any]) -> Any:
    """The embed API's settings from --embed-api, --embed-token-file and --embed-url-prefix (None:
    none of them given)."""
    from ..plugin.web.embed_config import EmbedApiConfig

    token_file, prefixes = flags.pop("embed_token_file", None), flags.pop("embed_url_prefixes", ())
    if not (flags.pop("embed_api", False) or token_file or prefixes):
        return None
    try:
        return EmbedApiConfig(token_file=token_file, url_prefixes=tuple(prefixes))
    except ValueError as exc:
        raise ConfigError(f"invalid embed API settings: {exc}") from exc


@click.command(name="serve")
@exported_model_option(multiple=True, required=False, more="; repeat for several (the first is the default)")
@click.option(
    "--store", "stores", multiple=True, help="LocalStore folder of the --model in the same position."
)
@opensearch_options("Serve every model from OpenSearch at this URL; queries use each model's alias")
@click.option(
    "--images",
    "image_roots",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder the stored images may be served from (repeatable); without it results show no images.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML/JSON serve config (models, stores, image_roots, limits) instead of the flags above.",
)
@click.option(
    "--title-field",
    help="Metadata field results are titled by on the page (dotted for nested); default: the file name.",
)
@click.option(
    "--embed-api",
    is_flag=True,
    help="Serve POST /api/embed for machines (an OpenSearch cluster's ml-commons connector), with the "
    "bearer token in $GEMSEARCH_EMBED_TOKEN. See docs/ml-commons.md.",
)
@click.option(
    "--embed-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File whose first line is the embed API's bearer token (turns the API on).",
)
@click.option(
    "--embed-url-prefix", "embed_url_prefixes", multiple=True,
    help="URL prefix the embed API may fetch images from (repeatable; default: base64 images only).",
)  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, help="Port to listen on.")
@click.option("--max-upload-mb", type=float, help="Largest uploaded image in MiB (default 16).")
@click.option("--max-pixels", type=int, help="Largest uploaded image in pixels (default 40M).")
@click.option("--max-k", type=int, help="Most results per search (default 100).")
@click.option(
    "--rate", "searches_per_minute", type=float, help="Searches per minute per client (default 120)."
)
@exact_decode_option
def serve(
    host: str,
    port: int,
    max_upload_mb: float | None,
    max_pixels: int | None,
    max_k: int | None,
    searches_per_minute: float | None,
    exact_decode: bool,
    **flags: Any,
) -> None:
    """Serve the search API and the demo page (needs `pip install 'gemsearch[web]'`).

    The page uploads an image, crops a region with aspect presets, picks the model and the number
    of results, filters by metadata, and shows the ranked images (titled by --title-field, else the
    file name). The API: POST /api/search, GET /api/models, GET /api/fields,
    GET /api/images/{id}, GET /healthz; its OpenAPI schema is at /openapi.json. The browser only
    talks to this server, never to OpenSearch.

    \b
    Examples:
      gemsearch serve --model lite0-gem.onnx --store ./store --images photos/
      gemsearch serve --model a.onnx --model b.onnx --opensearch https://search:9200 --images /data
      gemsearch serve --config serve.yaml --host 0.0.0.0 --port 8080
    """
    uvicorn = require("uvicorn", "web")
    check_port(host, port)  # before minutes of loading models, not after
    from ..plugin.inputs.memory import limit_arenas

    limit_arenas()  # before the model's and the server's threads start
    if exact_decode:  # the server's embedders take their decode mode from the environment
        from ..plugin.embedding.embedder import DECODE_ENV

        os.environ[DECODE_ENV] = "exact"
    from ..plugin.inputs.images import ImageLoadConfig
    from ..plugin.web.app import create_app
    from ..plugin.web.registry import ModelRegistry

    limits = {
        "max_upload_bytes": int(max_upload_mb * 2**20) if max_upload_mb else None,
        "max_pixels": max_pixels,
        "max_k": max_k,
        "searches_per_minute": searches_per_minute,
    }
    config = build_config(flags, limits)
    registry = ModelRegistry.from_config(config, ImageLoadConfig())  # create_app sets the upload limits
    for line in store_warnings(registry):
        click.echo(f"warning: {line}", err=True)
    app = create_app(config, registry)
    click.echo(f"gemsearch serving {len(config.models)} model(s) on http://{host}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False)
