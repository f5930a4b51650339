"""Ingest into the real OpenSearch node: exact counts and ids, self-search, and faults that lose nothing.

Each fault test ends with the same check: the index holds exactly the ids of the readable inputs,
once each (count and id list), whatever happened on the way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from opensearchpy import OpenSearch, helpers
from PIL import Image
from support.fault_proxy import FaultProxy
from support.ingest_helpers import write_collection
from support.onnx_models import make_tiny_model
from support.opensearch_harness import OpenSearchNode, start_cluster

from gemsearch.errors import StoreError
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.embedding.sessions import read_manifest
from gemsearch.plugin.ingest.pipeline import IngestOptions, ingest
from gemsearch.plugin.ingest.report import Fate
from gemsearch.plugin.inputs.sources import iter_sources
from gemsearch.plugin.stores.opensearch.bulk import BulkOptions, RetryPolicy
from gemsearch.plugin.stores.opensearch.connection import OpenSearchConfig, make_client
from gemsearch.plugin.stores.opensearch.index_admin import IndexOptions
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore

pytestmark = pytest.mark.opensearch
TESTS = Path(__file__).parent
FAST_RETRY = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.5, max_total_s=60)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    make_tiny_model(path, name="tiny", dim=16)
    return path


@pytest.fixture(scope="module")
def embedder(model: Path) -> OnnxEmbedder:
    return OnnxEmbedder(model, threads=1)


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("photos")
    return root, write_collection(root, 240, seed=7, side=64)


def store_for(client: OpenSearch, prefix: str, dead_letter: Path | None = None) -> OpenSearchStore:
    return OpenSearchStore(
        client,
        options=IndexOptions(prefix=prefix),
        bulk=BulkOptions(max_docs=40, retry=FAST_RETRY, dead_letter_path=dead_letter),
    )


def ids_in(client: OpenSearch, index: str) -> list[str]:
    client.indices.refresh(index=index)
    return sorted(h["_id"] for h in helpers.scan(client, index=index, query={"query": {"match_all": {}}}))


def assert_exactly(client: OpenSearch, index: str, expected: dict[str, Path]) -> None:
    assert ids_in(client, index) == sorted(expected)  # duplicates would show up in the list
    assert client.count(index=index)["count"] == len(expected)


def node_url(client: OpenSearch) -> str:
    conn = client.transport.get_connection()
    return str(conn.host)


def test_a_few_hundred_images_are_counted_indexed_and_find_themselves(
    opensearch: OpenSearch, prefix: str, collection: tuple[Path, dict[str, Path]], embedder: OnnxEmbedder
) -> None:
    root, files = collection
    broken = root / "zz-broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    try:
        store = store_for(opensearch, prefix)
        report = ingest(iter_sources([str(root)]), embedder, store, IngestOptions(write_batch=64))
    finally:
        broken.unlink()
    assert report.read == len(files) + 1
    assert report.count(Fate.INDEXED) == len(files) and report.count(Fate.FAILED) == 1
    assert report.count(Fate.PENDING) == 0
    assert store.index is not None
    assert_exactly(opensearch, store.index, files)
    reader = OpenSearchStore(opensearch, model="tiny", options=IndexOptions(prefix=prefix))  # via the alias
    for digest, path in list(files.items())[:5]:
        hits = reader.search(embedder.embed_image(Image.open(path)), k=3)
        assert hits[0].id == digest and hits[0].score == pytest.approx(1.0, abs=1e-4)
    again = ingest(iter_sources([str(root)]), embedder, store)
    assert again.ok and again.embedded == 0 and again.count(Fate.SKIPPED) == len(files)


def test_injected_429s_are_retried_and_nothing_is_lost(
    opensearch: OpenSearch, prefix: str, collection: tuple[Path, dict[str, Path]], embedder: OnnxEmbedder
) -> None:
    root, files = collection
    with FaultProxy(
        node_url(opensearch), fail_next=[429, 429], reject_first=lambda i: i[0] in "0123"
    ) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        store = store_for(client, prefix)
        report = ingest(iter_sources([str(root)]), embedder, store)
    assert proxy.injected > 2
    assert report.ok and report.count(Fate.INDEXED) == len(files)
    assert store.index is not None
    assert_exactly(opensearch, store.index, files)


def test_node_paused_longer_than_the_client_timeout_loses_nothing(
    opensearch_node: OpenSearchNode,
    opensearch: OpenSearch,
    prefix: str,
    collection: tuple[Path, dict[str, Path]],
    embedder: OnnxEmbedder,
) -> None:
    root, files = collection
    store_for(opensearch, prefix).ensure_index(embedder.manifest)  # created with a patient client
    client = make_client(OpenSearchConfig(urls=(opensearch_node.url,), timeout=2.0))
    store = store_for(client, prefix)
    resumed = threading.Event()
    paused = False
    done = 0

    def tick(n: int) -> None:  # mid-ingest: freeze the JVM for 3x the client timeout
        nonlocal paused, done
        done += n
        if not paused and done >= 60:
            paused = True
            opensearch_node.pause()
            threading.Timer(6.0, lambda: (opensearch_node.resume(), resumed.set())).start()

    try:
        report = ingest(
            iter_sources([str(root)]), embedder, store, IngestOptions(write_batch=40), progress=tick
        )
    finally:
        opensearch_node.resume()
    assert paused and resumed.wait(10)
    assert report.ok and report.count(Fate.INDEXED) == len(files)
    assert store.index is not None
    assert_exactly(opensearch, store.index, files)


_KILLER = """
import os, signal, sys
from gemsearch.plugin.stores.opensearch.bulk import BulkOptions
from gemsearch.plugin.stores.opensearch.connection import OpenSearchConfig, make_client
from gemsearch.plugin.stores.opensearch.index_admin import IndexOptions
from gemsearch.plugin.ingest.pipeline import IngestOptions, ingest
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.embedding.sessions import read_manifest
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore
from gemsearch.plugin.inputs.sources import iter_sources
seen = 0
def tick(n):
    global seen
    seen += n
    if seen >= {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)
client = make_client(OpenSearchConfig(urls=({url!r},)))
store = OpenSearchStore(client, options=IndexOptions(prefix={prefix!r}), bulk=BulkOptions(max_docs=20))
ingest(iter_sources([{root!r}]), OnnxEmbedder({model!r}, threads=1), store,
       IngestOptions(write_batch=20, workers=2), written=tick)
"""


@pytest.mark.slow
def test_ingest_killed_mid_run_then_rerun_is_exact(
    opensearch: OpenSearch,
    prefix: str,
    collection: tuple[Path, dict[str, Path]],
    model: Path,
    embedder: OnnxEmbedder,
) -> None:
    root, files = collection
    code = _KILLER.format(
        kill_after=90, url=node_url(opensearch), prefix=prefix, root=str(root), model=str(model)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    index = embedder.manifest.index_name(prefix)
    partial = len(ids_in(opensearch, index))
    assert 0 < partial < len(files)
    store = store_for(opensearch, prefix)
    report = ingest(iter_sources([str(root)]), embedder, store)
    assert report.ok and report.count(Fate.SKIPPED) == partial
    assert report.count(Fate.INDEXED) == len(files) - partial
    assert_exactly(opensearch, index, files)


@pytest.mark.slow
def test_three_shards_running_concurrently_load_the_union_exactly(
    opensearch: OpenSearch, prefix: str, collection: tuple[Path, dict[str, Path]], model: Path, tmp_path: Path
) -> None:
    root, files = collection
    env = {**os.environ, "GEMSEARCH_OPENSEARCH_URL": node_url(opensearch)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gemsearch.cli",
                "ingest",
                str(root),
                "--model",
                str(model),
                "--opensearch-config",
                str(_config(tmp_path)),
                "--prefix",
                prefix,
                "--shard",
                f"{i}/3",
                "--threads",
                "1",
                "--workers",
                "1",
                "--json",
                "--no-progress",
                "--dead-letter",
                str(tmp_path / f"dead{i}.jsonl"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(3)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
    assert sum(r["indexed"] for r in reports) == len(files)
    assert all(0 < r["indexed"] < len(files) for r in reports)
    assert_exactly(opensearch, read_manifest(model).index_name(prefix), files)


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "opensearch.yaml"
    path.write_text("timeout: 30\n")
    return path


@pytest.mark.slow
def test_a_cluster_node_killed_mid_ingest_loses_nothing(
    collection: tuple[Path, dict[str, Path]], embedder: OnnxEmbedder
) -> None:
    root, files = collection
    nodes = start_cluster(2)
    try:
        admin = OpenSearch(hosts=[nodes[0].url], timeout=30)
        manager = admin.cat.cluster_manager(format="json")[0]["node"]
        # the elected cluster manager stays up: two nodes have no quorum without it
        victim = next(n for n in nodes if n.name != manager)
        survivor = next(n for n in nodes if n.name == manager)
        options = IndexOptions(prefix="killed", shards=2, replicas=1)
        OpenSearchStore(admin, options=options).ensure_index(embedder.manifest)
        index = embedder.manifest.index_name("killed")
        health = survivor.request(
            "GET", f"/_cluster/health/{index}?wait_for_status=green&timeout=60s", timeout=70
        )
        assert health["status"] == "green"
        client = make_client(OpenSearchConfig(urls=tuple(n.url for n in nodes), timeout=5.0))
        policy = RetryPolicy(initial_backoff_s=0.2, max_backoff_s=2.0, max_total_s=120)
        store = OpenSearchStore(client, options=options, bulk=BulkOptions(max_docs=30, retry=policy))
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if done >= 80 and victim.alive():
                victim.kill()

        report = ingest(
            iter_sources([str(root)]), embedder, store, IngestOptions(write_batch=30), progress=tick
        )
        assert not victim.alive()
        assert report.ok and report.count(Fate.INDEXED) == len(files)
        assert_exactly(OpenSearch(hosts=[survivor.url], timeout=30), index, files)
    finally:
        for node in nodes:
            node.stop()


def test_pause_refresh_turns_refreshes_off_during_the_load_and_restores_them(
    opensearch: OpenSearch, prefix: str, collection: tuple[Path, dict[str, Path]], embedder: OnnxEmbedder
) -> None:
    root, files = collection
    store = store_for(opensearch, prefix)
    store.ensure_index(embedder.manifest)
    index = embedder.manifest.index_name(prefix)
    seen: list[str | None] = []

    def tick(n: int) -> None:
        if len(seen) < 1:
            settings = opensearch.indices.get_settings(index=index, name="index.refresh_interval")
            seen.append(settings[index]["settings"].get("index", {}).get("refresh_interval"))

    report = ingest(
        iter_sources([str(root)]), embedder, store, IngestOptions(pause_refresh=True), progress=tick
    )
    assert report.ok and seen == ["-1"]
    after = opensearch.indices.get_settings(index=index, name="index.refresh_interval")[index]["settings"]
    assert after.get("index", {}).get("refresh_interval") in (None, "1s")
    assert_exactly(opensearch, index, files)


def test_a_non_utf8_file_name_is_indexed_and_its_path_round_trips(
    opensearch: OpenSearch, prefix: str, embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    from gemsearch.image_refs import path_of_ref

    odd = tmp_path / os.fsdecode(b"x\xff.jpg")
    Image.new("RGB", (40, 30), (200, 10, 10)).save(odd, "JPEG")
    store = store_for(opensearch, prefix)
    report = ingest(iter_sources([str(tmp_path)]), embedder, store)
    assert report.ok and report.count(Fate.INDEXED) == 1, report.summary()
    assert store.index is not None
    (hit,) = store.search(embedder.embed_image(Image.open(odd)), k=1)
    assert hit.image_ref is not None and path_of_ref(hit.image_ref) == odd


def test_a_rejected_id_is_released_to_the_next_input_with_it(
    opensearch: OpenSearch, prefix: str, embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    from gemsearch.plugin.inputs.sources import iter_jsonl

    for i, colour in enumerate([(0, 0, 0), (90, 90, 90), (250, 250, 250)]):
        Image.new("RGB", (40, 30), colour).save(tmp_path / f"{i}.jpg", "JPEG")
    rows = [
        {"path": "0.jpg", "id": "y", "n": 1},  # maps metadata.n as a number
        {"path": "1.jpg", "id": "x1", "n": "not a number"},  # refused by the mapping
        {"path": "2.jpg", "id": "x1", "n": 2},  # the same id, a good document
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    store = store_for(opensearch, prefix, dead_letter=tmp_path / "dead.jsonl")
    options = IngestOptions(ledger_path=tmp_path / "ledger.jsonl", check_chunk=1, window=1, write_batch=1)
    report = ingest(iter_jsonl(manifest), embedder, store, options)
    assert report.count(Fate.INDEXED) == 2 and report.count(Fate.REJECTED) == 1, report.summary()
    assert store.index is not None
    doc = opensearch.get(index=store.index, id="x1")["_source"]
    assert doc["metadata"] == {"n": 2} and doc["image_ref"].endswith("2.jpg")


def test_a_run_the_cluster_stops_gives_every_read_input_exactly_one_ledger_line(
    opensearch: OpenSearch, prefix: str, collection: tuple[Path, dict[str, Path]], embedder: OnnxEmbedder,
    tmp_path: Path,
) -> None:  # fmt: skip
    root, files = collection
    ledger = tmp_path / "ledger.jsonl"
    store_for(opensearch, prefix).ensure_index(embedder.manifest)
    with FaultProxy(node_url(opensearch)) as proxy:
        client = OpenSearch(hosts=[proxy.url], timeout=30, max_retries=0)
        impatient = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=0.2, max_total_s=2)
        store = OpenSearchStore(
            client, options=IndexOptions(prefix=prefix), bulk=BulkOptions(max_docs=20, retry=impatient)
        )
        done = 0

        def tick(n: int) -> None:  # mid-run, every bulk request from now on answers 503
            nonlocal done
            done += n
            if done >= 60 and not proxy.fail_next:
                proxy.fail_next.extend([503] * 10_000)

        options = IngestOptions(write_batch=20, ledger_path=ledger, workers=2)
        with pytest.raises(StoreError):
            ingest(iter_sources([str(root)]), embedder, store, options, written=tick)
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    end, lines = lines[-1], lines[:-1]
    assert end["stopped_by"] and end["read"] == len(lines) and end["read"] > 60
    assert len({line["source"] for line in lines}) == len(lines)  # one line per input, none twice
    fates = [line["fate"] for line in lines]
    assert fates.count("indexed") >= 60 and fates.count("pending") > 0
    assert set(fates) <= {"indexed", "pending"}
    indexed = {line["id"] for line in lines if line["fate"] == "indexed"}
    assert store.index is not None
    assert indexed <= set(ids_in(opensearch, store.index))
    assert set(files) >= indexed


def test_update_metadata_writes_a_new_column_onto_indexed_documents_without_embedding(
    opensearch: OpenSearch,
    prefix: str,
    collection: tuple[Path, dict[str, Path]],
    embedder: OnnxEmbedder,
    tmp_path: Path,
) -> None:
    files = dict(list(collection[1].items())[:12])
    albums = ["nature" if i % 3 else "city" for i in range(len(files))]

    def manifest(name: str, with_album: bool) -> str:
        rows = [
            {"path": str(p), "n": i, **({"album": albums[i]} if with_album else {})}
            for i, p in enumerate(files.values())
        ]
        path = tmp_path / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return str(path)

    store = store_for(opensearch, prefix, dead_letter=tmp_path / "dead.jsonl")
    first = ingest(iter_sources([manifest("a.jsonl", False)]), embedder, store)
    assert first.ok and first.count(Fate.INDEXED) == len(files)
    before = {i: store.get(i) for i in files}
    opts = IngestOptions(update_metadata=True, pause_refresh=True)
    again = ingest(iter_sources([manifest("b.jsonl", True)]), embedder, store, opts)
    assert again.ok and again.embedded == 0 and again.count(Fate.INDEXED) == 0
    assert again.skipped_by_reason == {"metadata_updated": len(files)}
    nature = {i for i, album in zip(files, albums, strict=True) if album == "nature"}
    query = next(r for r in before.values() if r is not None).vector
    assert {h.id for h in store.search(query, k=50, filters={"album": "nature"})} == nature  # refreshed
    for i, (doc_id, old) in enumerate(before.items()):
        new = store.get(doc_id)
        assert old is not None and new is not None and np.array_equal(new.vector, old.vector)
        assert new.metadata == {"n": i, "album": albums[i]} and new.image_ref == old.image_ref
    assert store.index is not None
    assert_exactly(opensearch, store.index, files)
    assert not (tmp_path / "dead.jsonl").exists()
