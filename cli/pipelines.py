"""``gemsearch opensearch pipelines``: make a gemsearch model callable by an OpenSearch cluster
(ml-commons connector, remote model, ingest and search pipelines), or remove it again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .options import exact_decode_option, exported_model_option, index_build_options, opensearch_options

TOKEN_HELP = (
    "File whose first line is the bearer token of gemsearch serve's embed API. "
    "Default: $GEMSEARCH_EMBED_TOKEN."
)


@click.group(name="opensearch")
def opensearch() -> None:
    """Work with an OpenSearch cluster beyond its indices (see also `gemsearch index`)."""


@opensearch.group(name="pipelines")
def pipelines() -> None:
    """Let the cluster embed images itself, through `gemsearch serve`'s embed API (ml-commons).

    `create` registers a connector, a model group and a remote model, and creates an ingest pipeline
    (an image field -> the model's vector field) and a search pipeline (an image in a search ->
    a k-NN query). Any OpenSearch client can then index with `_bulk?pipeline=...` and search with
    `?search_pipeline=...`. Needs the ml-commons plugin on the cluster.
    """


def _client(opensearch_urls: tuple[str, ...], opensearch_config: Path | None) -> tuple[Any, str]:
    from ..plugin.stores.opensearch.connection import OpenSearchConfig, make_client

    config = OpenSearchConfig.load(opensearch_config, urls=list(opensearch_urls) or None)
    return make_client(config), config.urls[0]


@pipelines.command(name="create")
@exported_model_option()
@opensearch_options("Register the model with the OpenSearch cluster at this URL")
@click.option(
    "--endpoint", required=True,
    help="URL of `gemsearch serve` (started with its embed API) as the cluster's nodes reach it, "
    "e.g. http://embedder:8000; its /api/embed is called.",
)  # fmt: skip
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help=TOKEN_HELP)
@click.option("--image-field", default="image", show_default=True, help="Document field holding the image.")
@click.option(
    "--image-input", type=click.Choice(["base64", "url"]), default="base64", show_default=True,
    help="What the image field holds: the file's bytes as base64, or a URL the server may fetch "
    "(see url_prefixes of serve's embed_api).",
)  # fmt: skip
@click.option("--update-token", is_flag=True, help="Also write the token into an existing connector.")
@click.option("--no-check", is_flag=True, help="Skip embedding a test image through the cluster.")
@index_build_options
@exact_decode_option
@click.option("--json", "as_json", is_flag=True, help="Print the ids as JSON.")
def create(
    model_path: Path,
    opensearch_urls: tuple[str, ...],
    opensearch_config: Path | None,
    prefix: str,
    endpoint: str,
    token_file: Path | None,
    image_field: str,
    image_input: str,
    update_token: bool,
    no_check: bool,
    exact_decode: bool,
    as_json: bool,
    **index_params: Any,
) -> None:
    """Create (or find and update) the connector, model and pipelines of a model version.

    Reruns reuse what exists by name; objects made for another version of the model are refused.
    The model version's index (and the model's alias, if missing) is created as by
    `gemsearch index create`.

    \b
    Example:
      export GEMSEARCH_EMBED_TOKEN=...   # the token gemsearch serve was started with
      gemsearch opensearch pipelines create --model lite0-gem \\
          --opensearch https://search:9200 --endpoint http://embedder:8000
    """
    from ..onnx_manifest import read_manifest
    from ..plugin.stores.opensearch.index_checks import IndexOptions
    from ..plugin.stores.opensearch.ml_pipelines import (
        PipelineSettings,
        check_model,
        create_pipelines,
        curl_example,
    )
    from ..plugin.web.embed_config import EmbedApiConfig

    token = EmbedApiConfig(token_file=token_file).token()
    manifest = read_manifest(model_path)
    settings = PipelineSettings(
        endpoint=endpoint, image_field=image_field, image_input=image_input, update_token=update_token
    )
    client, cluster = _client(opensearch_urls, opensearch_config)
    from ..plugin.embedding.embedder import default_decode

    decode = "exact" if exact_decode else default_decode()
    options = IndexOptions(prefix=prefix, decode=decode, **index_params)
    made = create_pipelines(client, manifest, options, settings, token)
    if not no_check:
        check_model(client, made.model_id, manifest, made.decode)
    if as_json:
        click.echo(made.model_dump_json(indent=2))
        return
    rows = [
        ("model", f"{made.model} version {made.version[:8]}"),
        ("index / alias", f"{made.index} / {made.alias}"),
        ("connector", made.connector_id),
        ("model group", made.model_group_id),
        ("model (deployed)", made.model_id),
        ("ingest pipeline", f"{made.ingest_pipeline}  ({made.image_field}: {made.image_input} -> embedding)"),
        ("search pipeline", made.search_pipeline),
    ]
    width = max(len(k) for k, _ in rows)
    click.echo("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
    click.echo("\nIndex and search with any client, e.g.:\n" + curl_example(made, cluster))


@pipelines.command(name="drop")
@exported_model_option()
@opensearch_options("Remove the model from the OpenSearch cluster at this URL")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def drop(
    model_path: Path, opensearch_urls: tuple[str, ...], opensearch_config: Path | None, prefix: str, yes: bool
) -> None:
    """Remove the pipelines, the remote model, its connector and (when empty) its model group.

    The index and its documents stay.
    """
    from ..onnx_manifest import read_manifest
    from ..plugin.stores.opensearch.ml_pipelines import drop_pipelines

    manifest = read_manifest(model_path)
    if not yes:
        click.confirm(
            f"Remove the ml-commons model and pipelines of {manifest.index_name(prefix)}?", abort=True
        )
    client, _ = _client(opensearch_urls, opensearch_config)
    removed = drop_pipelines(client, manifest, prefix)
    click.echo("\n".join(f"removed {what}" for what in removed) or "nothing to remove")
