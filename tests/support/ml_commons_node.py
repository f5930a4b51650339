"""An OpenSearch node with ml-commons (and the job scheduler it needs) for the remote-model tests.

Built by the harness as the ``ml`` variant of the k-NN home (both plugin zips from Maven Central),
started with the settings that let a one-node cluster call a connector on 127.0.0.1 and a 1 GB heap
(ml-commons does not start in the default 512 MB). Only tests that ask for its ``ml_node`` start it.

By hand::

    python tests/support/ml_commons_node.py    # prints the node's URL; Ctrl-C stops it
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

if __name__ == "__main__":  # run by hand: import the harness as the tests do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.opensearch_harness import HarnessError, OpenSearchNode, prepare_variant, start_node

ML_PLUGINS = ("opensearch-job-scheduler", "opensearch-ml-plugin")
ML_HEAP = "1g"
# a connector may only call endpoints that match this; the tests' servers listen on 127.0.0.1
TRUSTED_ENDPOINTS = [r"^http://127\.0\.0\.1:[0-9]+/.*$"]
ML_SETTINGS: dict[str, Any] = {
    "plugins.ml_commons.only_run_on_ml_node": False,  # one node: it is the ML node too
    "plugins.ml_commons.connector.private_ip_enabled": True,  # connectors to 127.0.0.1
    "plugins.ml_commons.trusted_connector_endpoints_regex": TRUSTED_ENDPOINTS,
    # the memory circuit breakers compare against the busy test machine, not the model (remote)
    "plugins.ml_commons.native_memory_threshold": 100,
    "plugins.ml_commons.jvm_heap_memory_threshold": 100,
}


def prepare_ml_home() -> Path:
    return prepare_variant("ml", list(ML_PLUGINS))


def start_ml_node() -> OpenSearchNode:
    """A started one-node cluster with k-NN, the job scheduler and ml-commons."""
    node = start_node(home=prepare_ml_home(), heap=ML_HEAP, settings=ML_SETTINGS)
    plugins = {row["component"] for row in node.request("GET", "/_cat/plugins?format=json")}
    missing = {"opensearch-knn", "opensearch-job-scheduler", "opensearch-ml"} - plugins
    if missing:
        log = node.log_tail()
        node.stop()
        raise HarnessError(f"the ml node lacks the plugins {sorted(missing)}; its log:\n{log}")
    return node


@contextmanager
def running_ml_node() -> Iterator[OpenSearchNode]:
    """A node with ml-commons while the block runs; a failing test that used it gets its log."""
    from conftest import _NODES  # the node list whose logs go into failing tests' reports

    node = start_ml_node()
    _NODES.append(node)
    try:
        yield node
    finally:
        _NODES.remove(node)
        node.stop()


@pytest.fixture(scope="session")
def ml_node() -> Iterator[OpenSearchNode]:
    """The ml-commons node for the session (a test module asks for it with
    ``pytest_plugins = ["support.ml_commons_node"]``)."""
    with running_ml_node() as node:
        yield node


def main() -> int:
    try:
        node = start_ml_node()
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{node.url}  (log: {node.log_path})", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
