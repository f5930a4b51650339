"""The JSON bodies of the HTTP API (they make its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ..query import Timings


class ErrorBody(BaseModel):
    code: str = Field(description="machine-readable reason, e.g. too_large, not_an_image, unavailable")
    message: str = Field(description="what went wrong, for people")


class ErrorResponse(BaseModel):
    error: ErrorBody


class ModelInfo(BaseModel):
    name: str
    version: str = Field(description="sha256 of the weights and of all else that shapes the descriptors")
    backbone: str
    pooling: str
    whitening: str | None
    dims: int
    max_side: int
    store: Literal["local", "opensearch"]
    index: str = Field(description="the OpenSearch alias, or the LocalStore folder's name")
    documents: int | None = Field(description="documents in the store; null when it cannot be reached")
    default: bool


class Settings(BaseModel):
    """What the page needs to know to stay within the limits."""

    title: str
    max_upload_bytes: int
    max_pixels: int
    max_k: int
    default_k: int
    max_expand: int
    images: bool = Field(description="whether stored images are served")
    title_field: str | None = Field(description="the metadata field hits are titled by (else file names)")


class HitOut(BaseModel):
    rank: int
    id: str
    title: str = Field(description="the serve config's title_field of the metadata, else the file name")
    score: float = Field(
        description="inner product (cosine) with the query descriptor, in [-1, 1], 6 decimals"
    )
    image_ref: str | None = Field(description="the stored image reference (a path or file:// URI)")
    metadata: dict[str, Any]
    image_url: str | None = Field(description="the stored image, when image roots are configured")
    thumbnail_url: str | None


class SearchResponse(BaseModel):
    model: str
    k: int
    crop: tuple[float, float, float, float] | None = Field(
        description="the region searched as sent: x, y, w, h in pixels of the upright image"
    )
    crop_box: tuple[float, float, float, float] | None = Field(
        None, description="the same region as a box: x1, y1, x2, y2"
    )
    expand: int
    hits: list[HitOut]
    timings: Timings
    unknown_filter_fields: list[str] = Field(
        default_factory=list,
        description="filter fields that no document has, so the filter matches nothing (checked when "
        "the result is empty)",
    )
    filter_warnings: list[str] = Field(
        default_factory=list,
        description="filters that compare with values of a kind their field does not hold (a numeric range "
        "on a text field, say), so the filter matches nothing (checked when the result is empty)",
    )


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    models: dict[str, bool] = Field(description="model name -> whether its store answers")
    problems: dict[str, str] = Field(
        default_factory=dict,
        description="model name -> what is wrong with its store, for those that do not answer "
        "(e.g. no index for the model yet)",
    )


class FieldInfo(BaseModel):
    name: str = Field(description="dotted for nested fields, as a filter names it")
    kinds: list[Literal["boolean", "number", "text"]] = Field(description="the kinds of its values")


class FieldsResponse(BaseModel):
    model: str
    fields: list[FieldInfo] = Field(description="sorted by name")
    truncated: bool = Field(description="whether the store has more fields than listed")
