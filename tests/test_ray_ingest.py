"""The Ray executor on a real Ray (local, started once for the module) against the single-process
ingest: the same ids, vectors within 1e-6 and report counts, into a LocalStore and into the real
OpenSearch node; a Ray Dataset as input; embedding and writer actors killed mid-run; the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from support.ingest_helpers import photo, write_collection
from support.onnx_models import make_tiny_model
from support.opensearch_harness import OpenSearchNode
from support.ray_helpers import assert_same_documents, counts, import_ray, sha_ids, write_photos

from gemsearch.cli import main
from gemsearch.plugin.embedding.sessions import read_manifest
from gemsearch.plugin.ingest.pipeline import ingest_collection
from gemsearch.plugin.ingest.report import Fate, IngestReport
from gemsearch.plugin.ray.faults import CRASH_DIR_ENV, CRASH_ENV
from gemsearch.plugin.ray.options import RayIngestOptions
from gemsearch.plugin.ray.run import ingest_dataset
from gemsearch.plugin.stores.factory import OpenSearchStoreSpec, open_store
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.stores.opensearch.bulk_models import BulkOptions

ray = import_ray()
# small batches, so a run of a few dozen images has many of them (and crashes land mid-run)
OPTS = RayIngestOptions(embed_actors=1, embed_rows=4, read_rows=4, write_batch=4)


def _cli(args: list[str]) -> Any:
    return CliRunner().invoke(main, ["ingest", *args, "--no-progress"])


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    make_tiny_model(path, name="tiny", dim=16)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    root = tmp_path_factory.mktemp("photos")
    return root, sha_ids(write_photos(root))


@pytest.fixture(scope="module")
def single(
    photos: tuple[Path, set[str]], model: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[IngestReport, Path]:
    """The single-process ingest of the photos into a LocalStore: what the Ray runs must equal."""
    store = tmp_path_factory.mktemp("single") / "store"
    return ingest_collection([str(photos[0])], model, store), store


def test_local_store_gets_what_the_single_process_ingest_writes(
    photos: tuple[Path, set[str]], model: Path, single: tuple[IngestReport, Path], tmp_path: Path
) -> None:
    root, ids = photos
    report = ingest_dataset([str(root)], model, tmp_path / "store", options=OPTS)
    assert counts(report) == counts(single[0])
    assert report.failed_by_reason.total() == 3 and report.skipped_by_reason == {"duplicate": 1}
    with LocalStore(tmp_path / "store", read_only=True) as ours, LocalStore(single[1], read_only=True) as ref:
        assert_same_documents(ours, ref, ids)
    # the rerun, through the CLI: nothing embedded again, the broken files fail again (exit 1)
    args = [str(root), "--model", str(model), "--store", str(tmp_path / "store"), "--executor", "ray"]
    again = _cli([*args, "--json"])
    assert again.exit_code == 1, again.output
    rerun = json.loads(again.stdout)
    assert (rerun["embedded"], rerun["failed"]) == (0, 3)
    assert rerun["skipped_by_reason"] == {"present": len(ids) + 1}  # + the copy
    usage = _cli([str(root), "--model", str(model), "--ray-address", "auto"])
    assert usage.exit_code == 2 and "--ray-address needs --executor ray" in usage.output
    local_only = _cli([*args, "--workers", "2"])
    assert local_only.exit_code == 2 and "--workers" in local_only.output


def test_opensearch_gets_what_the_single_process_ingest_writes(
    photos: tuple[Path, set[str]], model: Path, opensearch_node: OpenSearchNode, prefix: str, tmp_path: Path
) -> None:
    root, ids = photos
    urls = (opensearch_node.url,)
    reference = ingest_collection([str(root)], model, OpenSearchStoreSpec(prefix=prefix, urls=urls))
    spec = OpenSearchStoreSpec(prefix=f"{prefix}-ray", urls=urls)
    bulk = BulkOptions(dead_letter_path=tmp_path / "dead.jsonl")
    report = ingest_dataset(
        [str(root)], model, spec, options=OPTS.model_copy(update={"bulk": bulk, "writer_actors": 2})
    )
    assert counts(report) == counts(reference)
    manifest = read_manifest(model)
    with open_store(spec) as ours, open_store(OpenSearchStoreSpec(prefix=prefix, urls=urls)) as ref:
        ours.ensure_index(manifest)
        ref.ensure_index(manifest)
        assert_same_documents(ours, ref, ids)


def test_a_ray_dataset_of_paths_and_of_bytes_is_ingested(
    photos: tuple[Path, set[str]], model: Path, single: tuple[IngestReport, Path], tmp_path: Path
) -> None:
    root, ids = photos
    rows: list[dict[str, Any]] = [{"path": str(p)} for p in sorted(root.rglob("*")) if p.is_file()]
    coffee = (root / "coffee" / "orig.jpg").read_bytes()
    rows += [{"bytes": coffee, "id": "coffee-1", "city": "Prague"}, {"bytes": b"junk", "id": "junk-1"}]
    report = ingest_dataset(ray.data.from_items(rows), model, tmp_path / "store", options=OPTS)
    ref = single[0]
    assert (report.read, report.count(Fate.INDEXED), report.count(Fate.FAILED)) == (
        ref.read + 2,
        ref.count(Fate.INDEXED) + 1,
        ref.count(Fate.FAILED) + 1,
    )
    with LocalStore(tmp_path / "store", read_only=True) as store:
        assert store.count() == len(ids) + 1 and store.existing_ids(ids) == ids
        given, hashed = store.get("coffee-1"), store.get(hashlib.sha256(coffee).hexdigest())
        assert given is not None and hashed is not None
        assert given.metadata == {"city": "Prague"} and given.image_ref is None
        np.testing.assert_allclose(given.vector, hashed.vector, atol=1e-6, rtol=0)


def test_killed_embedding_and_writer_actors_lose_and_duplicate_nothing(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "photos"
    files = write_collection(root, 40, seed=3, side=48)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv(CRASH_ENV, "embed:3,write:3")
    monkeypatch.setenv(CRASH_DIR_ENV, str(markers))
    ledger = tmp_path / "ledger.jsonl"
    options = OPTS.model_copy(update={"ledger_path": ledger})
    report = ingest_dataset([str(root)], model, tmp_path / "store", options=options)
    assert sorted(p.name for p in markers.iterdir()) == ["crashed-embed", "crashed-write"]  # both died
    assert (report.read, report.count(Fate.INDEXED), report.count(Fate.FAILED)) == (41, 40, 1)
    assert report.count(Fate.PENDING) == 0 and report.stopped_by is None
    with LocalStore(tmp_path / "store", read_only=True) as store:
        assert store.count() == len(files) and store.existing_ids(files) == set(files)
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    fates = {e["source"]: e["fate"] for e in lines if "fate" in e}
    assert len(lines) == 42 and len(fates) == 41  # one line per input (re-executed batches included)
    assert sorted(e["id"] for e in lines if e.get("fate") == "indexed") == sorted(files)


def test_without_ray_the_cli_names_the_extra_in_one_line(model: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "for name in ('ray', 'ray.data', 'pyarrow'):  # as in an install without gemsearch[ray]\n"
        "    sys.modules[name] = None\n"
        "from gemsearch.cli import main\n"
        f"main(['ingest', {str(tmp_path)!r}, '--model', {str(model)!r}, '--executor', 'ray'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: ray[data] is not installed; install it with: pip install 'gemsearch[ray]'"
    ]
    api = code.split("from gemsearch.cli")[0] + "from gemsearch.plugin.ray import ingest_dataset\n"
    proc = subprocess.run([sys.executable, "-c", api], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "MissingDependencyError: ray[data] is not installed" in proc.stderr.strip().splitlines()[-1]


def test_the_layout_always_leaves_cpus_to_read_and_decode(tmp_path: Path) -> None:
    from gemsearch.errors import ConfigError
    from gemsearch.plugin.ray.layout import plan
    from gemsearch.plugin.stores.factory import LocalStoreSpec

    spec = LocalStoreSpec(path=tmp_path)
    default = plan(ray, RayIngestOptions(), spec)  # 3 CPUs: one actor, a writer, the rest for tasks
    assert (default.embed_actors, default.writer_actors, default.local_store) == (1, 1, True)
    assert 0 < default.task_cpus <= 3 - 1 - 0.25
    assert default.driver_node == ray.get_runtime_context().get_node_id()
    with pytest.raises(ConfigError, match="leaving none to read and decode"):
        plan(ray, RayIngestOptions(embed_actors=3), spec)


@pytest.mark.parametrize("mode", ["draft", "exact"])
def test_large_jpegs_are_decoded_in_the_runs_mode_like_the_single_process_ingest(
    mode: str, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Photos larger than the model's side: Ray's decode tasks decode them as the single-process
    embedder does in the same mode (draft JPEG scaling or every pixel), and the store records it."""
    root = tmp_path / "large"
    root.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        photo(name).resize((1200, 900)).save(root / f"{name}.jpg", quality=92)
    monkeypatch.setenv("GEMSEARCH_DECODE", mode)  # the single-process embedder's mode
    ingest_collection([str(root)], model, tmp_path / "single")
    report = ingest_dataset(
        [str(root)], model, tmp_path / "ray", options=OPTS.model_copy(update={"decode": mode})
    )
    assert report.count(Fate.INDEXED) == 3
    ids = sha_ids({str(p): 1 for p in root.iterdir()})
    with (
        LocalStore(tmp_path / "ray", read_only=True) as ours,
        LocalStore(tmp_path / "single", read_only=True) as ref,
    ):
        assert ours.decode == ref.decode == mode
        assert_same_documents(ours, ref, ids)
