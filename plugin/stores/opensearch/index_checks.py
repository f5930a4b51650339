"""What a gemsearch index must look like: the options it is built with, its ``_meta``, the preflight.

The preflight reads the mapping and settings back before the first write, so a store never writes
vectors into an index built for another dimension, engine, space type or model version.
"""

from __future__ import annotations

from typing import Any

from opensearchpy.exceptions import TransportError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ....errors import StoreError
from ....manifest import ModelManifest
from ....opensearch_templates import Encoder, Engine, SpaceType, knn_index_body
from ....preprocess import DEFAULT_DECODE, DecodeMode, decode_mismatch
from .errors import store_error

VECTOR_FIELD = "embedding"
META_KEY = "gemsearch"


class IndexOptions(BaseModel):
    """How the physical index of a model version is built (the manifest gives the dimension)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = Field("gemsearch", pattern=r"^[a-z0-9][a-z0-9_\-]{0,100}$")
    engine: Engine = "lucene"
    space_type: SpaceType = "innerproduct"
    m: int = Field(16, ge=2, le=512)
    ef_construction: int = Field(128, ge=2)
    ef_search: int = Field(100, ge=1)
    shards: int = Field(1, ge=1)
    replicas: int = Field(0, ge=0)
    decode: DecodeMode = Field(DEFAULT_DECODE, description="how the images were decoded (recorded in _meta)")
    encoder: Encoder = "none"
    refresh_interval: str = Field("1s", pattern=r"^(-1|\d+(ms|s|m))$")
    vector_in_source: bool = True

    @model_validator(mode="after")
    def _encoder_fits_engine(self) -> IndexOptions:
        if self.encoder == "binary" and self.engine != "faiss":
            raise ValueError("the binary encoder needs the faiss engine")
        return self


def index_meta(manifest: ModelManifest, options: IndexOptions) -> dict[str, Any]:
    """The mapping's ``_meta``: the whole manifest, plus the alias this version serves."""
    return {
        META_KEY: {
            "schema": 1,
            "prefix": options.prefix,
            "alias": manifest.alias_name(options.prefix),
            "manifest": manifest.model_dump(mode="json"),
            "decode": options.decode,
        }
    }


def meta_decode(meta: dict[str, Any]) -> DecodeMode:
    """The decode mode a ``_meta.gemsearch`` block records (``exact`` for indices made before the
    mode was recorded: exact decoding was the only one)."""
    return "draft" if meta.get("decode") == "draft" else "exact"


def index_body(manifest: ModelManifest, options: IndexOptions) -> dict[str, Any]:
    return knn_index_body(
        manifest.output_dim,
        engine=options.engine,
        space_type=options.space_type,
        m=options.m,
        ef_construction=options.ef_construction,
        ef_search=options.ef_search,
        shards=options.shards,
        replicas=options.replicas,
        meta=index_meta(manifest, options),
        encoder=options.encoder,
        refresh_interval=options.refresh_interval,
        vector_in_source=options.vector_in_source,
    )


def gemsearch_meta(mappings: dict[str, Any]) -> dict[str, Any] | None:
    """The ``_meta.gemsearch`` block of a mapping, or None for an index gemsearch did not create."""
    meta = (mappings.get("_meta") or {}).get(META_KEY)
    return meta if isinstance(meta, dict) else None


def vector_field(mappings: dict[str, Any]) -> dict[str, Any]:
    field: dict[str, Any] = (mappings.get("properties") or {}).get(VECTOR_FIELD) or {}
    return field


def field_engine_space(field: dict[str, Any]) -> tuple[str | None, str | None]:
    """Engine and space type of a knn_vector field (k-NN may also report them outside ``method``)."""
    method = field.get("method") or {}
    return method.get("engine", field.get("engine")), method.get("space_type", field.get("space_type"))


def mismatches(state: dict[str, Any], manifest: ModelManifest, options: IndexOptions) -> list[str]:
    """Every way the index in ``state`` (one entry of ``GET /<index>``) differs from what we write."""
    problems: list[str] = []
    mappings = state.get("mappings") or {}
    knn = str((state.get("settings") or {}).get("index", {}).get("knn", "false")).lower()
    if knn != "true":
        problems.append(f"index.knn is {knn}, not true (k-NN search is disabled)")
    field = vector_field(mappings)
    if field.get("type") != "knn_vector":
        problems.append(f"field {VECTOR_FIELD!r} is {field.get('type', 'missing')}, not knn_vector")
    elif field.get("dimension") != manifest.output_dim:
        problems.append(f"dimension is {field.get('dimension')}, the model's is {manifest.output_dim}")
    engine, space = field_engine_space(field)
    if field.get("type") == "knn_vector" and engine != options.engine:
        problems.append(f"engine is {engine}, expected {options.engine}")
    if field.get("type") == "knn_vector" and space != options.space_type:
        problems.append(f"space type is {space}, expected {options.space_type}")
    meta = gemsearch_meta(mappings)
    stored = (meta or {}).get("manifest") or {}
    if meta is None:
        problems.append("its _meta has no gemsearch manifest (not created by gemsearch)")
    elif (stored.get("name"), stored.get("version")) != (manifest.name, manifest.version):
        problems.append(
            f"it holds model {stored.get('name')} version {str(stored.get('version'))[:8]}, "
            f"not {manifest.name} version {manifest.version8}"
        )
    elif meta_decode(meta) != options.decode:
        problems.append(decode_mismatch(meta_decode(meta), options.decode))
    return problems


def preflight(client: Any, index: str, manifest: ModelManifest, options: IndexOptions) -> None:
    """Raise StoreError unless ``index`` was built for exactly this model version and options."""
    try:
        response = client.indices.get(index=index)
    except TransportError as exc:
        raise store_error(exc, client, index=index) from exc
    if len(response) != 1:
        raise StoreError(f"{index} resolves to {len(response)} indices; write into one physical index")
    problems = mismatches(next(iter(response.values())), manifest, options)
    if problems:
        raise StoreError(f"refusing to write into index {index}: " + "; ".join(problems))
