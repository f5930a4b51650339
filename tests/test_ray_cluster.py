"""The Ray executor on a Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``):
the same result as the single-process ingest, and a driver killed mid-run (SIGKILL) whose rerun
resumes to the exact result."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.ingest_helpers import write_collection
from support.onnx_models import make_tiny_model
from support.ray_helpers import assert_same_documents, counts, import_ray, sha_ids, write_photos

from gemsearch.plugin.ingest.pipeline import ingest_collection
from gemsearch.plugin.ingest.report import Fate
from gemsearch.plugin.ray.options import RayIngestOptions
from gemsearch.plugin.ray.run import ingest_dataset
from gemsearch.plugin.stores.local.store import LocalStore

ray = import_ray()
OPTS = RayIngestOptions(embed_actors=2, embed_rows=4, read_rows=4, write_batch=4)
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    nodes.add_node(num_cpus=2)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    make_tiny_model(path, name="tiny", dim=16)
    return path


def test_two_nodes_give_the_single_process_result(cluster: Any, model: Path, tmp_path: Path) -> None:
    assert sum(1 for n in ray.nodes() if n["Alive"]) == 2
    root = tmp_path / "photos"
    ids = sha_ids(write_photos(root))
    reference = ingest_collection([str(root)], model, tmp_path / "single")
    report = ingest_dataset([str(root)], model, tmp_path / "ray", options=OPTS)
    assert counts(report) == counts(reference)
    with (
        LocalStore(tmp_path / "ray", read_only=True) as ours,
        LocalStore(tmp_path / "single", read_only=True) as ref,
    ):
        assert_same_documents(ours, ref, ids)


_DRIVER = """
import os, signal, sys
import ray
from gemsearch.plugin.ray.options import RayIngestOptions
from gemsearch.plugin.ray.run import ingest_dataset
seen = 0
def tick(n):
    global seen
    seen += n
    if seen >= {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)
ray.init(address={address!r}, log_to_driver=False)
options = RayIngestOptions(embed_actors=2, embed_rows=2, read_rows=2, write_batch=2)
ingest_dataset([{root!r}], {model!r}, {store!r}, options=options, progress=tick)
"""


def test_a_killed_driver_is_resumed_by_the_rerun(cluster: Any, model: Path, tmp_path: Path) -> None:
    root, store = tmp_path / "photos", tmp_path / "store"
    files = write_collection(root, 60, seed=5, side=48)
    code = _DRIVER.format(
        kill_after=8, address=cluster.address, root=str(root), model=str(model), store=str(store)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    with LocalStore(store, read_only=True) as partial_store:
        partial = partial_store.count()
    assert 8 <= partial < len(files)  # whole batches only; the kill came mid-run
    report = ingest_dataset([str(root)], model, store, options=OPTS)
    assert report.ok and report.count(Fate.INDEXED) + report.count(Fate.SKIPPED) == len(files)
    assert report.count(Fate.SKIPPED) >= partial  # what the killed run wrote is not embedded again
    with LocalStore(store, read_only=True) as done:
        assert done.count() == len(files) and done.existing_ids(files) == set(files)
