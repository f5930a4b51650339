"""One way to open a store from a description of it: ingest, search, serve and the Python API use it.

A ``StoreSpec`` names a LocalStore folder or an OpenSearch cluster (URLs, a connection file and the
``GEMSEARCH_OPENSEARCH_*`` variables, an index prefix); ``open_store`` turns it into a VectorStore.
Writers pass ``index``/``bulk`` options; readers pass the ``model`` whose alias they search.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from ...protocols import VectorStore
    from .opensearch.bulk_models import BulkOptions
    from .opensearch.index_checks import IndexOptions

DEFAULT_STORE = Path("gemsearch-store")  # the LocalStore folder commands use when given no store


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LocalStoreSpec(_Strict):
    """A LocalStore folder."""

    kind: Literal["local"] = "local"
    path: Path = DEFAULT_STORE


class OpenSearchStoreSpec(_Strict):
    """An OpenSearch cluster; connection settings from ``config`` (a connection file), ``urls`` and the
    ``GEMSEARCH_OPENSEARCH_*`` variables."""

    kind: Literal["opensearch"] = "opensearch"
    prefix: str = Field("gemsearch", pattern=r"^[a-z0-9][a-z0-9_\-]{0,100}$")
    urls: tuple[str, ...] | None = None
    config: Path | None = Field(None, description="YAML/JSON connection file")


StoreSpec = Annotated[LocalStoreSpec | OpenSearchStoreSpec, Field(discriminator="kind")]


def open_store(
    spec: LocalStoreSpec | OpenSearchStoreSpec,
    *,
    model: str | None = None,
    read_only: bool = False,
    index: IndexOptions | None = None,
    bulk: BulkOptions | None = None,
    timeout_s: float | None = None,
) -> VectorStore:
    """The store ``spec`` describes. LocalStore: ``read_only`` opens an existing folder for searching.
    OpenSearch: ``model`` selects the alias searches read (writers call ``ensure_index`` instead);
    ``index`` and ``bulk`` set how indices are built and written (``index.prefix`` is the spec's);
    ``timeout_s`` caps the connection's timeout (a server must not hang on a paused cluster)."""
    if isinstance(spec, LocalStoreSpec):
        from .local.store import LocalStore

        return LocalStore(spec.path, read_only=read_only)
    from .opensearch.connection import OpenSearchConfig
    from .opensearch.index_checks import IndexOptions
    from .opensearch.store import OpenSearchStore

    connection = OpenSearchConfig.load(spec.config, urls=list(spec.urls) if spec.urls else None)
    if timeout_s is not None:
        connection = connection.model_copy(update={"timeout": min(connection.timeout, timeout_s)})
    options = (index or IndexOptions()).model_copy(update={"prefix": spec.prefix})
    return OpenSearchStore(model=model, options=options, bulk=bulk, config=connection)
