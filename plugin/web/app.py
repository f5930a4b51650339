"""The FastAPI app of ``gemsearch serve``: the search API, stored images and the demo page.

The browser only ever talks to this app: queries are embedded here and sent to the store by the
server, so the OpenSearch cluster (its address, its credentials) is never exposed to clients.
Every error is JSON ``{"error": {"code", "message"}}`` with a 4xx status for a bad request, 503
when the store cannot be reached.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from ..._deps import require
from ...errors import GemsearchError, ImageError, NoIndexError, StoreError
from ..inputs.images import ImageLoadConfig
from ..inputs.memory import MemoryBudget, header_cost, trim_after
from ..query import NoSuchDocument, QueryExpansion, SearchResult
from ..query_checks import check_filters, parse_crop
from .config import Limits, ServeConfig
from .image_files import ImageFiles, OpenedFile
from .limits import BodyDeadline, BodyLimit, RateLimiter, SearchRate, SecurityHeaders, parse_json_field
from .page_api import fields_route, hit_title
from .registry import ModelRegistry, ModelSlot
from .schemas import ErrorResponse, Health, HitOut, ModelInfo, SearchResponse, Settings

require("fastapi", "web")
require("python_multipart", "web", "python-multipart")

import anyio  # noqa: E402
from fastapi import FastAPI, File, Form, Query, Request, UploadFile  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

log = logging.getLogger(__name__)

STATIC = Path(str(resources.files(__package__).joinpath("static")))
_MULTIPART_OVERHEAD = 64 * 1024  # form fields and part headers around the uploaded file
_IMAGE_STATUS = {
    "too_many_bytes": (413, "too_large"),
    "too_many_pixels": (413, "too_many_pixels"),
    "unsupported_format": (415, "not_an_image"),
    "empty": (400, "empty_image"),
    "truncated": (422, "truncated_image"),
    "corrupt": (422, "corrupt_image"),
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "bad request (crop, filters, id)",
        404: "unknown model, document or image; no index for the model yet",
        408: "the request body did not arrive in time",
        413: "upload too large (bytes or pixels)",
        415: "not an image",
        422: "invalid field or undecodable image",
        429: "too many searches; see Retry-After",
        503: "the store cannot be reached, or too many searches wait for memory",
    }.items()
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def library_error(exc: GemsearchError) -> ApiError:
    """The status and code a library error stands for; store details stay in the server log."""
    if isinstance(exc, ImageError):
        status, code = _IMAGE_STATUS.get(exc.reason, (400, "bad_image"))
        return ApiError(status, code, str(exc))
    if isinstance(exc, NoSuchDocument):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, NoIndexError):  # the cluster answers: nothing was ingested for the model
        log.warning("store error: %s", exc)
        return ApiError(404, "no_index", exc.hint)
    if isinstance(exc, StoreError):
        log.error("store error: %s", exc)
        return ApiError(503, "unavailable", "the search backend cannot be reached; try again later")
    return ApiError(400, "bad_request", str(exc))


def shown_score(score: float) -> float:
    """A hit's score as the API answers it: the cosine of unit descriptors, so within [-1, 1] (the
    k-NN engines' float arithmetic can leave it by a hair), rounded to 6 decimals."""
    return round(min(1.0, max(-1.0, score)), 6)


@dataclass
class _Serving:
    """What the routes of one app share: the models, the image files and the limiters."""

    config: ServeConfig
    models: ModelRegistry
    files: ImageFiles
    budget: MemoryBudget
    workers: anyio.CapacityLimiter  # searches running at once
    image_workers: anyio.CapacityLimiter  # stored images read at once
    # uploads waiting for decode memory: they wait on these tokens, never on the default thread
    # pool, which the upload holding the memory needs to read its spooled file (else: deadlock)
    upload_waiters: anyio.CapacityLimiter

    @property
    def limits(self) -> Limits:
        return self.config.limits

    def slot_for(self, name: str | None) -> ModelSlot:
        slot = self.models.get(name)
        if slot is None:
            raise ApiError(404, "unknown_model", f"no model named {name!r}; see /api/models")
        return slot

    def image_urls(self, slot: ModelSlot, doc_id: str) -> tuple[str | None, str | None]:
        if not self.config.image_roots:
            return None, None
        base = f"/api/images/{quote(doc_id, safe='')}?model={quote(slot.name, safe='')}"
        return base + "&size=full", base + "&size=thumb"

    def image_of(self, slot: ModelSlot, doc_id: str, size: str) -> OpenedFile | tuple[bytes, str]:
        record = slot.searcher.store.get(doc_id) if len(doc_id) <= 512 else None
        if record is None or not record.image_ref:
            raise ApiError(404, "not_found", f"no image for document {doc_id!r}")
        try:
            if size == "full":
                return self.files.full(record.image_ref)
            return self.files.thumbnail(record.image_ref), "image/jpeg"
        except ImageError as exc:  # missing, outside the roots, unreadable: never say where it is
            log.warning("image of %s: %s", doc_id, exc)
            raise ApiError(404, "not_found", f"the image of document {doc_id!r} is not available") from exc

    async def search_upload(self, image: UploadFile, run: Callable[[bytes], SearchResult]) -> SearchResult:
        """Read and search the upload once the memory its decode takes fits in the budget; until
        then it waits unread in its spooled file."""
        limits = self.limits
        size = limits.max_upload_bytes if image.size is None else image.size
        cost = await anyio.to_thread.run_sync(header_cost, image.file, size, limits.max_pixels)
        if self.upload_waiters.available_tokens < 1:
            raise ApiError(503, "busy", "too many searches are waiting for memory; try again shortly")
        # not cancellable: a client that leaves while it waits still gets (then frees) its share
        reserved = await anyio.to_thread.run_sync(self.budget.acquire, cost, limiter=self.upload_waiters)
        try:
            data = await _read_upload(image, limits.max_upload_bytes)
            return await anyio.to_thread.run_sync(_then_trim, run, data, reserved, limiter=self.workers)
        finally:
            self.budget.release(reserved)

    def response(
        self, slot: ModelSlot, result: SearchResult, k: int, box: Any, expand: int
    ) -> SearchResponse:
        hits = []
        for rank, hit in enumerate(result.hits, 1):
            full, thumb = self.image_urls(slot, hit.id)
            title = hit_title(hit.id, hit.image_ref, hit.metadata, self.config.title_field)
            score = shown_score(hit.score)
            hits.append(HitOut(rank=rank, id=hit.id, title=title, score=score, image_ref=hit.image_ref,
                               metadata=hit.metadata, image_url=full, thumbnail_url=thumb))  # fmt: skip
        return SearchResponse(
            model=slot.name,
            k=k,
            crop=_crop_xywh(box),
            crop_box=box,
            expand=expand,
            hits=hits,
            timings=result.timings,
            unknown_filter_fields=result.unknown_filter_fields,
            filter_warnings=result.filter_warnings,
        )


def create_app(config: ServeConfig, registry: ModelRegistry | None = None) -> Any:
    """The ASGI app (FastAPI, wrapped in the middleware that limits requests before they are parsed).

    ``registry``: the opened models (default: opened from ``config``); the app closes it on shutdown.
    """
    serving = _serving(config, registry)
    app = FastAPI(
        title=f"{config.title} image search",
        version="1",
        description="Crop-and-search over instance-level image descriptors (GeM).",
        docs_url=None,  # the interactive docs load scripts from a CDN; the schema is at /openapi.json
        redoc_url=None,
    )
    app.router.add_event_handler("shutdown", serving.models.close)
    _install_error_handlers(app)
    _service_routes(app, serving)
    _search_route(app, serving)
    _image_route(app, serving)
    from .embed_api import embed_routes  # it imports this module's error types

    embed_routes(app, serving)
    fields_route(app, serving.slot_for, [slot.name for slot in serving.models])
    _page_routes(app)
    _plain_file_schema(app)
    limits = config.limits
    rate = RateLimiter(limits.searches_per_minute, limits.search_burst)
    body_limit = BodyLimit(app, limits.max_upload_bytes, _MULTIPART_OVERHEAD)
    limited = SearchRate(body_limit, rate, frozenset({"/api/search"}))
    return SecurityHeaders(BodyDeadline(limited, limits.body_timeout_s))


def _serving(config: ServeConfig, registry: ModelRegistry | None) -> _Serving:
    limits = config.limits
    upload_config = ImageLoadConfig(max_bytes=limits.max_upload_bytes, max_pixels=limits.max_pixels)
    models = registry or ModelRegistry.from_config(config, upload_config)
    for slot in models:
        slot.searcher.image_config = upload_config
    budget = MemoryBudget(limits.decode_memory_mb * 2**20)
    stored = ImageLoadConfig(max_bytes=limits.max_image_file_bytes, max_pixels=limits.max_pixels)
    files = ImageFiles(config.image_roots, stored, limits.thumbnail_side, budget=budget)
    workers = anyio.CapacityLimiter(limits.concurrent_searches)
    images = anyio.CapacityLimiter(limits.concurrent_images)
    waiting = anyio.CapacityLimiter(4 * limits.concurrent_searches)
    return _Serving(config, models, files, budget, workers, images, waiting)


def _service_routes(app: FastAPI, serving: _Serving) -> None:
    models, config, limits = serving.models, serving.config, serving.limits

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}}, tags=["service"])
    async def healthz() -> Any:
        """Whether every model's store answers (503 with the details when one does not)."""
        states = await _store_states(models)
        up = {name: count is not None for name, (count, _) in states.items()}
        problems = {name: problem for name, (_, problem) in states.items() if problem}
        health = Health(status="ok" if all(up.values()) else "degraded", models=up, problems=problems)
        return JSONResponse(health.model_dump(), status_code=200 if health.status == "ok" else 503)

    @app.get("/api/models", response_model=list[ModelInfo], tags=["search"])
    async def list_models() -> list[ModelInfo]:
        """The models this server searches with; the first is the default."""
        counts = await _document_counts(models)
        return [_model_info(slot, slot.name == models.default, counts[slot.name]) for slot in models]

    @app.get("/api/settings", response_model=Settings, tags=["search"])
    def settings() -> Settings:
        """The request limits (for the page)."""
        return Settings(
            title=config.title,
            max_upload_bytes=limits.max_upload_bytes,
            max_pixels=limits.max_pixels,
            max_k=limits.max_k,
            default_k=min(limits.default_k, limits.max_k),
            max_expand=limits.max_expand,
            images=bool(config.image_roots),
            title_field=config.title_field,
        )


def _search_route(app: FastAPI, serving: _Serving) -> None:
    limits = serving.limits
    model_enum: dict[str, Any] = {"enum": [slot.name for slot in serving.models]}

    @app.post("/api/search", response_model=SearchResponse, responses=_ERRORS, tags=["search"])
    async def search(
        request: Request,
        image: Annotated[
            UploadFile | None, File(description="the query image (JPEG, PNG, WebP, ...)")
        ] = None,
        doc_id: Annotated[
            str | None, Form(alias="id", max_length=512, description="search with an indexed document")
        ] = None,
        model: Annotated[
            str | None,
            Form(max_length=100, description="model name; default: the first", json_schema_extra=model_enum),
        ] = None,
        k: Annotated[int, Form(ge=1, le=limits.max_k, description="number of results")] = min(
            limits.default_k, limits.max_k
        ),
        crop: Annotated[
            str | None, Form(max_length=200, description="region x,y,w,h in pixels of the upright image")
        ] = None,
        filters: Annotated[
            str | None, Form(max_length=16384, description='JSON object, e.g. {"year": {"gte": 2020}}')
        ] = None,
        expand: Annotated[int, Form(ge=0, le=limits.max_expand, description="alpha-QE top n; 0 = off")] = 0,
        alpha: Annotated[float, Form(ge=0, le=100, description="alpha-QE exponent")] = 3.0,
    ) -> SearchResponse:
        """Search with an uploaded image (optionally a region of it) or an indexed document id."""
        slot = serving.slot_for(model)
        box = parse_crop(crop) if crop and crop.strip() else None
        parsed = _parse_filters(filters)
        qe = QueryExpansion(n=expand, alpha=alpha) if expand else None
        if (image is None) == (doc_id is None):
            raise ApiError(400, "bad_request", _either_message(request, serving.config))
        if doc_id is not None:
            if box is not None:
                raise ApiError(400, "bad_request", "crop applies to an uploaded image, not to an id")
            run = partial(slot.searcher.search_by_id, doc_id, k, parsed, qe)
            result: SearchResult = await anyio.to_thread.run_sync(run, limiter=serving.workers)
        else:
            assert image is not None
            run_upload = partial(slot.searcher.search, crop=box, k=k, filters=parsed, expand=qe)
            result = await serving.search_upload(image, run_upload)
        return serving.response(slot, result, k, box, expand)


def _image_route(app: FastAPI, serving: _Serving) -> None:
    model_enum: dict[str, Any] = {"enum": [slot.name for slot in serving.models]}

    @app.get(
        "/api/images/{doc_id:path}",
        responses={200: {"content": {"image/jpeg": {}}}, **_ERRORS},
        response_class=Response,
        tags=["search"],
    )
    async def stored_image(
        doc_id: str,
        model: Annotated[str | None, Query(max_length=100, json_schema_extra=model_enum)] = None,
        size: Annotated[str, Query(pattern="^(thumb|full)$")] = "thumb",
    ) -> Response:
        """The stored image of a document (``size=full``) or a JPEG thumbnail; only from the image roots."""
        slot = serving.slot_for(model)
        read = partial(serving.image_of, slot, doc_id, size)
        found = await anyio.to_thread.run_sync(read, limiter=serving.image_workers)
        cache = {"Cache-Control": "private, max-age=3600"}
        if isinstance(found, OpenedFile):
            headers = {**cache, "Content-Length": str(found.size)}
            return StreamingResponse(found.chunks(), media_type=found.media_type, headers=headers)
        return Response(found[0], media_type=found[1], headers=cache)


def _page_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    # The page's files ship inside the package; an editable install links them from the source tree,
    # so links are followed (nothing user-controlled lives in this folder).
    app.mount("/static", StaticFiles(directory=STATIC, follow_symlink=True), name="static")


def _plain_file_schema(app: FastAPI) -> None:
    """Describe the optional upload as a plain file part (not ``anyOf [file, null]``), so generic
    OpenAPI clients and fuzzers send it as a file; optional already means "not in ``required``"."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema: dict[str, Any] = build()
        for body in schema.get("components", {}).get("schemas", {}).values():
            image = body.get("properties", {}).get("image")
            binary = [v for v in (image or {}).get("anyOf", []) if v.get("type") == "string"]
            if image and binary:
                body["properties"]["image"] = {**binary[0], "description": image.get("description", "")}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(GemsearchError)
    async def gemsearch_error(request: Request, exc: GemsearchError) -> JSONResponse:
        err = library_error(exc)
        return error_response(err.status, err.code, err.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 408: "timeout"}.get(
            exc.status_code, "bad_request"
        )
        return error_response(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error")


async def _read_upload(image: UploadFile, max_bytes: int) -> bytes:
    data = await image.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, "too_large", f"the image is larger than {max_bytes} bytes")
    if not data:
        raise ApiError(400, "empty_image", "the uploaded file is empty")
    return data


def _crop_xywh(box: Any) -> tuple[float, float, float, float] | None:
    """The crop as the API takes it, x, y, w, h (the numbers sent, when it was parsed from them)."""
    if box is None:
        return None
    xywh = getattr(box, "xywh", None)
    return xywh if xywh is not None else (box[0], box[1], box[2] - box[0], box[3] - box[1])


def _either_message(request: Request, config: ServeConfig) -> str:
    """What a search without exactly one of an image and an id is told; a JSON body is pointed to
    the form encoding (and to the embed API, the JSON one, when it is served)."""
    fields = "an image file or an id as multipart/form-data fields (image or id; crop, k, filters, ...)"
    if "json" not in request.headers.get("content-type", "").lower():
        return f"send either {fields}"
    message = f"/api/search takes multipart/form-data, not JSON: send {fields}"
    if config.embed_api is not None:
        message += "; machines that send JSON can embed an image with POST /api/embed"
    return message


def _parse_filters(text: str | None) -> dict[str, Any] | None:
    if text is None or not text.strip():
        return None
    return check_filters(parse_json_field(text, "filters"))


def _then_trim(run: Callable[[bytes], SearchResult], data: bytes, cost: int) -> SearchResult:
    """``run(data)``, then the memory its decode (of ``cost`` bytes) freed handed back to the system."""
    try:
        return run(data)
    finally:
        trim_after(cost)


async def _document_counts(models: ModelRegistry) -> dict[str, int | None]:
    """Each model's document count (None: its store does not answer), asked of all stores at once."""
    return {name: count for name, (count, _) in (await _store_states(models)).items()}


async def _store_states(models: ModelRegistry) -> dict[str, tuple[int | None, str | None]]:
    """Each model's ``ModelSlot.state()``, asked of all stores at once."""
    states: dict[str, tuple[int | None, str | None]] = {}

    async def ask(slot: ModelSlot) -> None:
        states[slot.name] = await anyio.to_thread.run_sync(slot.state)

    async with anyio.create_task_group() as group:
        for slot in models:
            group.start_soon(ask, slot)
    return {slot.name: states[slot.name] for slot in models}


def _model_info(slot: ModelSlot, default: bool, documents: int | None) -> ModelInfo:
    m = slot.searcher.manifest
    return ModelInfo(
        name=m.name,
        version=m.version,
        backbone=m.backbone,
        pooling=m.pooling.kind if m.pooling.p is None else f"{m.pooling.kind} (p={m.pooling.p:.2f})",
        whitening=m.whitening.kind if m.whitening else None,
        dims=m.output_dim,
        max_side=m.input.max_side,
        store=slot.store_kind,
        index=slot.index,
        documents=documents,
        default=default,
    )
