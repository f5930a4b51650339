"""Index administration: create a model version's index, list, swap an alias atomically, drop.

One physical index per model version (``<prefix>-<model>-<version8>``) and one alias per model
(``<prefix>-<model>``) that queries use. Switching a model = build the new index, then move the
alias with ONE ``_aliases`` request (remove + add), so a query never sees no index or two.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opensearchpy.exceptions import AuthorizationException, NotFoundError, RequestError, TransportError
from pydantic import BaseModel

from ....errors import StoreError
from ....manifest import ModelManifest
from .errors import store_error, translated
from .index_checks import (
    IndexOptions,
    field_engine_space,
    gemsearch_meta,
    index_body,
    preflight,
    vector_field,
)

log = logging.getLogger(__name__)

__all__ = [
    "AliasSwap",
    "IndexInfo",
    "IndexOptions",
    "bulk_load_settings",
    "drop_index",
    "ensure_index",
    "list_indices",
    "preflight",
    "swap_alias",
]

_PLAIN_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]*$")  # no wildcards, commas or _all


class IndexInfo(BaseModel):
    """One row of ``gemsearch index list``."""

    name: str
    aliases: list[str]
    model: str | None
    version: str | None
    dims: int | None
    engine: str | None
    space_type: str | None
    docs: int | None
    health: str | None
    size: str | None


@translated
def ensure_index(client: Any, manifest: ModelManifest, options: IndexOptions, *, alias: bool = True) -> str:
    """Create this model version's index (or check the existing one); returns its name.

    With ``alias``, the model's alias is created pointing here if it does not exist yet (the first
    version of a model goes live at once; later versions wait for ``swap_alias``). Existence is asked
    with GETs, not HEADs: a 403 to a HEAD has no body naming the permission the user lacks.
    """
    name = manifest.index_name(options.prefix)
    if not _index_exists(client, name):
        try:
            client.indices.create(index=name, body=index_body(manifest, options))
            log.info("created index %s (%d dims, %s)", name, manifest.output_dim, options.engine)
        except RequestError as exc:
            if exc.error != "resource_already_exists_exception":  # another worker was faster
                raise StoreError(f"cannot create index {name}: {exc.info or exc}") from exc
    preflight(client, name, manifest, options)
    alias_name = manifest.alias_name(options.prefix)
    if alias and not alias_targets(client, alias_name):
        _check_not_an_index(client, alias_name)
        client.indices.put_alias(index=name, name=alias_name)
        log.info("alias %s -> %s", alias_name, name)
    return name


def _index_exists(client: Any, name: str) -> bool:
    try:
        return name in client.indices.get(index=name)
    except NotFoundError:
        return False


def _check_not_an_index(client: Any, alias: str) -> None:
    try:  # an alias resolves to its indices, an index to itself
        state = client.indices.get(index=alias)
    except NotFoundError:
        return
    if alias in state:
        raise StoreError(f"{alias} is an index, so it cannot be used as the model's alias")


def alias_targets(client: Any, alias: str) -> list[str]:
    """The indices ``alias`` points at ([] if there is no such alias). Asked as ``/<alias>/_alias/<alias>``:
    ``/_alias/<alias>`` looks at every index, which a role limited to ``<prefix>-*`` may not."""
    try:
        return sorted(client.indices.get_alias(index=alias, name=alias))
    except NotFoundError:
        return []


class AliasSwap(BaseModel):
    alias: str
    index: str
    previous: list[str]


@translated
def swap_alias(client: Any, index: str, alias: str | None = None, *, force: bool = False) -> AliasSwap:
    """Point ``alias`` (default: the one in the index's ``_meta``) at ``index`` only, atomically.

    Reports the indices the alias pointed to before. Refuses to move a model's alias onto an index
    of another model, onto an index gemsearch did not create, or onto an empty one, unless ``force``.
    """
    meta = _index_meta(client, index, required=not force)
    alias = alias or (meta or {}).get("alias")
    if not alias:
        raise StoreError(f"index {index} names no alias in its _meta; give the alias explicitly")
    if not force and meta is not None and meta.get("alias") != alias:
        raise StoreError(
            f"index {index} serves alias {meta.get('alias')}, not {alias} (use force=True to override)"
        )
    if not force and int(client.count(index=index)["count"]) == 0:
        raise StoreError(
            f"index {index} is empty: queries through {alias} would find nothing (use force=True)"
        )
    _check_not_an_index(client, alias)
    before = alias_targets(client, alias)
    actions: list[dict[str, Any]] = [{"remove": {"index": i, "alias": alias}} for i in before if i != index]
    actions.append({"add": {"index": index, "alias": alias}})
    client.indices.update_aliases(body={"actions": actions})  # one request: atomic
    log.info("alias %s: %s -> %s", alias, before or "(none)", index)
    return AliasSwap(alias=alias, index=index, previous=before)


def _index_meta(client: Any, index: str, *, required: bool) -> dict[str, Any] | None:
    """The ``_meta.gemsearch`` of the physical index ``index`` (StoreError if it is missing)."""
    _plain(index)
    try:
        state = client.indices.get(index=index)
    except NotFoundError as exc:
        raise store_error(exc, client, index=index) from exc
    if index not in state:
        raise StoreError(f"{index} is an alias; name the physical index")
    meta = gemsearch_meta(state[index].get("mappings") or {})
    if meta is None and required:
        raise StoreError(f"index {index} was not created by gemsearch (no _meta.gemsearch); use force=True")
    return meta


@translated
def drop_index(client: Any, index: str, *, force: bool = False) -> None:
    """Delete a gemsearch index; refuses one an alias still serves, or a foreign one, unless ``force``."""
    _index_meta(client, index, required=not force)
    if not force:
        serving = sorted((client.indices.get_alias(index=index).get(index) or {}).get("aliases", {}))
        if serving:
            raise StoreError(
                f"index {index} still serves alias {', '.join(serving)}; "
                "swap it first or drop with force=True"
            )
    try:
        client.indices.delete(index=index, params={"expand_wildcards": "none"})
    except NotFoundError as exc:
        raise store_error(exc, client, index=index) from exc
    log.info("dropped index %s", index)


def _plain(index: str) -> None:
    if not _PLAIN_NAME.match(index):
        raise StoreError(f"{index!r} is not a single index name (no wildcards, commas or _all)")


@translated
def list_indices(client: Any, prefix: str = "gemsearch") -> list[IndexInfo]:
    """The indices named ``<prefix>-*`` with their model, vector field, aliases and size."""
    pattern = f"{prefix}-*"
    states = client.indices.get(index=pattern, params={"allow_no_indices": "true"})
    try:
        cat = {row["index"]: row for row in client.cat.indices(index=pattern, format="json")}
    except AuthorizationException:  # _cat needs cluster monitor rights a search role has not: count instead
        cat = {name: {"docs.count": client.count(index=name)["count"]} for name in states}
    return [_info(name, states[name], cat.get(name, {})) for name in sorted(states)]


def _info(name: str, state: dict[str, Any], cat: dict[str, Any]) -> IndexInfo:
    mappings = state.get("mappings") or {}
    manifest = (gemsearch_meta(mappings) or {}).get("manifest") or {}
    field = vector_field(mappings)
    engine, space = field_engine_space(field)
    docs = cat.get("docs.count")
    return IndexInfo(
        name=name,
        aliases=sorted(state.get("aliases") or {}),
        model=manifest.get("name"),
        version=manifest.get("version"),
        dims=field.get("dimension"),
        engine=engine,
        space_type=space,
        docs=int(docs) if docs is not None else None,
        health=cat.get("health"),
        size=cat.get("store.size"),
    )


@contextmanager
def bulk_load_settings(client: Any, index: str, refresh_interval: str = "-1") -> Iterator[None]:
    """Turn periodic refreshes off while bulk loading, and restore the old value, even on error.

    Not for several concurrent writers of one index: the second would save the first one's -1.
    """
    try:
        settings: dict[str, Any] = client.indices.get_settings(index=index, name="index.refresh_interval")
        state: dict[str, Any] = next(iter(settings.values()), {})
        old = state.get("settings", {}).get("index", {}).get("refresh_interval")
        client.indices.put_settings(index=index, body={"index": {"refresh_interval": refresh_interval}})
    except TransportError as exc:
        raise store_error(exc, client, index=index) from exc
    try:
        yield
    finally:
        _restore_refresh(client, index, old)


def _restore_refresh(client: Any, index: str, old: str | None, tries: int = 5) -> None:
    for attempt in range(1, tries + 1):
        try:  # None (the default was in force) is restored as null, which resets it
            client.indices.put_settings(index=index, body={"index": {"refresh_interval": old}})
            return
        except TransportError as exc:
            log.warning("restoring refresh_interval of %s failed (try %d): %s", index, attempt, exc)
            time.sleep(min(2.0**attempt, 10.0))
    log.error(
        "refresh_interval of %s is still -1; restore it with PUT /%s/_settings "
        '{"index": {"refresh_interval": %s}}',
        index,
        index,
        f'"{old}"' if old else "null",
    )
