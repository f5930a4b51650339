"""The bulk writer under faults: 429s, 503s, a paused node, a killed node. Nothing lost, nothing twice.

Faults are real: a proxy in front of the real node rewrites answers (``support/fault_proxy.py``), the node
is paused with SIGSTOP, a node of a real 2-node cluster is killed.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import ConnectionError as TransportConnectionError
from opensearchpy.exceptions import ConnectionTimeout, SSLError, TransportError
from support.fault_proxy import FaultProxy
from support.opensearch_harness import OpenSearchNode, start_cluster

from gemsearch.manifest import ModelManifest, PoolingSpec
from gemsearch.plugin.stores.opensearch.bulk import (
    BulkDoc,
    BulkError,
    BulkOptions,
    BulkWriter,
    Outcome,
    RetryPolicy,
    _encode,
)
from gemsearch.plugin.stores.opensearch.connection import OpenSearchConfig, make_client
from gemsearch.plugin.stores.opensearch.index_admin import IndexOptions, bulk_load_settings, ensure_index

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
        assert max(delays) - min(delays) > 0.45 * step  # jittered over the whole upper half of the step


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
# 401/403 stop the write (the role, not the document), any other non-2xx status is final
# (dead-letter file). The neighbours of each boundary are listed.
RETRYABLE_ITEM_STATUSES = (429, 500, 501, 502, 503, 504, 507)
FINAL_ITEM_STATUSES = (300, 400, 402, 404, 409, 413, 422, 428, 430, 499)
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


@pytest.mark.parametrize("status", [401, 403])
def test_items_refused_for_the_role_stop_the_write_without_dead_letters(
    opensearch: OpenSearch, index: str, tmp_path, status: int
) -> None:
    batch = docs(5, seed=9)
    dead = tmp_path / "dead.jsonl"
    with FaultProxy(_node_url(opensearch), item_faults={batch[2].id: [status]}) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        writer = BulkWriter(client, index, BulkOptions(max_docs=5, retry=FAST_RETRY, dead_letter_path=dead))
        with pytest.raises(BulkError, match=f"\\({status}" if status == 403 else "401") as caught:
            writer.write(batch)
    assert len(proxy.bulk_requests) == 1 and not dead.exists()
    report = caught.value.report
    assert report.counts() == {"indexed": 4, "rejected": 0, "pending": 1}
    assert report.ids(Outcome.PENDING) == [batch[2].id]


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


@pytest.mark.parametrize(
    "bad",
    [
        np.full(DIMS, np.nan, dtype=np.float32),
        np.array([np.inf] + [0.0] * (DIMS - 1), dtype=np.float32),
        [0.5] * (DIMS - 1) + [float("-inf")],
    ],
    ids=["nan-array", "inf-array", "inf-list"],
)
def test_non_finite_vectors_are_rejected_not_written_as_null(
    opensearch: OpenSearch, index: str, tmp_path, bad: Any
) -> None:
    dead = tmp_path / "dead.jsonl"
    nested = BulkDoc("meta", {"embedding": np.ones(DIMS, np.float32), "metadata": {"s": [1.0, np.nan]}})
    writer = BulkWriter(opensearch, index, BulkOptions(dead_letter_path=str(dead)))
    report = writer.write([*docs(2), BulkDoc("bad", {"embedding": bad}), nested])
    assert sorted(report.ids(Outcome.REJECTED)) == ["bad", "meta"] and report.counts()["indexed"] == 2
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [len(line["source"]["embedding"]) for line in lines] == [DIMS, DIMS]  # lists, not reprs


def test_array_vectors_are_stored_exactly_in_their_shortest_float32_form(
    opensearch: OpenSearch, index: str
) -> None:
    """A numpy float32 vector goes into the body in float32's shortest form (not 17-digit doubles)
    and the index holds exactly those float32 values."""
    x = np.random.default_rng(7).standard_normal((3, DIMS)).astype(np.float32) / 37
    batch = [BulkDoc(f"a{i}", {"embedding": v, "metadata": {"i": i}}) for i, v in enumerate(x)]
    small = BulkDoc("s", {"embedding": np.array([0.1, 1 / 3, -2.5e-8], dtype=np.float32)})
    assert _encode(small) == b'{"index":{"_id":"s"}}\n{"embedding":[0.1,0.33333334,-2.5e-8]}\n'
    assert BulkWriter(opensearch, index).write(batch).counts()["indexed"] == 3
    got = opensearch.mget(index=index, body={"ids": ["a0", "a1", "a2"]})["docs"]
    stored = np.array([d["_source"]["embedding"] for d in got], dtype=np.float32)
    assert np.array_equal(stored, x)


def test_refresh_interval_is_managed_and_restored_even_on_error(opensearch: OpenSearch, index: str) -> None:
    def interval() -> str | None:
        s = opensearch.indices.get_settings(index=index, name="index.refresh_interval")
        return s[index]["settings"].get("index", {}).get("refresh_interval")

    during: list[str | None] = []

    def failing() -> Iterator[BulkDoc]:
        yield from docs(3)
        during.append(interval())
        raise RuntimeError("source broke")

    options = BulkOptions(max_docs=2)
    with pytest.raises(RuntimeError, match="source broke"), bulk_load_settings(opensearch, index):
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


# ----------------------------------------------------------------------------- without a node
# The writer's classification and bounds against a scripted client: every branch, in milliseconds.

Step = dict[str, int] | Exception | Callable[[list[str]], dict[str, Any]] | None


class ScriptedCluster:
    """A client whose bulk calls are answered by scripted steps, one per call.

    A step is ``{id: status}`` (ids not listed: 201), an exception to raise, or a function of the
    ids sent that returns the whole response; with no step left every item is answered 201.
    """

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.calls: list[list[str]] = []
        self.body_sizes: list[int] = []
        self.refreshes = 0
        self.refresh_error: Exception | None = None
        self.indices = self

    def bulk(self, body: bytes, index: str, params: dict[str, Any]) -> dict[str, Any]:
        lines = body.decode().splitlines()
        ids = [json.loads(action)["index"]["_id"] for action in lines[::2]]
        self.calls.append(ids)
        self.body_sizes.append(len(body))
        step = self.steps.pop(0) if self.steps else None
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step(ids)
        statuses = step or {}
        items = [{"index": _answer(i, statuses.get(i, 201))} for i in ids]
        return {"errors": any(not 200 <= a["index"]["status"] < 300 for a in items), "items": items}

    def refresh(self, index: str) -> None:
        self.refreshes += 1
        if self.refresh_error is not None:
            raise self.refresh_error


def _answer(doc_id: str, status: int) -> dict[str, Any]:
    out: dict[str, Any] = {"_id": doc_id, "status": status}
    if not 200 <= status < 300:
        out["error"] = {"type": f"type_{status}", "reason": f"scripted {status}"}
    return out


class FakeTime:
    """A clock that only moves when the writer sleeps; it starts far from 0, as monotonic clocks do."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def scripted_writer(
    cluster: ScriptedCluster, options: BulkOptions | None = None, fake: FakeTime | None = None
) -> BulkWriter:
    fake = fake or FakeTime()
    return BulkWriter(
        cluster, "idx", options or BulkOptions(retry=FAST_RETRY), sleep=fake.sleep, clock=fake.clock,
        rng=random.Random(0),
    )  # fmt: skip


def small_docs(n: int) -> list[BulkDoc]:
    return [BulkDoc(f"d{i:05d}", {"v": [i, i + 1], "metadata": {"i": i}}) for i in range(n)]


@pytest.mark.parametrize("status", (200, 201, 202, 299))
def test_scripted_2xx_items_are_indexed_on_the_first_try(status: int) -> None:
    cluster = ScriptedCluster({"d00001": status})
    report = scripted_writer(cluster).write(small_docs(3))
    assert [(i.id, i.outcome, i.attempts, i.status) for i in report.items] == [
        ("d00000", Outcome.INDEXED, 1, 201),
        ("d00001", Outcome.INDEXED, 1, status),
        ("d00002", Outcome.INDEXED, 1, 201),
    ]
    assert len(cluster.calls) == 1 and cluster.refreshes == 1


@pytest.mark.parametrize("status", (*RETRYABLE_ITEM_STATUSES, 599))
def test_scripted_retryable_items_are_resent_alone_until_indexed(status: int, tmp_path) -> None:
    cluster = ScriptedCluster({"d00001": status}, {"d00001": status})
    fake = FakeTime()
    options = BulkOptions(retry=FAST_RETRY, dead_letter_path=tmp_path / "dead.jsonl")
    report = scripted_writer(cluster, options, fake).write(small_docs(3))
    assert cluster.calls == [["d00000", "d00001", "d00002"], ["d00001"], ["d00001"]]
    assert report.requests == 3 and len(fake.sleeps) == 2
    # the outcomes in the order they became final
    assert [(i.id, i.outcome, i.attempts) for i in report.items] == [
        ("d00000", Outcome.INDEXED, 1),
        ("d00002", Outcome.INDEXED, 1),
        ("d00001", Outcome.INDEXED, 3),
    ]
    assert not (tmp_path / "dead.jsonl").exists()


@pytest.mark.parametrize("status", (0, 100, 199, *FINAL_ITEM_STATUSES))
def test_scripted_other_items_are_rejected_at_once_to_the_dead_letter_file(status: int, tmp_path) -> None:
    dead = tmp_path / "dead.jsonl"
    cluster = ScriptedCluster({"d00001": status})
    options = BulkOptions(retry=FAST_RETRY, dead_letter_path=dead)
    report = scripted_writer(cluster, options).write(small_docs(3))
    assert len(cluster.calls) == 1 and report.ids(Outcome.REJECTED) == ["d00001"]
    (rejected,) = [i for i in report.items if i.outcome is Outcome.REJECTED]
    assert (rejected.attempts, rejected.status) == (1, status)
    (entry,) = [json.loads(line) for line in dead.read_text().splitlines()]
    assert (entry["id"], entry["status"], entry["attempts"], entry["index"]) == ("d00001", status, 1, "idx")
    assert entry["source"] == {"v": [1, 2], "metadata": {"i": 1}}
    expected = f"HTTP {status}" if 200 <= status < 300 else f"type_{status}: scripted {status}"
    assert entry["reason"] == rejected.reason == expected


def test_scripted_item_without_a_status_is_rejected() -> None:
    def no_status(ids: list[str]) -> dict[str, Any]:
        return {"errors": True, "items": [{"index": {"_id": i}} for i in ids]}

    report = scripted_writer(ScriptedCluster(no_status)).write(small_docs(2))
    assert report.counts() == {"indexed": 0, "rejected": 2, "pending": 0}
    assert {(i.status, i.reason) for i in report.items} == {(0, "HTTP None")}


def test_scripted_rejection_reasons_name_the_error_and_its_cause(tmp_path) -> None:
    errors: list[Any] = [
        {
            "type": "mapper_parsing_exception",
            "reason": "bad",
            "caused_by": {"type": "illegal", "reason": "dims"},
        },
        {"type": "mapper_parsing_exception", "reason": "bad", "caused_by": {"type": "illegal"}},
        {"reason": "no type"},
        "plain text",
    ]

    def answer(ids: list[str]) -> dict[str, Any]:
        items = [{"index": {"_id": i, "status": 400, "error": e}} for i, e in zip(ids, errors, strict=True)]
        return {"errors": True, "items": items}

    options = BulkOptions(dead_letter_path=tmp_path / "dead.jsonl", dead_letter_source=False)
    report = scripted_writer(ScriptedCluster(answer), options).write(small_docs(4))
    assert [i.reason for i in report.items] == [
        "mapper_parsing_exception: bad (caused by illegal: dims)",
        "mapper_parsing_exception: bad",
        "error: no type",
        "plain text",
    ]
    entries = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [e["reason"] for e in entries] == [i.reason for i in report.items]
    assert all("source" not in e for e in entries)


def _raise_status(status: int | str) -> TransportError:
    return TransportError(status, f"scripted {status}", {"error": "scripted"})


@pytest.mark.parametrize("status", RETRYABLE_REQUEST_STATUSES)
def test_scripted_retryable_request_statuses_are_resent_whole(status: int) -> None:
    cluster = ScriptedCluster(_raise_status(status), _raise_status(status))
    fake = FakeTime()
    report = scripted_writer(cluster, fake=fake).write(small_docs(3))
    assert cluster.calls == [["d00000", "d00001", "d00002"]] * 3 and len(fake.sleeps) == 2
    assert {(i.outcome, i.attempts, i.status) for i in report.items} == {(Outcome.INDEXED, 3, 201)}


@pytest.mark.parametrize("status", (*FINAL_REQUEST_STATUSES, 505, 507, "N/A"))
def test_scripted_other_request_statuses_fail_the_write_at_once(status: int | str) -> None:
    cluster = ScriptedCluster(_raise_status(status))
    with pytest.raises(BulkError, match=f"bulk request into idx refused: HTTP {status}") as caught:
        scripted_writer(cluster, BulkOptions(max_docs=2)).write(small_docs(5))
    assert len(cluster.calls) == 1 and cluster.refreshes == 0
    expected = status if isinstance(status, int) else None
    assert [(i.id, i.outcome, i.attempts, i.status) for i in caught.value.report.items] == [
        ("d00000", Outcome.PENDING, 1, expected),
        ("d00001", Outcome.PENDING, 1, expected),
    ]
    assert ("max_bytes" in str(caught.value)) == (status == 413)  # the hint for a too-large request


@pytest.mark.parametrize(
    "error",
    [
        TransportConnectionError("N/A", "connection refused", None),
        ConnectionTimeout("TIMEOUT", "read timed out", None),
    ],
)
def test_scripted_connection_errors_are_retried_then_left_pending(error: TransportError) -> None:
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=0.3)
    cluster = ScriptedCluster(*[error] * 10)
    fake = FakeTime()
    report = scripted_writer(cluster, BulkOptions(max_docs=2, retry=policy), fake).write(small_docs(5))
    # the first request is tried 4 times; the writer then stops reading documents
    assert cluster.calls == [["d00000", "d00001"]] * 4 and cluster.refreshes == 1
    assert len(fake.sleeps) == 3 and not report.complete
    assert [(i.id, i.outcome, i.attempts, i.status) for i in report.items] == [
        ("d00000", Outcome.PENDING, 4, None),
        ("d00001", Outcome.PENDING, 4, None),
    ]
    assert all(type(error).__name__ in (i.reason or "") for i in report.items)


def test_scripted_tls_errors_fail_at_once() -> None:
    cluster = ScriptedCluster(SSLError("N/A", "certificate verify failed", None))
    with pytest.raises(BulkError, match="TLS handshake") as caught:
        scripted_writer(cluster).write(small_docs(2))
    assert len(cluster.calls) == 1
    assert caught.value.report.counts() == {"indexed": 0, "rejected": 0, "pending": 2}


def test_scripted_retries_stop_at_max_attempts_with_the_last_status() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.1, max_backoff_s=10)
    cluster = ScriptedCluster({"d00000": 503}, {"d00000": 429}, {"d00000": 500}, {"d00000": 502})
    fake = FakeTime()
    report = scripted_writer(cluster, BulkOptions(retry=policy), fake).write(small_docs(2))
    assert len(cluster.calls) == 3
    assert [(i.id, i.outcome, i.attempts, i.status) for i in report.items] == [
        ("d00001", Outcome.INDEXED, 1, 201),
        ("d00000", Outcome.PENDING, 3, 500),
    ]
    assert report.items[1].reason == "type_500: scripted 500"
    # backoff: half the step plus up to as much again, the step doubling from 0.1
    assert 0.05 <= fake.sleeps[0] <= 0.1 and 0.1 <= fake.sleeps[1] <= 0.2


def test_scripted_retries_stop_when_the_next_wait_would_pass_max_total_s() -> None:
    # waits of 1 s exactly (no jitter room: initial = max, and half + up to half of 2 s steps)
    policy = RetryPolicy(max_attempts=100, initial_backoff_s=2.0, max_backoff_s=2.0, max_total_s=3.5)
    cluster = ScriptedCluster(*[{"d00000": 429}] * 100)
    fake = FakeTime()
    report = scripted_writer(cluster, BulkOptions(retry=policy), fake).write(small_docs(1))
    assert all(1.0 <= s <= 2.0 for s in fake.sleeps)
    # a retry is made only while the time spent plus the next wait stays within 3.5 s
    assert sum(fake.sleeps) <= 3.5 and len(cluster.calls) == len(fake.sleeps) + 1
    assert report.items[0].outcome is Outcome.PENDING and report.items[0].attempts == len(cluster.calls)


def test_scripted_retry_exactly_at_max_total_s_is_still_made() -> None:
    policy = RetryPolicy(max_attempts=100, initial_backoff_s=0.0, max_backoff_s=0.0, max_total_s=1.0)
    fake = FakeTime()

    class Slow(ScriptedCluster):  # each request takes 0.5 s of the clock
        def bulk(self, body: bytes, index: str, params: dict[str, Any]) -> dict[str, Any]:
            fake.now += 0.5
            return super().bulk(body, index, params)

    cluster = Slow(*[{"d00000": 503}] * 5)
    report = scripted_writer(cluster, BulkOptions(retry=policy), fake).write(small_docs(1))
    # tries end at 0.5, 1.0 and 1.5 s: a retry starting exactly at max_total_s is made, a later one not
    assert len(cluster.calls) == 3 and fake.sleeps == [0.0, 0.0] and report.items[0].attempts == 3


def test_scripted_malformed_responses_are_hard_failures() -> None:
    def short(ids: list[str]) -> dict[str, Any]:
        return {"errors": False, "items": [{"index": _answer(i, 201)} for i in ids[:-1]]}

    def missing(ids: list[str]) -> dict[str, Any]:
        return {"errors": False}

    def swapped(ids: list[str]) -> dict[str, Any]:
        return {"errors": False, "items": [{"index": _answer(i, 201)} for i in reversed(ids)]}

    def odd_shape(ids: list[str]) -> dict[str, Any]:
        return {"errors": False, "items": ["nonsense" for _ in ids]}

    for answer, message in [
        (short, "has 2 items for 3 sent"),
        (missing, "has no items for 3 sent"),
        (swapped, "answers id 'd00002' for 'd00000'"),
        (odd_shape, "answers id None for 'd00000'"),
    ]:
        with pytest.raises(BulkError, match=message) as caught:
            scripted_writer(ScriptedCluster(answer)).write(small_docs(3))
        assert caught.value.report.counts() == {"indexed": 0, "rejected": 0, "pending": 3}


def test_scripted_requests_are_packed_greedily_by_count_and_bytes() -> None:
    batch = small_docs(7)
    one = ScriptedCluster()
    scripted_writer(one, BulkOptions(max_docs=1000)).write(batch)
    sizes = [one.body_sizes[0]]
    per_doc = [ScriptedCluster() for _ in batch]
    for cluster, doc in zip(per_doc, batch, strict=True):
        scripted_writer(cluster).write([doc])
    doc_bytes = [c.body_sizes[0] for c in per_doc]
    assert sum(doc_bytes) == sizes[0]
    by_count = ScriptedCluster()
    scripted_writer(by_count, BulkOptions(max_docs=3)).write(batch)
    assert [len(c) for c in by_count.calls] == [3, 3, 1]
    # max_bytes exactly the size of two documents (the first four are equally long): two per request
    assert len(set(doc_bytes[:4])) == 1
    exact = ScriptedCluster()
    scripted_writer(exact, BulkOptions(max_bytes=doc_bytes[0] + doc_bytes[1])).write(batch[:5])
    assert [len(c) for c in exact.calls] == [2, 2, 1]
    # one byte less: each goes alone
    tight = ScriptedCluster()
    scripted_writer(tight, BulkOptions(max_bytes=doc_bytes[0] + doc_bytes[1] - 1)).write(batch[:3])
    assert [len(c) for c in tight.calls] == [1, 1, 1]
    # a document larger than max_bytes is still sent, alone
    alone = ScriptedCluster()
    scripted_writer(alone, BulkOptions(max_bytes=1)).write(batch[:2])
    assert [len(c) for c in alone.calls] == [1, 1]


def test_scripted_unserialisable_documents_are_rejected_without_a_request(tmp_path) -> None:
    cluster = ScriptedCluster()
    bad = [
        BulkDoc("nan", {"v": [float("nan")]}),
        BulkDoc("inf", {"v": float("inf")}),
        BulkDoc("obj", {"v": {1j}}),
    ]
    dead = tmp_path / "dead.jsonl"
    report = scripted_writer(cluster, BulkOptions(dead_letter_path=dead)).write([*bad, *small_docs(1)])
    assert cluster.calls == [["d00000"]]
    assert [(i.id, i.outcome, i.attempts, i.status) for i in report.items[:3]] == [
        (d.id, Outcome.REJECTED, 0, None) for d in bad
    ]
    assert all("not serialisable as JSON" in (i.reason or "") for i in report.items[:3])
    assert len(dead.read_text().splitlines()) == 3


def test_scripted_refresh_happens_once_after_writing_and_its_failure_is_tolerated() -> None:
    cluster = ScriptedCluster()
    scripted_writer(cluster, BulkOptions(max_docs=2)).write(small_docs(5))
    assert len(cluster.calls) == 3 and cluster.refreshes == 1
    nothing = ScriptedCluster()
    assert scripted_writer(nothing).write([]).requests == 0 and nothing.refreshes == 0
    off = ScriptedCluster()
    scripted_writer(off, BulkOptions(refresh=False)).write(small_docs(2))
    assert off.refreshes == 0
    failing = ScriptedCluster()
    failing.refresh_error = _raise_status(503)
    report = scripted_writer(failing).write(small_docs(2))
    assert failing.refreshes == 1 and report.counts()["indexed"] == 2


def test_scripted_requests_carry_the_filter_path_and_the_timeout() -> None:
    seen: list[dict[str, Any]] = []

    class Recording(ScriptedCluster):
        def bulk(self, body: bytes, index: str, params: dict[str, Any]) -> dict[str, Any]:
            seen.append({"index": index, **params})
            return super().bulk(body, index, params)

    scripted_writer(Recording()).write(small_docs(1))
    scripted_writer(Recording(), BulkOptions(request_timeout_s=7.5)).write(small_docs(1))
    assert seen[0] == {"index": "idx", "filter_path": "errors,items.*._id,items.*.status,items.*.error"}
    assert seen[1]["request_timeout"] == 7.5


def test_scripted_backoff_draws_its_jitter_from_the_given_rng() -> None:
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=1.0, max_backoff_s=8.0)
    expected_rng = random.Random(7)
    expected = [policy.delay(attempt, expected_rng) for attempt in (1, 2, 3)]
    fake = FakeTime()
    writer = BulkWriter(
        ScriptedCluster(*[{"d00000": 503}] * 3), "idx", BulkOptions(retry=policy),
        sleep=fake.sleep, clock=fake.clock, rng=random.Random(7),
    )  # fmt: skip
    assert writer.write(small_docs(1)).counts()["indexed"] == 1
    assert fake.sleeps == expected
    # without one, the writer draws from a random.Random of its own
    fake = FakeTime()
    writer = BulkWriter(ScriptedCluster({"d00000": 503}), "idx", BulkOptions(retry=policy), sleep=fake.sleep)
    assert writer.write(small_docs(1)).counts()["indexed"] == 1 and 0.5 <= fake.sleeps[0] <= 1.0


def test_options_defaults_are_the_documented_policy_and_bounds_are_checked() -> None:
    # 500 documents or 5 MB per request; 12 tries over at most 300 s, backoff from 0.2 s up to 10 s
    assert BulkOptions() == BulkOptions(
        max_docs=500, max_bytes=5_000_000, dead_letter_path=None, dead_letter_source=True, refresh=True,
        request_timeout_s=None,
        retry=RetryPolicy(max_attempts=12, initial_backoff_s=0.2, max_backoff_s=10.0, max_total_s=300.0),
    )  # fmt: skip
    assert BulkOptions(max_docs=1, max_bytes=1, request_timeout_s=0.5).request_timeout_s == 0.5
    least = RetryPolicy(max_attempts=1, initial_backoff_s=0, max_backoff_s=0, max_total_s=0.1)
    assert least.max_attempts == 1
    for bad in ({"max_docs": 0}, {"max_bytes": 0}, {"request_timeout_s": 0}, {"extra": 1}):
        with pytest.raises(ValueError):
            BulkOptions(**bad)
    for bad in ({"max_attempts": 0}, {"initial_backoff_s": -0.1}, {"max_backoff_s": -1}, {"max_total_s": 0}):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)


def test_options_documents_and_outcomes_are_immutable() -> None:
    with pytest.raises(ValueError):
        BulkOptions().max_docs = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        RetryPolicy().max_attempts = 1  # type: ignore[misc]
    report = scripted_writer(ScriptedCluster()).write(small_docs(1))
    with pytest.raises(AttributeError):
        report.items[0].outcome = Outcome.REJECTED  # type: ignore[misc]
    with pytest.raises(AttributeError):
        small_docs(1)[0].id = "other"  # type: ignore[misc]


def test_report_counts_and_completeness() -> None:
    report = scripted_writer(ScriptedCluster({"d00001": 400})).write(small_docs(3))
    assert report.counts() == {"indexed": 2, "rejected": 1, "pending": 0} and report.complete
    assert report.ids(Outcome.INDEXED) == ["d00000", "d00002"] and report.ids(Outcome.PENDING) == []
