"""``ServeConfig``: what ``gemsearch serve`` serves (models and their stores, image roots) and its limits.

Read from a YAML or JSON file or built from command-line flags. The app never sends the browser
anything about the cluster (URLs, credentials): it only answers with hits and images.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import ConfigError
from ..stores.factory import LocalStoreSpec, OpenSearchStoreSpec, StoreSpec
from .embed_config import EmbedApiConfig

__all__ = ["Limits", "LocalStoreSpec", "ModelSpec", "OpenSearchStoreSpec", "ServeConfig", "StoreSpec"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSpec(_Strict):
    """One exported model and the store its collection was ingested into."""

    path: Path = Field(description="the exported .onnx file")
    store: StoreSpec


class Limits(_Strict):
    """What one request may ask for; everything over it is refused with a 4xx."""

    max_upload_bytes: int = Field(16 * 2**20, gt=0, description="largest uploaded image file")
    max_pixels: int = Field(40_000_000, gt=0, description="largest width x height of an upload")
    max_k: int = Field(100, ge=1, le=10_000)
    default_k: int = Field(12, ge=1)
    max_expand: int = Field(20, ge=0, description="largest alpha-QE n (0 turns expansion off)")
    searches_per_minute: float = Field(120, ge=0, description="per client address; 0 = unlimited")
    search_burst: int = Field(
        20, ge=1, description="searches a client may make at once before the rate applies"
    )
    concurrent_searches: int = Field(4, ge=1, description="searches embedding at the same time")
    thumbnail_side: int = Field(320, ge=16, le=2048)
    max_image_file_bytes: int = Field(64 * 2**20, gt=0, description="largest stored image served")
    concurrent_images: int = Field(4, ge=1, description="image requests (thumbnails, files) at the same time")
    decode_memory_mb: int = Field(
        512, ge=64, description="memory the image decodes in flight may reserve together, in MiB"
    )
    body_timeout_s: float = Field(
        30, gt=0, description="seconds a request's body may take to arrive (else 408, connection closed)"
    )
    store_timeout_s: float = Field(
        5, gt=0, description="seconds a search or health check waits for OpenSearch (else 503)"
    )


class ServeConfig(_Strict):
    """Models (the first is the default), the folders images may be served from, limits."""

    models: tuple[ModelSpec, ...] = Field(min_length=1)
    image_roots: tuple[Path, ...] = Field(
        (), description="stored images are served only from inside these folders (none: no images)"
    )
    limits: Limits = Limits()
    embed_api: EmbedApiConfig | None = Field(
        None, description="POST /api/embed for machines (an OpenSearch connector): on when configured"
    )
    title: str = "gemsearch"
    title_field: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$",
        description="metadata field (dotted for nested) results are titled by; default: the file name",
    )

    @classmethod
    def load(cls, path: Path) -> ServeConfig:
        """Read a YAML or JSON file; relative paths in it are relative to the file's folder."""
        try:
            text = path.read_text(encoding="utf-8")
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the serve config {path}: {exc}") from exc
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid serve config {path}: {exc}") from exc
        return config.relative_to(path.parent)

    def relative_to(self, base: Path) -> ServeConfig:
        """This config with relative paths taken from ``base``."""

        def fix(p: Path) -> Path:
            return p if p.is_absolute() else base / p

        models = []
        for m in self.models:
            store = m.store
            if isinstance(store, LocalStoreSpec):
                store = store.model_copy(update={"path": fix(store.path)})
            elif store.config is not None:
                store = store.model_copy(update={"config": fix(store.config)})
            models.append(m.model_copy(update={"path": fix(m.path), "store": store}))
        embed_api = self.embed_api.relative_to(base) if self.embed_api else None
        return self.model_copy(
            update={
                "models": tuple(models),
                "image_roots": tuple(fix(r) for r in self.image_roots),
                "embed_api": embed_api,
            }
        )
