"""``POST /api/embed``: the model of ``gemsearch serve`` as an embedding service for machines.

An OpenSearch cluster calls it through an ml-commons connector (``gemsearch opensearch pipelines
create``), so its ingest and search pipelines embed images with exactly the model ``gemsearch search``
uses. One JSON body, three shapes:

- the multimodal-embedding connector blueprint's: ``{"inputImage": "<base64>"}`` -> ``{"embedding": [...]}``
  (an ``inputText`` must be absent, empty or ``"null"``: the model embeds images only);
- a plain one for ``ml_inference`` input and output maps: ``{"image": "<base64>"}`` or ``{"url": ...}``,
  an optional ``crop`` (``"x,y,w,h"`` or ``[x, y, w, h]``), ``model`` and the expected ``version``;
- ``{"query": {"image": ..., "crop": ...}}``: a search's ``ext.ml_inference`` object as the search
  pipeline passes it on;
- a batch: ``{"images": [{"image": ...}, {"url": ..., "crop": ...}]}``, one result per image.

Every answer names the model and its version; a request that expects another version is refused
(409), so a cluster never mixes descriptors of two models. A bearer token is checked (in constant
time) before the body is read; bodies are bounded like uploads to ``/api/search`` (``max_upload_bytes``)
and images by ``max_pixels``; decodes reserve their memory from the same budget as searches.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import io
import json
import posixpath
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit

import anyio
import numpy as np
from fastapi import FastAPI, Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from ...errors import ConfigError, GemsearchError
from ...preprocess import Box
from ..inputs.memory import header_cost, trim_after
from ..query_checks import check_box, parse_crop
from .app import ApiError, library_error
from .embed_config import EmbedApiConfig
from .registry import ModelSlot
from .schemas import ErrorBody, ErrorResponse

if TYPE_CHECKING:
    from .app import _Serving

EMBED_PATH = "/api/embed"
_ABSENT = frozenset({"", "null", "none"})  # what a connector substitutes for a parameter not given


def _unwrapped(value: Any) -> Any:
    """A string as the caller meant it: ml-commons' search processors send JSON-encoded strings
    (``"\\"abc\\""``) and connectors fill parameters not given with ``""`` or ``"null"`` (-> None)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        with contextlib.suppress(ValueError):
            text = str(json.loads(text)).strip()
    return None if text.lower() in _ABSENT else text


class EmbedImage(BaseModel):
    """One image: base64 bytes (``image``, or the blueprint's ``inputImage``) or a ``url``, and a crop."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    image: str | None = Field(
        None,
        validation_alias=AliasChoices("image", "inputImage"),
        description="the image file's bytes, base64 (a data: URI prefix is allowed); alias inputImage",
    )
    url: str | None = Field(None, description="fetched by the server; only under its configured prefixes")
    crop: str | list[float] | None = Field(
        None, description="region x,y,w,h in pixels of the upright image, as a string or a list"
    )

    _unwrap = field_validator("image", "url", "crop", mode="before")(lambda v: _unwrapped(v))


class EmbedRequest(EmbedImage):
    """One image (the fields of EmbedImage) or ``images``; ``model`` and ``version`` select and check."""

    model: str | None = Field(None, max_length=100, description="model name; default: the server's first")
    version: str | None = Field(
        None, description="the model version the caller expects (full, or at least its first 8 characters)"
    )
    decode: Literal["draft", "exact"] | None = Field(
        None, description="the JPEG decode mode the caller's index was built with (checked)"
    )
    images: list[EmbedImage] | None = Field(None, description="a batch; one result per image, in order")
    query: EmbedImage | None = Field(
        None, description="one image as an object (a search's ext.ml_inference, passed on by the pipeline)"
    )
    inputText: str | None = Field(None, description="blueprint field; must be empty: images only")

    _unwrap_more = field_validator("model", "version", "decode", "inputText", mode="before")(
        lambda v: _unwrapped(v)
    )


class EmbedResponse(BaseModel):
    embedding: list[float] = Field(description="the L2-normalised descriptor")
    model: str
    version: str = Field(description="the model version that made the descriptor")
    dims: int
    decode: str = Field(description="how JPEGs were decoded: draft (scaled by the decoder) or exact")


class EmbedResult(BaseModel):
    embedding: list[float] | None = None
    error: ErrorBody | None = Field(None, description="why this image has no descriptor")


class EmbedBatchResponse(BaseModel):
    model: str
    version: str
    dims: int
    decode: str
    results: list[EmbedResult] = Field(description="one per image, in request order")


def embed_routes(app: FastAPI, serving: _Serving) -> None:
    """Add ``POST /api/embed`` when the serve config has an ``embed_api`` block (else nothing)."""
    config: EmbedApiConfig | None = getattr(serving.config, "embed_api", None)
    if config is None:
        return
    token = config.token()
    _register_schemas(app)
    request_schema = {"schema": {"$ref": "#/components/schemas/EmbedRequest"}}
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorResponse, "description": text}
        for code, text in {
            400: "bad base64, crop or field; a text input",
            401: "missing or wrong bearer token",
            404: "unknown model",
            409: "the server's model version or decode mode is not the one expected",
            413: "body, image bytes, pixels or batch too large",
            415: "not an image",
            422: "invalid JSON body, undecodable image, or a URL that could not be fetched",
            503: "too many requests wait for decode memory",
        }.items()
    }

    @app.post(
        EMBED_PATH,
        response_model=EmbedResponse | EmbedBatchResponse,
        responses=responses,
        tags=["embed"],
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": request_schema}}},
    )  # fmt: skip
    async def embed(request: Request) -> EmbedResponse | EmbedBatchResponse:
        """Descriptors of images (base64 or URL, optionally a region), for machines; bearer token."""
        if not _authorised(request.headers.get("authorization"), token):
            raise ApiError(401, "unauthorized", "send the embed token as 'Authorization: Bearer <token>'",
                           {"WWW-Authenticate": 'Bearer realm="gemsearch"'})  # fmt: skip
        body = await anyio.to_thread.run_sync(_parse, await request.body())  # up to megabytes of JSON
        slot = serving.slot_for(body.model)
        _check_version(slot, body.version)
        _check_decode(slot, body.decode)
        m, decode = slot.searcher.manifest, slot.searcher.embedder.decode
        given = [x for x in (body.images, body.query) if x is not None]
        if given and (
            body.image is not None or body.url is not None or body.crop is not None or len(given) > 1
        ):
            raise ApiError(400, "bad_request", "send one of: image/url (with crop), query, images")
        if body.images is None:
            vector = await _embed_one(serving, config, slot, body.query or body)
            return EmbedResponse(
                embedding=_floats(vector), model=m.name, version=m.version, dims=m.output_dim, decode=decode
            )
        if len(body.images) > config.max_batch:
            raise ApiError(413, "too_many_images", f"at most {config.max_batch} images per request")
        results = [await _result(serving, config, slot, item) for item in body.images]
        return EmbedBatchResponse(
            model=m.name, version=m.version, dims=m.output_dim, decode=decode, results=results
        )


def _register_schemas(app: FastAPI) -> None:
    """Put the request body's models into the OpenAPI components (the route reads its body itself,
    so that the token is checked before a byte of it is parsed)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema: dict[str, Any] = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (EmbedImage, EmbedRequest):
            found = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
            components.update(found.pop("$defs", {}))
            components[model.__name__] = found
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _authorised(header: str | None, token: str) -> bool:
    scheme, _, value = (header or "").strip().partition(" ")
    # compare_digest: the time taken says nothing about how much of the token was right
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def _parse(raw: bytes) -> EmbedRequest:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(422, "invalid_request", f"the body must be a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_request", "the body must be a JSON object")
    try:
        body = EmbedRequest.model_validate(data)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:5]]
        raise ApiError(422, "invalid_request", "; ".join(parts)) from None
    if body.inputText is not None:
        raise ApiError(400, "text_input", "this model embeds images only; send inputImage, not inputText")
    return body


def _check_version(slot: ModelSlot, expected: str | None) -> None:
    served = slot.searcher.manifest.version
    if expected is None:
        return
    if len(expected) < 8 or not served.startswith(expected.lower()):
        raise ApiError(
            409,
            "model_version_mismatch",
            f"model {slot.name} here is version {served[:8]}, the request expects {expected[:8]}: "
            "re-create the cluster's pipelines for the served model (gemsearch opensearch pipelines create)",
        )


def _check_decode(slot: ModelSlot, expected: str | None) -> None:
    served = slot.searcher.embedder.decode
    if expected is not None and expected != served:
        raise ApiError(
            409,
            "decode_mismatch",
            f"this server decodes JPEGs in {served} mode, the request's index was built in {expected} "
            "mode: serve with the same mode (--exact-decode) as the index",
        )


async def _result(
    serving: _Serving, config: EmbedApiConfig, slot: ModelSlot, item: EmbedImage
) -> EmbedResult:
    try:
        return EmbedResult(embedding=_floats(await _embed_one(serving, config, slot, item)))
    except ApiError as exc:
        return EmbedResult(error=ErrorBody(code=exc.code, message=exc.message))
    except GemsearchError as exc:
        err = library_error(exc)
        return EmbedResult(error=ErrorBody(code=err.code, message=err.message))


async def _embed_one(serving: _Serving, config: EmbedApiConfig, slot: ModelSlot, item: EmbedImage) -> Any:
    """The descriptor of one image, its decode admitted by the shared memory budget."""
    if (item.image is None) == (item.url is None):
        raise ApiError(400, "bad_request", "send one image: image (or inputImage) as base64, or url")
    box = _crop(item.crop)
    limits = serving.limits
    if item.image is not None:
        data = await anyio.to_thread.run_sync(_base64, item.image, limits.max_upload_bytes)
    else:
        assert item.url is not None
        fetch = _fetcher(config, limits.max_upload_bytes)
        data = await anyio.to_thread.run_sync(fetch, item.url, limiter=serving.image_workers)
    cost = await anyio.to_thread.run_sync(header_cost, io.BytesIO(data), len(data), limits.max_pixels)
    if serving.upload_waiters.available_tokens < 1:
        raise ApiError(503, "busy", "too many requests are waiting for memory; try again shortly")
    reserved = await anyio.to_thread.run_sync(serving.budget.acquire, cost, limiter=serving.upload_waiters)
    try:
        return await anyio.to_thread.run_sync(_descriptor, slot, data, box, reserved, limiter=serving.workers)
    finally:
        serving.budget.release(reserved)


def _descriptor(slot: ModelSlot, data: bytes, box: Box | None, reserved: int) -> Any:
    """Decode (within the upload limits, in the embedder's decode mode), crop and embed as
    ``gemsearch search`` does; then hand the decode's memory back."""
    searcher = slot.searcher
    try:
        scaled = searcher.embedder.decode_bytes(data, searcher.image_config, "the image")
        checked = check_box(box, scaled.full_size) if box is not None else None
        return searcher.embedder.embed_image(scaled, crop=checked)
    finally:
        trim_after(reserved)


def _crop(crop: str | list[float] | None) -> Box | None:
    if crop is None:
        return None
    if isinstance(crop, str):
        return parse_crop(crop)
    if len(crop) != 4:
        raise ConfigError(f"crop must be four numbers x,y,w,h, got {len(crop)}")
    return parse_crop(",".join(repr(float(v)) for v in crop))


def _base64(text: str, max_bytes: int) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > (max_bytes + 2) // 3 * 4 + 4:
        raise ApiError(413, "too_large", f"the image is larger than {max_bytes} bytes")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", "image is not valid base64") from None
    if not data:
        raise ApiError(400, "empty_image", "the image is empty")
    if len(data) > max_bytes:
        raise ApiError(413, "too_large", f"the image is larger than {max_bytes} bytes")
    return data


def _floats(vector: Any) -> list[float]:
    # float32 -> Python float is exact, so the JSON round trip gives back the very same float32
    return [float(v) for v in np.asarray(vector, dtype=np.float32).ravel()]


# ------------------------------------------------------------------------ URL images


def url_allowed(url: str, prefixes: Sequence[str]) -> bool:
    """Whether ``url`` lies under one of ``prefixes``: same scheme, host and port, and a path below
    the prefix's path (whole segments; ``..`` and ``.`` segments, credentials and backslashes refused)."""
    try:
        return _under_a_prefix(urlsplit(url), prefixes)
    except ValueError:  # a port that is no number or out of range, broken IPv6 brackets: not allowed
        return False


def _under_a_prefix(parts: SplitResult, prefixes: Sequence[str]) -> bool:
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return False
    path = unquote(parts.path or "/")
    if "\\" in path or any(seg in (".", "..") for seg in path.split("/")):
        return False
    if posixpath.normpath(path) != path.rstrip("/") and path != "/":
        return False
    for prefix in prefixes:
        pre = urlsplit(prefix)
        if (pre.scheme, pre.hostname, _port(pre.scheme, pre.port)) != (
            parts.scheme,
            parts.hostname,
            _port(parts.scheme, parts.port),
        ):
            continue
        base = unquote(pre.path or "/")
        if path == base or path.startswith(base if base.endswith("/") else base + "/"):
            return True
    return False


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect could lead outside the allowed prefixes: it is an error, never followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _fetcher(config: EmbedApiConfig, max_bytes: int) -> Any:
    def fetch(url: str) -> bytes:
        if not config.url_prefixes:
            raise ApiError(400, "url_not_allowed", "this server fetches no URLs; send the image as base64")
        if not url_allowed(url, config.url_prefixes):
            raise ApiError(400, "url_not_allowed", "the URL is not under a prefix this server may fetch from")
        opener = urllib.request.build_opener(_NoRedirects)
        try:
            with opener.open(
                urllib.request.Request(url, method="GET"), timeout=config.fetch_timeout_s
            ) as resp:
                data: bytes = resp.read(max_bytes + 1)
        except urllib.error.HTTPError as exc:
            raise ApiError(422, "fetch_failed", f"fetching the image answered {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ApiError(422, "fetch_failed", f"cannot fetch the image: {exc}") from None
        if len(data) > max_bytes:
            raise ApiError(413, "too_large", f"the image is larger than {max_bytes} bytes")
        if not data:
            raise ApiError(400, "empty_image", "the fetched image is empty")
        return data

    return fetch
