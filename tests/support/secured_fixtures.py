"""Session fixtures of the secured node: started once, only by the tests that ask for it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from .opensearch_harness import OpenSearchNode
from .secured_node import SecuredCluster, secured_cluster, start_secured_node


@pytest.fixture(scope="session")
def secured_node() -> Iterator[OpenSearchNode]:
    node = start_secured_node()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def secured(secured_node: OpenSearchNode) -> SecuredCluster:
    """The gemsearch roles for one prefix and a user per role (named after it)."""
    return secured_cluster(secured_node, f"s{uuid.uuid4().hex[:8]}")
