"""A real node with the security plugin: HTTPS with the plugin's demo certificates, basic auth, the
security REST API to make roles and users, and the roles of docs/security.md read from the doc itself
(so the documented JSON is what the tests apply).

``prepare_secured()`` builds the home once (the k-NN home + ``opensearch-security``, configured by
the plugin's ``install_demo_configuration.sh``); ``start_secured_node()`` starts a node of it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .opensearch_harness import (
    HarnessError,
    NodeAccess,
    OpenSearchNode,
    _run,
    prepare_variant,
    start_node,
)

TAG = "security"
ADMIN = "admin"
# the demo configuration hashes this into the node home; only ever used on 127.0.0.1
ADMIN_PASSWORD = "Vq7#kestrel-Lumen92"
SETTINGS_FILE = "gemsearch-security.json"  # the security settings the demo script wrote
SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
# the node's certificate files, in its config folder
ROOT_CA = "root-ca.pem"
ADMIN_CERT, ADMIN_KEY = "kirk.pem", "kirk-key.pem"


def configure_security(home: Path, java_home: Path) -> None:
    """Run the plugin's demo configuration (certificates, internal users, ``opensearch.yml``) and keep
    its ``plugins.security.*`` settings aside: the harness writes each node's ``opensearch.yml`` anew."""
    script = home / "plugins" / "opensearch-security" / "tools" / "install_demo_configuration.sh"
    script.chmod(0o755)
    env = {
        **os.environ,
        "JAVA_HOME": str(java_home),
        "OPENSEARCH_HOME": str(home),
        "OPENSEARCH_INITIAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    _run(["bash", str(script), "-y", "-i", "-s"], "the security plugin's demo configuration", env=env)
    written = yaml.safe_load((home / "config" / "opensearch.yml").read_text()) or {}
    settings = {k: v for k, v in written.items() if k.startswith("plugins.security.")}
    if not settings or not (home / "config" / ROOT_CA).is_file():
        raise HarnessError(f"the demo configuration wrote no security settings or no {ROOT_CA} in {home}")
    (home / "config" / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))


def prepare_secured() -> Path:
    return prepare_variant(TAG, ["opensearch-security"], configure=configure_security)


def start_secured_node() -> OpenSearchNode:
    """A single node answering HTTPS (the demo CA) that asks every request for credentials."""
    home = prepare_secured()
    settings: dict[str, Any] = json.loads((home / "config" / SETTINGS_FILE).read_text())
    settings["plugins.security.audit.type"] = "noop"  # no audit index: less work for a test node
    access = NodeAccess(scheme="https", ca_certs=home / "config" / ROOT_CA, auth=(ADMIN, ADMIN_PASSWORD))
    return start_node(home=home, settings=settings, access=access)


def config_file(node: OpenSearchNode, name: str) -> Path:
    """A file of the node's configuration folder (certificates), as the prepared home holds it."""
    return node.home / "config" / name


def security_api(node: OpenSearchNode, method: str, path: str, body: Any = None) -> Any:
    """A call to ``_plugins/_security/api/...`` as the admin; the plugin's message on failure."""
    try:
        return node.request(method, f"/_plugins/_security/api/{path}", body)
    except urllib.error.HTTPError as exc:
        raise HarnessError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from exc


def put_role(node: OpenSearchNode, name: str, body: dict[str, Any]) -> None:
    security_api(node, "PUT", f"roles/{name}", body)


def put_user(node: OpenSearchNode, name: str, password: str, roles: list[str]) -> None:
    """An internal user whose roles are given directly (no role mapping needed)."""
    security_api(
        node, "PUT", f"internalusers/{name}", {"password": password, "opendistro_security_roles": roles}
    )


_REQUEST = re.compile(r"```[a-z]*\nPUT (_plugins/_security/api/roles/[\w-]+)\n(\{.*?\n\})\n```", re.S)


def documented_roles(doc: Path = SECURITY_DOC) -> dict[str, dict[str, Any]]:
    """role name -> body of each ``PUT _plugins/_security/api/roles/<name>`` block in the doc."""
    roles = {path.rsplit("/", 1)[1]: json.loads(body) for path, body in _REQUEST.findall(doc.read_text())}
    if not roles:
        raise HarnessError(f"{doc} holds no PUT _plugins/_security/api/roles/... blocks")
    return roles


def with_prefix(role: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A documented role (written for the default prefix ``gemsearch``) for another prefix."""
    text = json.dumps(role).replace('"gemsearch-*"', json.dumps(f"{prefix}-*"))
    result: dict[str, Any] = json.loads(text)
    return result


@dataclass
class SecuredCluster:
    """A secured node with one user per gemsearch role (the roles for indices under ``prefix``)."""

    node: OpenSearchNode
    prefix: str
    passwords: dict[str, str]  # user -> password; the users are named after their roles

    @property
    def ca(self) -> Path:
        return config_file(self.node, ROOT_CA)

    def env(self, user: str | None, *, ca: bool = True, password: str | None = None) -> dict[str, str]:
        """``GEMSEARCH_OPENSEARCH_*`` for ``user`` (its own password unless one is given)."""
        env = {"GEMSEARCH_OPENSEARCH_URL": self.node.url}
        if ca:
            env["GEMSEARCH_OPENSEARCH_CA_CERTS"] = str(self.ca)
        if user is not None:
            env["GEMSEARCH_OPENSEARCH_USER"] = user
            env["GEMSEARCH_OPENSEARCH_PASSWORD"] = password or self.passwords[user]
        return env


def secured_cluster(node: OpenSearchNode, prefix: str) -> SecuredCluster:
    """Make the gemsearch roles for ``prefix`` and a user holding each one alone (named like it)."""
    from gemsearch.plugin.stores.opensearch.permissions import ROLES, role_body

    passwords = {}
    for name in ROLES:
        put_role(node, name, role_body(name, prefix))
        passwords[name] = f"{secrets.token_urlsafe(12)}#Qz7"
        put_user(node, name, passwords[name], [name])
    return SecuredCluster(node, prefix, passwords)
