"""A gemsearch model as a remote model of an OpenSearch cluster (ml-commons), with the pipelines that
let any client index and search images without gemsearch installed.

``create_pipelines`` makes (or finds by name and reuses) five things, all named after the model
version's index ``<prefix>-<model>-<version8>``:

- a connector to the ``POST /api/embed`` endpoint of ``gemsearch serve`` (the bearer token in its
  ``credential``, the model's name and full version as parameters the endpoint checks);
- a model group ``<prefix>-<model>`` and a remote model in it, deployed;
- an ingest pipeline ``...-ingest`` (``...-ingest-url`` for image URLs): an ``ml_inference`` processor
  maps the image field to the model's input and its ``embedding`` output into the index's vector field;
- a search pipeline ``...-search``: an ``ml_inference`` request processor embeds the image (and crop)
  in ``ext.ml_inference`` of a search and fills a template k-NN query on the vector field.

The model version is written into the model's and the pipelines' descriptions; an existing object
of the same name made for another version is refused, as a foreign index is. The endpoint itself
refuses a request for another version than the one it serves (409), so a document is never embedded
by a model it was not indexed for.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import time
from typing import Any, Literal

from opensearchpy.exceptions import NotFoundError, TransportError
from pydantic import BaseModel, Field

from ....errors import StoreError
from ....manifest import ModelManifest
from .errors import store_error
from .index_admin import ensure_index
from .index_checks import VECTOR_FIELD, IndexOptions

log = logging.getLogger(__name__)

ML = "/_plugins/_ml"
QUERY_VECTOR = "gemsearch_vector"  # the template query's placeholder the search pipeline fills
# The endpoint's request: the blueprint's inputImage (ingest from base64), url (ingest from URLs) and
# query (a search's ext.ml_inference object: image or url, and crop); what is not given stays empty.
REQUEST_BODY = (
    '{"inputImage": "${parameters.inputImage:-}", "url": "${parameters.url:-}", '
    '"query": ${parameters.query:-null}, "model": "${parameters.model}", "version": "${parameters.version}", '
    '"decode": "${parameters.decode}"}'
)
_VERSION_IN_TEXT = re.compile(r"version ([0-9a-f]{64})")
_FIELD = re.compile(r"^[A-Za-z0-9_\-@]+(\.[A-Za-z0-9_\-@]+)*$")


class PipelineSettings(BaseModel):
    """What the cluster calls and which document field holds the image."""

    endpoint: str = Field(
        description="URL of gemsearch serve (its /api/embed is called), as the cluster sees it"
    )
    image_field: str = Field("image", pattern=_FIELD.pattern, description="document field with the image")
    image_input: Literal["base64", "url"] = Field("base64", description="what the image field holds")
    update_token: bool = Field(False, description="write the token into an existing connector too")
    deploy_timeout_s: float = Field(120, gt=0)


class MlPipelines(BaseModel):
    """The ids and names ``create_pipelines`` made or found."""

    model: str
    version: str
    index: str
    alias: str
    vector_field: str = VECTOR_FIELD
    image_field: str
    image_input: str
    decode: str = Field(description="the JPEG decode mode of the index, which the endpoint must use")
    endpoint: str
    connector_id: str
    model_group_id: str
    model_id: str
    ingest_pipeline: str
    search_pipeline: str
    removes_image: bool = Field(description="whether the ingest pipeline drops the base64 field after use")


def names(manifest: ModelManifest, prefix: str) -> dict[str, str]:
    base = manifest.index_name(prefix)
    return {
        "connector": base,
        "model": base,
        "group": manifest.alias_name(prefix),
        "ingest": f"{base}-ingest",  # base64 images
        "ingest_url": f"{base}-ingest-url",  # image URLs (both may exist side by side)
        "search": f"{base}-search",
    }


def embed_url(endpoint: str) -> str:
    """``endpoint`` as the embed route's URL: a server's base URL gets ``/api/embed``."""
    url = endpoint.rstrip("/")
    if not re.match(r"^https?://[^/\s]+", url):
        raise StoreError(f"--endpoint {endpoint!r} must be an http(s) URL of gemsearch serve")
    return url if url.endswith("/api/embed") else url + "/api/embed"


def describe(manifest: ModelManifest, what: str) -> str:
    """A description that carries the full model version (read back by ``stored_version``)."""
    return f"gemsearch {what}: model {manifest.name} version {manifest.version} ({manifest.output_dim} dims)"


def stored_version(description: str | None) -> str | None:
    found = _VERSION_IN_TEXT.search(description or "")
    return found.group(1) if found else None


def create_pipelines(
    client: Any, manifest: ModelManifest, options: IndexOptions, settings: PipelineSettings, token: str
) -> MlPipelines:
    """Create or update everything; returns the ids. StoreError on a version clash or a refusal."""
    n = names(manifest, options.prefix)
    ingest = n["ingest"] if settings.image_input == "base64" else n["ingest_url"]
    url = embed_url(settings.endpoint)
    try:
        index = ensure_index(client, manifest, options)
        group_id = _model_group(client, manifest, n["group"])
        connector_id = _connector(
            client, manifest, n["connector"], url, token, settings.update_token, options.decode
        )
        model_id = _model(client, manifest, n["model"], group_id, connector_id)
        _deploy(client, model_id, settings.deploy_timeout_s)
        removes = settings.image_input == "base64" and _has_processor(client, "remove")
        _put_pipeline(
            client, "_ingest", ingest, manifest, _ingest_body(manifest, model_id, settings, removes)
        )
        _put_pipeline(client, "_search", n["search"], manifest, _search_body(manifest, model_id))
    except TransportError as exc:
        raise store_error(exc, client) from exc
    return MlPipelines(
        model=manifest.name, version=manifest.version, index=index, alias=manifest.alias_name(options.prefix),
        image_field=settings.image_field, image_input=settings.image_input, decode=options.decode,
        endpoint=url,
        connector_id=connector_id, model_group_id=group_id, model_id=model_id, ingest_pipeline=ingest,
        search_pipeline=n["search"], removes_image=removes,
    )  # fmt: skip


def check_model(client: Any, model_id: str, manifest: ModelManifest, decode: str = "draft") -> None:
    """Ask the deployed model for a descriptor of a small image through the cluster: proves the
    cluster reaches the endpoint, the token is right and the endpoint serves this model version in
    the index's JPEG ``decode`` mode."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 120, 40)).save(buffer, format="PNG")
    params = {"inputImage": base64.b64encode(buffer.getvalue()).decode()}
    try:
        answer = _ml(client, "POST", f"{ML}/models/{model_id}/_predict", {"parameters": params})
    except TransportError as exc:
        raise StoreError(
            f"the cluster could not embed a test image through model {model_id}: {_reason(exc)}"
        ) from exc
    outputs = (answer.get("inference_results") or [{}])[0].get("output") or [{}]
    data = outputs[0].get("dataAsMap") or {}
    got = data.get("embedding")
    if (
        data.get("version") != manifest.version
        or data.get("decode") != decode
        or not isinstance(got, list)
        or len(got) != manifest.output_dim
    ):
        raise StoreError(
            f"the endpoint answered model {data.get('model')} version {str(data.get('version'))[:8]} "
            f"({data.get('decode')} decoding) with {len(got) if isinstance(got, list) else 'no'} dims; "
            f"expected {manifest.name} version {manifest.version8} ({decode}) with {manifest.output_dim}"
        )


def drop_pipelines(client: Any, manifest: ModelManifest, prefix: str) -> list[str]:
    """Remove the pipelines, the model (undeployed first), the connector, and the model group when no
    other model is left in it; what is already gone is skipped. Returns what was removed."""
    n = names(manifest, prefix)
    removed: list[str] = []
    try:
        for kind, name in (("_search", n["search"]), ("_ingest", n["ingest"]), ("_ingest", n["ingest_url"])):
            current = _pipeline(client, kind, name)
            if current is not None:
                _check_version(f"{kind.strip('_')} pipeline {name}", current.get("description"), manifest)
                client.transport.perform_request("DELETE", f"/{kind}/pipeline/{name}")
                removed.append(f"{kind.strip('_')} pipeline {name}")
        for model in _find(client, "models", n["model"]):
            _check_version(f"model {n['model']}", model["_source"].get("description"), manifest)
            _ml(client, "POST", f"{ML}/models/{model['_id']}/_undeploy")
            _ml(client, "DELETE", f"{ML}/models/{model['_id']}")
            removed.append(f"model {model['_id']}")
        for connector in _find(client, "connectors", n["connector"]):
            _check_version(f"connector {n['connector']}", connector["_source"].get("description"), manifest)
            _ml(client, "DELETE", f"{ML}/connectors/{connector['_id']}")
            removed.append(f"connector {connector['_id']}")
        for group in _find(client, "model_groups", n["group"]):
            if not _group_models(client, group["_id"]):
                _ml(client, "DELETE", f"{ML}/model_groups/{group['_id']}")
                removed.append(f"model group {group['_id']}")
    except TransportError as exc:
        raise store_error(exc, client) from exc
    return removed


def search_body(
    k: int = 10, image: str = "<base64 of the query image>", crop: str | None = None
) -> dict[str, Any]:
    """A search through the search pipeline: a template k-NN query the pipeline fills with the
    descriptor of ``image`` (cut to ``crop`` = ``"x,y,w,h"`` when given)."""
    query: dict[str, Any] = {"image": image}
    if crop is not None:
        query["crop"] = crop
    return {
        "size": k,
        "_source": {"excludes": [VECTOR_FIELD]},
        "query": {"template": {"knn": {VECTOR_FIELD: {"vector": f"${{{QUERY_VECTOR}}}", "k": k}}}},
        "ext": {"ml_inference": query},
    }


# ------------------------------------------------------------------------ the parts


def _ml(client: Any, method: str, path: str, body: Any = None, tries: int = 5) -> Any:
    """One ml-commons call; a 500 while the plugin sets itself up (its master key, its system
    indices) is retried a few times with backoff."""
    for attempt in range(1, tries + 1):
        try:
            return client.transport.perform_request(method, path, body=body)
        except TransportError as exc:
            if exc.status_code not in (500, 503) or attempt == tries:
                raise
            log.info("ml-commons %s %s answered %s; retrying", method, path, exc.status_code)
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _find(client: Any, kind: str, name: str) -> list[dict[str, Any]]:
    """The ml-commons objects of ``kind`` (connectors, models, model_groups) named exactly ``name``."""
    body = {"query": {"match_phrase": {"name": name}}, "size": 100}
    try:
        hits = _ml(client, "POST", f"{ML}/{kind}/_search", body)["hits"]["hits"]
    except NotFoundError:  # no such system index yet: nothing was ever made
        return []
    return [h for h in hits if (h.get("_source") or {}).get("name") == name]


def _check_version(what: str, description: str | None, manifest: ModelManifest) -> None:
    version = stored_version(description)
    if version is None:
        raise StoreError(
            f"{what} was not made by gemsearch (no model version in its description); remove it by hand"
        )
    if version != manifest.version:
        raise StoreError(
            f"{what} was made for model version {version[:8]}, not {manifest.version8}; "
            "drop it first (gemsearch opensearch pipelines drop with that model)"
        )


def _model_group(client: Any, manifest: ModelManifest, name: str) -> str:
    found = _find(client, "model_groups", name)
    if found:
        return str(found[0]["_id"])
    body = {"name": name, "description": f"gemsearch model {manifest.name}: one remote model per version"}
    return str(_ml(client, "POST", f"{ML}/model_groups/_register", body)["model_group_id"])


def _connector_body(manifest: ModelManifest, name: str, url: str, token: str, decode: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": describe(manifest, f"embedding endpoint {url}"),
        "version": "1",
        "protocol": "http",
        "parameters": {"model": manifest.name, "version": manifest.version, "decode": decode},
        "credential": {"token": token},
        "actions": [
            {
                "action_type": "predict",
                "method": "POST",
                "url": url,
                "headers": {
                    "Authorization": "Bearer ${credential.token}",
                    "Content-Type": "application/json",
                },
                "request_body": REQUEST_BODY,
            }
        ],
    }


def _connector(
    client: Any, manifest: ModelManifest, name: str, url: str, token: str, update_token: bool, decode: str
) -> str:
    body = _connector_body(manifest, name, url, token, decode)
    found = _find(client, "connectors", name)
    if not found:
        return str(_ml(client, "POST", f"{ML}/connectors/_create", body)["connector_id"])
    connector = found[0]
    source = connector["_source"]
    _check_version(f"connector {name}", source.get("description"), manifest)
    action = (source.get("actions") or [{}])[0]
    same = (
        action.get("url") == url
        and action.get("request_body") == REQUEST_BODY
        and source.get("parameters") == body["parameters"]
    )
    if not same or update_token:
        _update_connector(client, connector["_id"], manifest, body)
    return str(connector["_id"])


def _update_connector(client: Any, connector_id: str, manifest: ModelManifest, body: dict[str, Any]) -> None:
    """A connector in use by a deployed model cannot change: undeploy its model, update, redeploy."""
    update = {k: body[k] for k in ("description", "parameters", "credential", "actions")}
    models = [
        m for m in _find(client, "models", body["name"]) if m["_source"].get("connector_id") == connector_id
    ]
    for model in models:
        _ml(client, "POST", f"{ML}/models/{model['_id']}/_undeploy")
    _ml(client, "PUT", f"{ML}/connectors/{connector_id}", update)
    log.info("updated connector %s", connector_id)


def _model(client: Any, manifest: ModelManifest, name: str, group_id: str, connector_id: str) -> str:
    for model in _find(client, "models", name):
        _check_version(f"model {name}", model["_source"].get("description"), manifest)
        if model["_source"].get("connector_id") == connector_id:
            return str(model["_id"])
    body = {
        "name": name,
        "function_name": "remote",
        "model_group_id": group_id,
        "description": describe(manifest, "image embedding model"),
        "connector_id": connector_id,
    }
    return str(_ml(client, "POST", f"{ML}/models/_register", body)["model_id"])


def _deploy(client: Any, model_id: str, timeout_s: float) -> None:
    state = _ml(client, "GET", f"{ML}/models/{model_id}").get("model_state")
    if state != "DEPLOYED":
        _ml(client, "POST", f"{ML}/models/{model_id}/_deploy")
    deadline = time.monotonic() + timeout_s
    while state != "DEPLOYED":
        if state == "DEPLOY_FAILED" or time.monotonic() > deadline:
            raise StoreError(f"model {model_id} did not deploy (state {state}); see the cluster's log")
        time.sleep(0.5)
        state = _ml(client, "GET", f"{ML}/models/{model_id}").get("model_state")


def _has_processor(client: Any, kind: str) -> bool:
    """Whether every node offers the ingest processor ``kind`` (a cluster may lack ingest-common)."""
    nodes = client.transport.perform_request("GET", "/_nodes/ingest").get("nodes") or {}
    return bool(nodes) and all(
        kind in {p.get("type") for p in (n.get("ingest") or {}).get("processors") or []}
        for n in nodes.values()
    )


def _ingest_body(
    manifest: ModelManifest, model_id: str, settings: PipelineSettings, removes: bool
) -> dict[str, Any]:
    model_input = "inputImage" if settings.image_input == "base64" else "url"
    processors: list[dict[str, Any]] = [
        {
            "ml_inference": {
                "tag": "gemsearch-embed",
                "description": describe(manifest, "descriptor of the image"),
                "model_id": model_id,
                "input_map": [{model_input: settings.image_field}],
                "output_map": [{VECTOR_FIELD: "embedding"}],
            }
        }
    ]
    if removes:  # the vector is what is searched; the base64 copy would only bloat _source
        processors.append({"remove": {"field": settings.image_field, "ignore_missing": True}})
    what = f"ingest pipeline: {settings.image_field} ({settings.image_input}) -> {VECTOR_FIELD}"
    return {"description": describe(manifest, what), "processors": processors}


def _search_body(manifest: ModelManifest, model_id: str) -> dict[str, Any]:
    processor = {
        "tag": "gemsearch-query",
        "description": describe(manifest, "descriptor of the query image"),
        "model_id": model_id,
        "input_map": [{"query": "ext.ml_inference"}],  # the whole object: image or url, and crop
        "output_map": [{QUERY_VECTOR: "embedding"}],
    }
    what = f"search pipeline: ext.ml_inference image -> template knn on {VECTOR_FIELD}"
    return {"description": describe(manifest, what), "request_processors": [{"ml_inference": processor}]}


def _pipeline(client: Any, kind: str, name: str) -> dict[str, Any] | None:
    try:
        found = client.transport.perform_request("GET", f"/{kind}/pipeline/{name}")
    except NotFoundError:
        return None
    current = (found or {}).get(name)
    return current if isinstance(current, dict) else None


def _put_pipeline(client: Any, kind: str, name: str, manifest: ModelManifest, body: dict[str, Any]) -> None:
    current = _pipeline(client, kind, name)
    if current is not None:
        _check_version(f"{kind.strip('_')} pipeline {name}", current.get("description"), manifest)
    client.transport.perform_request("PUT", f"/{kind}/pipeline/{name}", body=body)


def _group_models(client: Any, group_id: str) -> list[Any]:
    body = {"query": {"term": {"model_group_id": group_id}}, "size": 1}
    try:
        return list(_ml(client, "POST", f"{ML}/models/_search", body)["hits"]["hits"])
    except NotFoundError:
        return []


def _reason(exc: TransportError) -> str:
    info = exc.info
    if isinstance(info, dict) and isinstance(info.get("error"), dict):
        return str(info["error"].get("reason") or info["error"])[:500]
    return str(info or exc.error)[:500]


def curl_example(pipelines: MlPipelines, cluster: str) -> str:
    """Shell lines that index one image and search with one through the pipelines (plain curl; the
    base64 is streamed into the body, never passed as an argument, so large images work)."""
    compact: dict[str, Any] = {"separators": (",", ":")}
    mark = "@@IMAGE@@"
    doc = json.dumps({pipelines.image_field: mark, "metadata": {"name": "photo"}}, **compact)
    query = json.dumps(search_body(10, mark, "0,0,200,150"), **compact)

    def body(text: str, image: str) -> str:
        head, _, tail = text.partition(mark)
        return f"printf '%s' '{head}'; {image}; printf '%s\\n' '{tail}'"

    photo = (
        "base64 -w0 photo.jpg"
        if pipelines.image_input == "base64"
        else "printf '%s' https://images.example/photo.jpg"
    )
    return (
        f'{{ printf \'%s\\n\' \'{{"index":{{"_id":"photo-1"}}}}\'; {body(doc, photo)}; }} |\n'
        f"  curl -s -H 'Content-Type: application/x-ndjson' --data-binary @- \\\n"
        f"  '{cluster}/{pipelines.alias}/_bulk?pipeline={pipelines.ingest_pipeline}&refresh=true'\n"
        f"{{ {body(query, 'base64 -w0 query.jpg')}; }} |\n"
        f"  curl -s -H 'Content-Type: application/json' --data-binary @- \\\n"
        f"  '{cluster}/{pipelines.alias}/_search?search_pipeline={pipelines.search_pipeline}'"
    )
