"""The least-privilege roles of a cluster with the security plugin, and what its 403 answers mean.

Three roles, each for the indices under one prefix (``<prefix>-*``) and nothing else:
``gemsearch_search`` (search, serve, count, index list: read the alias, its indices' mappings and
``_meta``; no writes), ``gemsearch_ingest`` (create and write a model version's index, move the
model's alias the first time, tune ``refresh_interval`` for the load, refresh, update and delete
documents) and ``gemsearch_admin`` (``gemsearch index create/swap-alias/drop``). docs/security.md
shows them as security REST API requests, made by ``role_body``.

The plugin names the action a role lacks ("no permissions for [indices:admin/create] and User
[name=...]"); ``denied`` turns that into one line with the gemsearch role that grants it.
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ROLES", "Role", "denied", "granting_roles", "missing_actions", "role_body"]

DOC = "docs/security.md"


class Role(BaseModel):
    """Cluster-wide actions and the actions on ``<prefix>-*`` one gemsearch role allows."""

    model_config = ConfigDict(frozen=True)

    description: str
    cluster: tuple[str, ...]
    index: tuple[str, ...]


# Found by running each command as a user holding only the role (tests/test_security.py does).
# The security plugin checks mget and bulk per index (the [shard] and [s] actions), not cluster-wide.
ROLES: dict[str, Role] = {
    "gemsearch_search": Role(
        description="gemsearch search, serve, count and index list: read-only",
        cluster=(),
        index=(
            "indices:admin/get",  # index list
            "indices:admin/mappings/get",  # the model version in _meta, the filter fields
            "indices:data/read/search*",  # search, count
            "indices:data/read/mget*",  # documents by id
        ),
    ),
    "gemsearch_ingest": Role(
        description="gemsearch ingest and delete: create and write a model version's index",
        cluster=("indices:data/read/scroll*",),  # delete --filter
        index=(
            "indices:admin/get",
            "indices:admin/mappings/get",
            "indices:admin/create",
            "indices:admin/aliases/get",
            "indices:admin/aliases",  # the first version of a model gets the model's alias
            "indices:monitor/settings/get",  # --pause-refresh
            "indices:admin/settings/update",  # --pause-refresh
            "indices:admin/refresh*",
            "indices:data/read/mget*",  # which inputs are indexed already
            "indices:data/read/search*",  # delete --filter
            "indices:data/write/bulk*",
            "indices:data/write/index",
            "indices:data/write/update",  # --update-metadata
            "indices:data/write/delete",  # gemsearch delete
        ),
    ),
    "gemsearch_admin": Role(
        description="gemsearch index create, swap-alias, drop and list (with health and size)",
        cluster=("cluster:monitor/state", "cluster:monitor/health"),  # index list's _cat/indices
        index=(
            "indices:admin/get",
            "indices:admin/mappings/get",
            "indices:admin/create",
            "indices:admin/aliases/get",
            "indices:admin/aliases",
            "indices:admin/delete",
            "indices:data/read/search*",  # swap-alias refuses an empty index
            "indices:monitor/settings/get",
            "indices:monitor/stats",
        ),
    ),
}


def role_body(name: str, prefix: str = "gemsearch") -> dict[str, Any]:
    """The body of ``PUT _plugins/_security/api/roles/<name>`` for indices under ``prefix``."""
    role = ROLES[name]
    return {
        "description": role.description,
        "cluster_permissions": list(role.cluster),
        "index_permissions": [{"index_patterns": [f"{prefix}-*"], "allowed_actions": list(role.index)}],
    }


_NO_PERMISSIONS = re.compile(r"no permissions for \[(.*?)\] and User")


def missing_actions(info: Any) -> list[str]:
    """The actions a 403 of the security plugin names ("no permissions for [a, b] and User ..."), in
    its error or in its shard failures (a refresh, a search); [] if it names none."""
    text = json.dumps(info) if isinstance(info, dict | list) else str(info or "")
    found = [a.strip() for group in _NO_PERMISSIONS.findall(text) for a in group.split(", ")]
    return list(dict.fromkeys(a for a in found if a))


def granting_roles(action: str) -> list[str]:
    """The gemsearch roles that allow ``action`` (cluster-wide or on the prefix's indices)."""
    return [
        name
        for name, role in ROLES.items()
        if any(fnmatchcase(action, allowed) for allowed in (*role.cluster, *role.index))
    ]


def denied(info: Any, url: str, who: str, index: str | None) -> str:
    """One line for a 403: the action OpenSearch named and the gemsearch role that grants it."""
    on = f" on {index}" if index else ""
    actions = missing_actions(info)
    if not actions:
        return (
            f"OpenSearch at {url} denied {who} access{on} (403, no action named): give the user the "
            f"gemsearch role for this command ({DOC})"
        )
    ungranted = [a for a in actions if not granting_roles(a)]
    common = [r for r in ROLES if all(r in granting_roles(a) for a in actions)]
    if ungranted:
        grant = f"no gemsearch role grants {', '.join(ungranted)} ({DOC}); ask the cluster's administrators"
    elif common:
        grant = f"the {_either(common)} role in {DOC} grants it on the indices of a --prefix"
    else:  # several actions that no one role holds
        needed = [r for r in ROLES if any(r in granting_roles(a) for a in actions)]
        grant = f"the roles {', '.join(needed)} in {DOC} grant them together"
    return f"OpenSearch at {url} denied {who} the action {', '.join(actions)}{on} (403): {grant}"


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
