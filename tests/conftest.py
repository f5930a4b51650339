"""Shared fixtures. The OpenSearch node is real: started once per session by the harness.

There is no skip path: if Java, Maven or the node fails, every test that needs it errors with the
harness's message and the node's log.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opensearchpy import OpenSearch
from support.opensearch_harness import OpenSearchNode, start_node
from support.secured_fixtures import secured, secured_node  # noqa: F401  (the secured node, on demand)

_NODES: list[OpenSearchNode] = []


@pytest.fixture(scope="session")
def opensearch_node(request: pytest.FixtureRequest) -> Iterator[OpenSearchNode]:
    node = start_node()
    _NODES.append(node)
    info = node.request("GET", "/")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled():  # say in the log which real node the tests talk to
        print(
            f"\n[opensearch] started OpenSearch {info['version']['number']} at {node.url} "
            f"(pid {node.process.pid if node.process else '?'}, data in {node.workdir})",
            flush=True,
        )
    try:
        yield node
    finally:
        _NODES.remove(node)
        node.stop()


@pytest.fixture(scope="session")
def opensearch(opensearch_node: OpenSearchNode) -> Iterator[OpenSearch]:
    client = OpenSearch(hosts=[opensearch_node.url], timeout=30)
    yield client
    client.close()


@pytest.fixture
def prefix(opensearch: OpenSearch) -> Iterator[str]:
    """A fresh index prefix for one test; its indices are deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    opensearch.indices.delete(index=f"{name}-*", params={"expand_wildcards": "all"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"opensearch", "opensearch_node"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.opensearch)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """A failing test that used the node gets the node's log in its report."""
    report = yield
    if report.failed and "opensearch" in item.keywords:
        for node in _NODES:
            report.sections.append((f"OpenSearch {node.name} log (tail)", node.log_tail(60)))
    return report
