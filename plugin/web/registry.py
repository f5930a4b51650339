"""The models a server answers with: each one's embedder and store, opened once at start-up."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from ...errors import ConfigError, NoIndexError, StoreError
from ...protocols import VectorStore
from ..inputs.images import ImageLoadConfig
from ..query import Searcher
from ..stores.factory import LocalStoreSpec, open_store
from .config import ModelSpec, ServeConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSlot:
    """One model as the server offers it: ``index`` names its store (an alias or a folder name)."""

    searcher: Searcher
    store_kind: Literal["local", "opensearch"]
    index: str

    @property
    def name(self) -> str:
        return self.searcher.name

    def documents(self) -> int | None:
        """Documents in the store, or None when it cannot be reached."""
        return self.state()[0]

    def state(self) -> tuple[int | None, str | None]:
        """(documents, None), or (None, what is wrong, fit for clients: no cluster address)."""
        try:
            return self.searcher.store.count(), None
        except NoIndexError as exc:
            log.warning("model %s: %s", self.name, exc)
            return None, exc.hint
        except StoreError as exc:
            log.warning("model %s: cannot count documents: %s", self.name, exc)
            return None, "the search backend cannot be reached"


class ModelRegistry:
    """Model name -> slot; the first model is the default."""

    def __init__(self, slots: Sequence[ModelSlot]) -> None:
        if not slots:
            raise ConfigError("serve needs at least one model")
        self._slots: dict[str, ModelSlot] = {}
        for slot in slots:
            if slot.name in self._slots:
                raise ConfigError(f"two models are named {slot.name!r}; each model name may be served once")
            self._slots[slot.name] = slot
        self.default = slots[0].name

    @classmethod
    def from_config(cls, config: ServeConfig, image_config: ImageLoadConfig) -> ModelRegistry:
        slots = [_open(spec, image_config, config.limits.store_timeout_s) for spec in config.models]
        return cls(slots)

    def get(self, name: str | None) -> ModelSlot | None:
        return self._slots.get(name or self.default)

    def __iter__(self) -> Iterator[ModelSlot]:
        return iter(self._slots.values())

    def close(self) -> None:
        for slot in self:
            slot.searcher.store.close()


def _open(spec: ModelSpec, image_config: ImageLoadConfig, timeout_s: float) -> ModelSlot:
    from ..embedding.embedder import OnnxEmbedder

    embedder = OnnxEmbedder(spec.path)
    store, kind, index = _store(spec, embedder.manifest.name, timeout_s)
    searcher = Searcher(embedder, store, image_config=image_config)
    log.info("serving model %s@%s from %s %s", searcher.name, embedder.manifest.version8, kind, index)
    return ModelSlot(searcher=searcher, store_kind=kind, index=index)


def _store(
    spec: ModelSpec, model: str, timeout_s: float
) -> tuple[VectorStore, Literal["local", "opensearch"], str]:
    if isinstance(spec.store, LocalStoreSpec):
        return open_store(spec.store, read_only=True), "local", spec.store.path.name
    from ..stores.opensearch.bulk_models import BulkOptions, RetryPolicy

    # a search request must not hang for minutes on reads that ingest would rather keep retrying,
    # nor a paused cluster hold a worker for the connection's timeout (30 s by default)
    reads = BulkOptions(
        retry=RetryPolicy(max_attempts=2, initial_backoff_s=0.1, max_backoff_s=0.5, max_total_s=2)
    )
    store = open_store(spec.store, model=model, bulk=reads, timeout_s=timeout_s)
    return store, "opensearch", f"{spec.store.prefix}-{model}"
