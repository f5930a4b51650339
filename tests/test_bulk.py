"""The bulk writer under faults: 429s, 503s, a paused node, a killed node. Nothing lost, nothing twice.

Faults are real: a proxy in front of the real node rewrites answers (``fault_proxy.py``), the node
is paused with SIGSTOP, a node of a real 2-node cluster is killed.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from fault_proxy import FaultProxy
from opensearch_harness import OpenSearchNode, start_cluster
from opensearchpy import OpenSearch, helpers

from gemsearch.manifest import ModelManifest, PoolingSpec
from gemsearch.plugin.bulk import BulkDoc, BulkError, BulkOptions, BulkWriter, Outcome, RetryPolicy
from gemsearch.plugin.connection import OpenSearchConfig, make_client
from gemsearch.plugin.index_admin import IndexOptions, ensure_index

DIMS = 8
FAST_RETRY = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.5, max_total_s=60)


def make_manifest() -> ModelManifest:
    return ModelManifest(
        name="bulk",
        version="b" * 64,
        backbone="resnet50",
        pooling=PoolingSpec(kind="gem", p=3.0),
        output_dim=DIMS,
    )


def docs(n: int, seed: int = 0) -> list[BulkDoc]:
    x = np.random.default_rng(seed).standard_normal((n, DIMS)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return [BulkDoc(f"d{i:05d}", {"embedding": v.tolist(), "metadata": {"i": i}}) for i, v in enumerate(x)]


def all_ids(client: OpenSearch, index: str) -> list[str]:
    client.indices.refresh(index=index)
    hits = helpers.scan(client, index=index, query={"query": {"match_all": {}}}, _source=False)
    return sorted(h["_id"] for h in hits)


def assert_exactly(client: OpenSearch, index: str, expected: list[BulkDoc]) -> None:
    """Nothing lost, nothing duplicated: the count and the id list (duplicates kept) match."""
    ids = all_ids(client, index)
    assert ids == sorted(d.id for d in expected)
    assert client.count(index=index)["count"] == len(expected)


@pytest.fixture
def index(opensearch: OpenSearch) -> Iterator[str]:
    prefix = f"b{uuid.uuid4().hex[:10]}"
    name = ensure_index(opensearch, make_manifest(), IndexOptions(prefix=prefix))
    yield name
    opensearch.indices.delete(index=f"{prefix}-*")


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0)
    rng = random.Random(0)
    for attempt, step in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (12, 1.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert step / 2 <= min(delays) and max(delays) <= step
        assert max(delays) - min(delays) > step / 4  # jittered, not constant


def test_requests_are_sized_by_count_and_bytes(opensearch: OpenSearch, index: str) -> None:
    batch = docs(120)
    with FaultProxy(_node_url(opensearch)) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30)
        report = BulkWriter(client, index, BulkOptions(max_docs=50)).write(batch)
        assert report.requests == 3 and len(proxy.bulk_requests) == 3
        total = sum(r.body_bytes for r in proxy.bulk_requests)
        before = len(proxy.bulk_requests)
        report = BulkWriter(client, index, BulkOptions(max_docs=1000, max_bytes=2000)).write(batch)
        sizes = [r.body_bytes for r in proxy.bulk_requests[before:]]
    assert report.counts()["indexed"] == 120 and sum(sizes) == total
    assert max(sizes) <= 2000 and len(sizes) > total / 2000
    # greedy packing: a request was closed only because the next document did not fit
    assert all(a + b > 2000 for a, b in itertools.pairwise(sizes))
    assert_exactly(opensearch, index, batch)


def _node_url(client: OpenSearch) -> str:
    conn = client.transport.get_connection()
    return str(conn.host)


def test_item_429s_and_whole_429_503_answers_are_retried_until_all_indexed(
    opensearch: OpenSearch, index: str
) -> None:
    batch = docs(400, seed=1)
    with FaultProxy(
        _node_url(opensearch), fail_next=[429, 503, 429], reject_first=lambda i: int(i[1:]) % 3 == 0
    ) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        report = BulkWriter(client, index, BulkOptions(max_docs=100, retry=FAST_RETRY)).write(batch)
    assert proxy.injected == 3 + len(range(0, 400, 3))
    assert report.counts() == {"indexed": 400, "rejected": 0, "pending": 0}
    assert len(report.items) == 400 and {i.id for i in report.items} == {d.id for d in batch}
    retried = {i.id for i in report.items if i.attempts > 1}
    assert {f"d{k:05d}" for k in range(0, 400, 3)} <= retried
    assert_exactly(opensearch, index, batch)


# Item statuses and what the writer must make of them: 429 and every 5xx are transient (retried),
# any other non-2xx status is final (dead-letter file). The neighbours of each boundary are listed.
RETRYABLE_ITEM_STATUSES = (429, 500, 501, 502, 503, 504, 507)
FINAL_ITEM_STATUSES = (300, 400, 401, 403, 404, 409, 413, 422, 428, 430, 499)
# Whole-request statuses: the transient ones are retried, any other fails the write at once.
RETRYABLE_REQUEST_STATUSES = (429, 500, 502, 503, 504)
FINAL_REQUEST_STATUSES = (400, 401, 403, 404, 409, 413, 428, 430, 501)


def test_every_retryable_item_status_is_retried_and_every_other_rejected(
    opensearch: OpenSearch, index: str, tmp_path
) -> None:
    """One document per status, each answered that status on its first try (twice for the retryable
    ones): a retryable one ends indexed on its third try, any other one in the dead-letter file."""
    statuses = RETRYABLE_ITEM_STATUSES + FINAL_ITEM_STATUSES
    batch = docs(len(statuses) + 3, seed=5)  # the last three are never faulted
    status_of = {d.id: s for d, s in zip(batch, statuses, strict=False)}
    faults = {i: [s, s] if s in RETRYABLE_ITEM_STATUSES else [s] for i, s in status_of.items()}
    dead = tmp_path / "dead.jsonl"
    with FaultProxy(_node_url(opensearch), item_faults=faults) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        options = BulkOptions(retry=FAST_RETRY, dead_letter_path=dead)
        report = BulkWriter(client, index, options).write(batch)
    assert proxy.injected == 2 * len(RETRYABLE_ITEM_STATUSES) + len(FINAL_ITEM_STATUSES)
    outcome = {i.id: i for i in report.items}
    assert len(report.items) == len(batch) and set(outcome) == {d.id for d in batch}
    got = {status_of.get(i, 201): (o.outcome, o.attempts) for i, o in outcome.items()}
    expected = {s: (Outcome.INDEXED, 3) for s in RETRYABLE_ITEM_STATUSES}
    expected |= {s: (Outcome.REJECTED, 1) for s in FINAL_ITEM_STATUSES}
    expected[201] = (Outcome.INDEXED, 1)
    assert got == expected
    assert all(outcome[i].status in (200, 201) for i in report.ids(Outcome.INDEXED))
    assert report.requests == 3 and len(proxy.bulk_requests) == 3
    # the dead-letter file holds exactly the final statuses, each with its reason and document
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert sorted(e["status"] for e in lines) == sorted(FINAL_ITEM_STATUSES)
    for entry in lines:
        assert status_of[entry["id"]] == entry["status"] and f"injected {entry['status']}" in entry["reason"]
        assert entry["attempts"] == 1 and entry["source"]["metadata"]["i"] == int(entry["id"][1:])


@pytest.mark.parametrize("status", RETRYABLE_ITEM_STATUSES)
def test_an_item_failing_on_every_try_with_a_retryable_status_stays_pending(
    opensearch: OpenSearch, index: str, tmp_path, status: int
) -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    batch = docs(4, seed=6)
    dead = tmp_path / "dead.jsonl"
    with FaultProxy(_node_url(opensearch), item_faults={batch[1].id: [status] * 10}) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        report = BulkWriter(client, index, BulkOptions(retry=policy, dead_letter_path=dead)).write(batch)
    assert len(proxy.bulk_requests) == 3 and proxy.injected == 3
    (pending,) = [i for i in report.items if i.outcome is Outcome.PENDING]
    assert (pending.id, pending.attempts, pending.status) == (batch[1].id, 3, status)
    assert f"injected {status}" in (pending.reason or "")
    assert report.counts() == {"indexed": 3, "rejected": 0, "pending": 1} and not dead.exists()


@pytest.mark.parametrize("status", RETRYABLE_REQUEST_STATUSES)
def test_every_retryable_request_status_is_retried(opensearch: OpenSearch, index: str, status: int) -> None:
    batch = docs(6, seed=7)
    with FaultProxy(_node_url(opensearch), fail_next=[status, status]) as proxy:
        # no retries in the client: every answer reaches the writer
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        report = BulkWriter(client, index, BulkOptions(retry=FAST_RETRY)).write(batch)
    assert proxy.injected == 2 and len(proxy.bulk_requests) == 3 and report.requests == 3
    assert report.counts() == {"indexed": 6, "rejected": 0, "pending": 0}
    assert {i.attempts for i in report.items} == {3}
    assert_exactly(opensearch, index, batch)


@pytest.mark.parametrize("status", FINAL_REQUEST_STATUSES)
def test_every_other_request_status_fails_the_write_without_retrying(
    opensearch: OpenSearch, index: str, status: int
) -> None:
    batch = docs(6, seed=8)
    with FaultProxy(_node_url(opensearch), fail_next=[status, status]) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        with pytest.raises(BulkError, match=f"refused: HTTP {status}") as caught:
            BulkWriter(client, index, BulkOptions(max_docs=4, retry=FAST_RETRY)).write(batch)
    assert len(proxy.bulk_requests) == 1  # neither retried nor the next request sent
    report = caught.value.report
    assert report.counts() == {"indexed": 0, "rejected": 0, "pending": 4}
    assert {(i.status, i.attempts) for i in report.items} == {(status, 1)}
    assert all_ids(opensearch, index) == []


def test_retries_are_bounded_and_leave_items_pending(opensearch: OpenSearch, index: str) -> None:
    batch = docs(30, seed=2)
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    with FaultProxy(_node_url(opensearch), fail_next=[429] * 100) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        started = time.monotonic()
        report = BulkWriter(client, index, BulkOptions(max_docs=10, retry=policy)).write(batch)
    assert time.monotonic() - started < 5
    # the first request gives up after 3 tries; the writer stops reading instead of hammering on
    assert len(proxy.bulk_requests) == 3 and not report.complete
    assert report.counts() == {"indexed": 0, "rejected": 0, "pending": 10}
    assert all(i.status == 429 and "injected" in (i.reason or "") for i in report.items)


def test_retry_time_is_bounded(opensearch: OpenSearch, index: str) -> None:
    policy = RetryPolicy(max_attempts=1000, initial_backoff_s=0.1, max_backoff_s=0.2, max_total_s=1.0)
    with FaultProxy(_node_url(opensearch), fail_next=[503] * 1000) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        started = time.monotonic()
        report = BulkWriter(client, index, BulkOptions(retry=policy)).write(docs(5))
    assert 0.5 < time.monotonic() - started < 3
    assert report.counts()["pending"] == 5 and 3 < len(proxy.bulk_requests) < 20


def test_a_response_with_a_missing_item_is_a_hard_failure(opensearch: OpenSearch, index: str) -> None:
    with FaultProxy(_node_url(opensearch), drop_item=True) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30)
        with pytest.raises(BulkError, match="9 items for 10 sent") as caught:
            BulkWriter(client, index, BulkOptions(max_docs=10)).write(docs(25))
    assert caught.value.report.counts() == {"indexed": 0, "rejected": 0, "pending": 10}


def test_a_non_retryable_request_error_is_a_hard_failure(opensearch: OpenSearch, index: str) -> None:
    with FaultProxy(_node_url(opensearch), fail_next=[413]) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30)
        with pytest.raises(BulkError, match="413"):
            BulkWriter(client, index).write(docs(5))


def test_unserialisable_documents_are_rejected_locally(opensearch: OpenSearch, index: str, tmp_path) -> None:
    batch = docs(4)
    bad = BulkDoc("nan", {"embedding": [float("nan")] * DIMS})
    dead = tmp_path / "dead.jsonl"
    report = BulkWriter(opensearch, index, BulkOptions(dead_letter_path=str(dead))).write([*batch, bad])
    assert report.ids(Outcome.REJECTED) == ["nan"] and report.counts()["indexed"] == 4
    assert "not serialisable" in dead.read_text()


def test_refresh_interval_is_managed_and_restored_even_on_error(opensearch: OpenSearch, index: str) -> None:
    def interval() -> str | None:
        s = opensearch.indices.get_settings(index=index, name="index.refresh_interval")
        return s[index]["settings"].get("index", {}).get("refresh_interval")

    during: list[str | None] = []

    def failing() -> Iterator[BulkDoc]:
        yield from docs(3)
        during.append(interval())
        raise RuntimeError("source broke")

    options = BulkOptions(max_docs=2, manage_refresh_interval=True)
    with pytest.raises(RuntimeError, match="source broke"):
        BulkWriter(opensearch, index, options).write(failing())
    assert during == ["-1"] and interval() == "1s"


def test_node_paused_longer_than_the_client_timeout(
    opensearch_node: OpenSearchNode, opensearch: OpenSearch, index: str
) -> None:
    batch = docs(400, seed=3)
    client = make_client(OpenSearchConfig(urls=(opensearch_node.url,), timeout=1.0))
    resumed = threading.Event()

    def source() -> Iterator[BulkDoc]:
        for i, doc in enumerate(batch):
            if i == 150:  # mid-load: freeze the JVM for 3x the client timeout
                opensearch_node.pause()
                timer = threading.Timer(3.0, lambda: (opensearch_node.resume(), resumed.set()))
                timer.start()
            yield doc

    policy = RetryPolicy(initial_backoff_s=0.2, max_backoff_s=1.0, max_total_s=60)
    try:
        report = BulkWriter(client, index, BulkOptions(max_docs=50, retry=policy)).write(source())
    finally:
        opensearch_node.resume()
    assert resumed.is_set()
    assert report.counts() == {"indexed": 400, "rejected": 0, "pending": 0}
    assert max(i.attempts for i in report.items) > 1  # the pause did hit a request
    assert_exactly(opensearch, index, batch)


@pytest.mark.slow
def test_a_cluster_node_killed_mid_bulk_loses_nothing() -> None:
    nodes = start_cluster(2)
    try:
        admin = OpenSearch(hosts=[nodes[0].url], timeout=30)
        manager = admin.cat.cluster_manager(format="json")[0]["node"]
        # the elected cluster manager stays up: two nodes have no quorum without it
        victim = next(n for n in nodes if n.name != manager)
        survivor = next(n for n in nodes if n.name == manager)
        index = ensure_index(admin, make_manifest(), IndexOptions(prefix="kill", shards=2, replicas=1))
        health = survivor.request(
            "GET", f"/_cluster/health/{index}?wait_for_status=green&timeout=60s", timeout=70
        )
        assert health["status"] == "green" and health["active_shards"] == 4
        client = make_client(OpenSearchConfig(urls=tuple(n.url for n in nodes), timeout=5.0))
        shards = admin.cat.shards(index=index, format="json")
        assert any(s["prirep"] == "p" and s["node"] == victim.name for s in shards)  # a primary dies
        batch = docs(600, seed=4)

        def source() -> Iterator[BulkDoc]:
            for i, doc in enumerate(batch):
                if i == 200:
                    victim.kill()
                yield doc

        policy = RetryPolicy(initial_backoff_s=0.2, max_backoff_s=2.0, max_total_s=120)
        report = BulkWriter(client, index, BulkOptions(max_docs=50, retry=policy)).write(source())
        assert not victim.alive()
        assert report.counts() == {"indexed": 600, "rejected": 0, "pending": 0}
        assert_exactly(OpenSearch(hosts=[survivor.url], timeout=30), index, batch)
    finally:
        for node in nodes:
            node.stop()
