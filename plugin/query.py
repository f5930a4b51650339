"""Crop-and-search: an image (or a region of it, or an indexed document) in, ranked hits out.

Works on any VectorStore (``LocalStore`` or ``OpenSearchStore``): filters go to the store, which
applies them inside the k-NN search (candidates are selected before ranking, never a thinned-out
top-k). ``Searcher`` keeps the model and the store open for repeated queries and times each step;
``search`` and ``search_by_id`` are one-call conveniences.

Alpha query expansion (alpha-QE, Radenović et al.): the query descriptor ``q`` is replaced by
``L2N(q + sum_i max(0, q.x_i)^alpha x_i)`` over the top-``n`` results ``x_i`` of the first search,
and the store is searched again with it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, ModelError, StoreError
from ..manifest import ModelManifest
from ..models_cache import models_dir as models_dir
from ..models_cache import resolve_model as resolve_model
from ..preprocess import Box, DecodeMode, decode_mismatch
from ..protocols import FloatRows, Hit, VectorStore
from .inputs.images import ImageLoadConfig, ScaledImage, load_image, load_image_bytes, read_image_file
from .query_checks import check_box, check_filters, check_k, condition_kinds

log = logging.getLogger(__name__)

ImageInput = Image.Image | bytes | str | os.PathLike[str]
"""A query image: a PIL image, the bytes of an image file, or its path."""


class NoSuchDocument(ConfigError):
    """A search by id names a document the store does not hold (a 404 over HTTP)."""


class QueryEmbedder(Protocol):
    """What a query needs of an embedder (``OnnxEmbedder`` has it)."""

    @property
    def manifest(self) -> ModelManifest: ...

    @property
    def decode(self) -> DecodeMode:
        """How it decodes JPEG files (the store must hold descriptors decoded the same way)."""
        ...

    def decode_bytes(self, data: bytes, config: ImageLoadConfig | None = None, name: str = "") -> ScaledImage:
        """Image file bytes decoded in its ``decode`` mode."""
        ...

    def embed_image(self, image: Image.Image | ScaledImage, crop: Box | None = None) -> FloatRows:
        """``(d,)`` descriptor of ``image``, or of the region ``crop`` cut from it."""
        ...


class QueryExpansion(BaseModel):
    """Alpha-QE: re-query with the query plus its top ``n`` results weighted by similarity^alpha."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(2, ge=1, le=100, description="top results averaged into the new query")
    alpha: float = Field(3.0, ge=0, le=100, description="weight of a result = similarity ** alpha")


Expand = QueryExpansion | int | bool | None
"""``None``/``False``: no expansion; ``True``: the defaults; an int: that ``n``; or a QueryExpansion."""


class Timings(BaseModel):
    """Milliseconds spent in each step of one query (``expand`` includes its second k-NN)."""

    decode_ms: float = 0.0
    embed_ms: float = 0.0
    knn_ms: float = 0.0
    expand_ms: float = 0.0


class SearchResult(BaseModel):
    """Ranked hits (best first) of one query, with the model that answered and the time it took."""

    model: str
    k: int
    hits: list[Hit]
    timings: Timings = Field(default_factory=Timings)
    unknown_filter_fields: list[str] = Field(
        default_factory=list,
        description="filter fields that no document has (the filter matches nothing); checked when "
        "a filtered search found nothing",
    )
    filter_warnings: list[str] = Field(
        default_factory=list,
        description="filters that compare with values of a kind their field does not hold (a numeric "
        "range on a text field, say), so they match nothing; checked when a filtered search found nothing",
    )


def expansion(expand: Expand) -> QueryExpansion | None:
    """The QueryExpansion that ``expand`` stands for (None: no expansion)."""
    if expand is None or expand is False:
        return None
    if expand is True:
        return QueryExpansion()
    if isinstance(expand, QueryExpansion):
        return expand
    if isinstance(expand, int):
        return QueryExpansion(n=expand)
    raise ConfigError(f"expand must be None, a bool, an int or a QueryExpansion, got {expand!r}")


def alpha_qe(query: FloatRows, neighbours: FloatRows, alpha: float) -> FloatRows:
    """The expanded query ``(d,)`` from the query ``(d,)`` and its top results ``(n, d)``.

    The query keeps weight 1 (its similarity to itself); results dissimilar to it (negative inner
    product) get weight 0.
    """
    q = np.asarray(query, dtype=np.float32).ravel()
    x = np.asarray(neighbours, dtype=np.float32).reshape(-1, q.shape[0])
    weights = np.clip(x @ q, 0.0, None) ** np.float32(alpha)
    v = q + weights @ x
    norm = float(np.linalg.norm(v))
    return (v / norm if norm > 0 else q).astype(np.float32)


class Searcher:
    """Queries one model's store: images, regions of images, vectors or indexed document ids.

    ``image_config`` bounds what image bytes and files are decoded (bytes, pixels, formats).
    """

    def __init__(
        self, embedder: QueryEmbedder, store: VectorStore, *, image_config: ImageLoadConfig | None = None
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.image_config = image_config or ImageLoadConfig()
        _check_same_model(embedder.manifest, store, embedder.decode)

    @property
    def manifest(self) -> ModelManifest:
        return self.embedder.manifest

    @property
    def name(self) -> str:
        return self.embedder.manifest.name

    def search(
        self,
        image: ImageInput,
        crop: Box | None = None,
        k: int = 10,
        filters: Mapping[str, Any] | None = None,
        expand: Expand = None,
    ) -> SearchResult:
        """The ``k`` nearest documents to ``image``, or to its region ``crop`` = ``(x1, y1, x2, y2)`` in
        pixels of the full (upright) image; the region is cut before shrinking, as in evaluation."""
        k, checked, qe = check_k(k), check_filters(filters), expansion(expand)
        start = time.perf_counter()
        scaled = self._decode_scaled(image)
        box = check_box(crop, scaled.full_size) if crop is not None else None
        decoded = time.perf_counter()
        vector = np.asarray(self.embedder.embed_image(scaled, crop=box), dtype=np.float32)
        embedded = time.perf_counter()
        result = self._ranked(vector, k, checked, qe)
        result.timings.decode_ms = (decoded - start) * 1e3
        result.timings.embed_ms = (embedded - decoded) * 1e3
        return result

    def search_vector(
        self,
        vector: FloatRows,
        k: int = 10,
        filters: Mapping[str, Any] | None = None,
        expand: Expand = None,
    ) -> SearchResult:
        """The ``k`` nearest documents to a descriptor ``(d,)`` of this model."""
        query = np.asarray(vector, dtype=np.float32).ravel()
        if query.shape[0] != self.manifest.output_dim:
            raise ConfigError(
                f"the vector has {query.shape[0]} dims, model {self.name} {self.manifest.output_dim}"
            )
        return self._ranked(query, check_k(k), check_filters(filters), expansion(expand))

    def search_by_id(
        self,
        doc_id: str,
        k: int = 10,
        filters: Mapping[str, Any] | None = None,
        expand: Expand = None,
        *,
        include_self: bool = False,
    ) -> SearchResult:
        """The ``k`` nearest documents to the indexed document ``doc_id`` (itself left out unless
        ``include_self``); NoSuchDocument (a ConfigError) when the store does not hold it."""
        k, checked, qe = check_k(k), check_filters(filters), expansion(expand)
        record = self.store.get(doc_id)
        if record is None:
            raise NoSuchDocument(f"no document {doc_id!r} in the store of model {self.name}")
        result = self._ranked(np.asarray(record.vector, dtype=np.float32), k + 1, checked, qe)
        if not include_self:
            result.hits = [h for h in result.hits if h.id != doc_id]
        result.hits = result.hits[:k]
        result.k = k
        return result

    def decode(self, image: ImageInput) -> Image.Image:
        """An upright RGB PIL image from any ``ImageInput`` (bytes and files within ``image_config``)."""
        if isinstance(image, Image.Image):
            return image if image.mode == "RGB" else image.convert("RGB")
        if isinstance(image, bytes):
            return load_image_bytes(image, self.image_config, "the image")
        return load_image(image, self.image_config)

    def _decode_scaled(self, image: ImageInput) -> ScaledImage:
        """As ``decode``, JPEG files and bytes in the embedder's decode mode (possibly reduced)."""
        if isinstance(image, Image.Image):
            return ScaledImage(self.decode(image), image.size)
        if isinstance(image, bytes):
            return self.embedder.decode_bytes(image, self.image_config, "the image")
        data = read_image_file(image, self.image_config)
        return self.embedder.decode_bytes(data, self.image_config, str(image))

    def _ranked(
        self, vector: FloatRows, k: int, filters: dict[str, Any] | None, qe: QueryExpansion | None
    ) -> SearchResult:
        start = time.perf_counter()
        hits = self.store.search(vector, k=max(k, qe.n) if qe else k, filters=filters)
        searched = time.perf_counter()
        timings = Timings(knn_ms=(searched - start) * 1e3)
        if qe is not None and hits:
            expanded = alpha_qe(vector, self._vectors([h.id for h in hits[: qe.n]]), qe.alpha)
            hits = self.store.search(expanded, k=k, filters=filters)
            timings.expand_ms = (time.perf_counter() - searched) * 1e3
        result = SearchResult(model=self.name, k=k, hits=hits[:k], timings=timings)
        if filters and not hits:
            result.unknown_filter_fields = unknown_filter_fields(self.store, list(filters))
            result.filter_warnings = filter_warnings(self.store, filters)
        return result

    def _vectors(self, ids: list[str]) -> FloatRows:
        rows = []
        for doc_id in ids:
            record = self.store.get(doc_id)
            if record is None:  # deleted between the search and now: leave it out
                continue
            rows.append(np.asarray(record.vector, dtype=np.float32).ravel())
        return np.stack(rows) if rows else np.zeros((0, self.manifest.output_dim), np.float32)


def unknown_filter_fields(store: VectorStore, fields: list[str]) -> list[str]:
    """Those of ``fields`` that no document of ``store`` has; empty when the store cannot tell now."""
    if not fields:
        return []
    try:
        known = store.known_fields(fields)
    except (StoreError, sqlite3.Error, OSError) as exc:  # only a hint
        log.info("cannot tell which filter fields the store knows: %s", str(exc).splitlines()[0])
        return []
    return [field for field in fields if field not in known]


def filter_warnings(store: VectorStore, filters: Mapping[str, Any]) -> list[str]:
    """One line per filter whose values are of no kind its field holds (it matches nothing), e.g.
    "the field 'photo' holds only text, so the numeric range matches nothing"; empty when the
    store cannot tell now. Fields no document has are ``unknown_filter_fields``' business."""
    try:
        kinds = store.metadata_fields()
    except (StoreError, sqlite3.Error, OSError) as exc:  # only a hint
        log.info("cannot tell the kinds of the filter fields: %s", str(exc).splitlines()[0])
        return []
    lines = []
    for field, condition in filters.items():
        held = kinds.get(field)
        wanted = condition_kinds(condition)
        if held and not wanted & set(held):
            what = "range" if isinstance(condition, Mapping) else "value" if len(wanted) == 1 else "values"
            wanted_text = " or ".join(sorted(_KIND_WORDS[k] for k in wanted))
            lines.append(
                f"the field {field!r} holds only {' and '.join(held)} values, so the {wanted_text} {what} "
                "matches nothing"
            )
    return lines


_KIND_WORDS = {"number": "numeric", "text": "text", "boolean": "boolean"}


def _check_same_model(manifest: ModelManifest, store: VectorStore, decode: DecodeMode) -> None:
    """Refuse a store made for another model or decode mode (when the store knows or can tell)."""
    theirs = store.manifest
    if theirs is None:
        _check_alias_versions(manifest, store, decode)
    if store.decode is not None and store.decode != decode:
        raise ModelError(f"the store cannot be searched so: {decode_mismatch(store.decode, decode)}")
    same = isinstance(theirs, ModelManifest) and theirs.version == manifest.version
    if isinstance(theirs, ModelManifest) and not (same and theirs.name == manifest.name):
        raise ModelError(
            f"the store was built with model {theirs.name}@{theirs.version8}, "
            f"the query model is {manifest.name}@{manifest.version8}: descriptors would not compare"
        )


def _check_alias_versions(manifest: ModelManifest, store: VectorStore, decode: DecodeMode) -> None:
    """An OpenSearch alias may have been moved to another model version: compare the ``_meta`` of the
    indices it points at. A cluster that cannot be asked now is checked by the searches themselves."""
    from opensearchpy.exceptions import AuthorizationException, TransportError

    from .stores.opensearch.errors import store_error
    from .stores.opensearch.index_checks import gemsearch_meta, meta_decode
    from .stores.opensearch.store import OpenSearchStore

    if not isinstance(store, OpenSearchStore):
        return
    try:
        mappings = store.client.indices.get_mapping(index=store.read_target)
    except AuthorizationException as exc:  # a role that may search but not read the mappings: say so
        raise store_error(exc, store.client, index=store.read_target) from exc
    except (TransportError, StoreError) as exc:
        # one line, at INFO: the search that follows reports an unreachable cluster or a missing alias
        log.info("cannot read the model version behind %s: %s", store.read_target, str(exc).splitlines()[0])
        return
    for index, body in mappings.items():
        meta = gemsearch_meta(body.get("mappings") or {}) or {}
        version = (meta.get("manifest") or {}).get("version")
        if version is not None and version != manifest.version:
            raise ModelError(
                f"{store.read_target} serves index {index} of model version {version[:8]}, the query model "
                f"is {manifest.name}@{manifest.version8}: descriptors would not compare (export or pass the "
                "model that index was built with)"
            )
        if meta and meta_decode(meta) != decode:
            raise ModelError(
                f"{store.read_target} serves index {index}: {decode_mismatch(meta_decode(meta), decode)}"
            )


# ----------------------------------------------------------------------------- one-call API


@lru_cache(maxsize=8)
def _cached_embedder(path: str, mtime_ns: int, size: int, decode: DecodeMode) -> QueryEmbedder:
    from .embedding.embedder import OnnxEmbedder

    return OnnxEmbedder(path, decode=decode)


def open_model(
    model: str | os.PathLike[str] | QueryEmbedder, decode: DecodeMode | None = None
) -> QueryEmbedder:
    """An embedder for an ONNX file or model name (kept open: the next call with the file reuses it),
    decoding JPEGs in ``decode`` mode (default: ``default_decode()``)."""
    if not isinstance(model, (str, os.PathLike)):
        return model
    from .embedding.embedder import default_decode

    path = resolve_model(model).resolve()
    st = path.stat()
    return _cached_embedder(str(path), st.st_mtime_ns, st.st_size, decode or default_decode())


def searchable_store(
    store: VectorStore | str | os.PathLike[str] | None, manifest: ModelManifest
) -> VectorStore:
    """``store`` itself, a read-only LocalStore for a folder, or (None) the model's OpenSearch alias
    with the connection from ``GEMSEARCH_OPENSEARCH_*``."""
    from .stores.factory import LocalStoreSpec, OpenSearchStoreSpec
    from .stores.factory import open_store as open_spec

    if store is None:
        return open_spec(OpenSearchStoreSpec(), model=manifest.name)
    if isinstance(store, (str, os.PathLike)):
        return open_spec(LocalStoreSpec(path=Path(store)), read_only=True)
    return store


def search(
    image: ImageInput,
    crop: Box | None = None,
    k: int = 10,
    *,
    model: str | os.PathLike[str] | QueryEmbedder,
    store: VectorStore | str | os.PathLike[str] | None = None,
    filters: Mapping[str, Any] | None = None,
    expand: Expand = None,
) -> list[Hit]:
    """Ranked hits for ``image`` (or its region ``crop`` = ``(x1, y1, x2, y2)``), best first.

    ``model``: an ONNX file or an embedder; ``store``: a VectorStore, a LocalStore folder, or None for
    the model's alias in OpenSearch (connection from ``GEMSEARCH_OPENSEARCH_*``).
    """
    embedder = open_model(model)
    opened = searchable_store(store, embedder.manifest)
    try:
        return Searcher(embedder, opened).search(image, crop, k, filters, expand).hits
    finally:
        _close_if_opened(opened, store)


def search_by_id(
    doc_id: str,
    k: int = 10,
    *,
    model: str | os.PathLike[str] | QueryEmbedder,
    store: VectorStore | str | os.PathLike[str] | None = None,
    filters: Mapping[str, Any] | None = None,
    expand: Expand = None,
    include_self: bool = False,
) -> list[Hit]:
    """Ranked hits for the document ``doc_id`` already in the store (itself left out by default)."""
    embedder = open_model(model)
    opened = searchable_store(store, embedder.manifest)
    try:
        searcher = Searcher(embedder, opened)
        return searcher.search_by_id(doc_id, k, filters, expand, include_self=include_self).hits
    finally:
        _close_if_opened(opened, store)


def _close_if_opened(opened: VectorStore, given: object) -> None:
    if opened is given:
        return
    try:
        opened.close()
    except StoreError as exc:  # closing a read-only handle; the query itself succeeded
        log.warning("closing the store failed: %s", exc)
