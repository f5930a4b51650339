"""The test harness itself: clear failures, and the 2-node cluster used by failure tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from opensearchpy import OpenSearch
from support.opensearch_harness import (
    DEFAULT_VERSION,
    HarnessError,
    _fetch_artifacts,
    _new_node,
    find_java,
    prepare,
    start_cluster,
)


def test_missing_java_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HarnessError, match="Java not found"):
        find_java("2.19.1", search_dirs=[tmp_path])


def test_java_for_3x_needs_21_or_newer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "jdk-17"
    fake.mkdir()
    (fake / "release").write_text('JAVA_VERSION="17.0.15"\n')
    monkeypatch.setenv("JAVA_HOME", str(fake))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_java("2.19.1", search_dirs=[]) == fake
    with pytest.raises(HarnessError, match=r"needs a JDK 21-or newer"):
        find_java("3.5.0", search_dirs=[])


def test_maven_failure_is_reported(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="Maven failure"):
        _fetch_artifacts("0.0.0-does-not-exist", tmp_path / "artifacts")


def test_node_that_does_not_come_up_reports_its_log() -> None:
    node = _new_node("node-bad", prepare(DEFAULT_VERSION), {"gemsearch.no.such.setting": 1})
    node.start(find_java())
    try:
        with pytest.raises(HarnessError, match=r"(?s)exited.*unknown setting \[gemsearch.no.such.setting\]"):
            node.wait_ready(timeout=120)
    finally:
        node.stop()
    assert not node.workdir.exists()


@pytest.mark.slow
def test_two_node_cluster_replicates() -> None:
    nodes = start_cluster(2)
    try:
        client = OpenSearch(hosts=[nodes[0].url], timeout=30)
        assert client.cluster.health()["number_of_nodes"] == 2
        client.indices.create(
            index="replicated", body={"settings": {"number_of_shards": 1, "number_of_replicas": 1}}
        )
        health = client.cluster.health(index="replicated", wait_for_status="green")  # server waits up to 30s
        assert health["status"] == "green" and health["active_shards"] == 2
        client.index(index="replicated", id="a", body={"x": 1}, refresh=True)
        # the second node answers for the same document
        assert OpenSearch(hosts=[nodes[1].url]).get(index="replicated", id="a")["_source"] == {"x": 1}
    finally:
        for node in nodes:
            node.stop()
    assert all(not node.alive() for node in nodes)
