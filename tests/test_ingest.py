"""Ingest into the LocalStore: counts, ids, resumption, bad inputs, the ledger and the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support.ingest_helpers import photo, write_collection
from support.onnx_models import make_tiny_model

from gemsearch.cli import main
from gemsearch.errors import ModelError
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.ingest.pipeline import IngestOptions, ingest
from gemsearch.plugin.ingest.report import Fate
from gemsearch.plugin.inputs.images import ImageLoadConfig
from gemsearch.plugin.inputs.sources import iter_sources
from gemsearch.plugin.stores.local.store import LocalStore

TESTS = Path(__file__).parent


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
    return root, write_collection(root, 60)


def test_ingest_indexes_every_image_under_its_sha256_and_finds_itself(
    collection: tuple[Path, dict[str, Path]], embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    root, files = collection
    ledger = tmp_path / "ledger.jsonl"
    with LocalStore(tmp_path / "store") as store:
        report = ingest(
            iter_sources([str(root)]), embedder, store, IngestOptions(ledger_path=ledger, workers=2)
        )
        assert report.ok and report.read == len(files) == report.count(Fate.INDEXED) == store.count()
        assert store.existing_ids(files) == set(files)
        for digest, path in list(files.items())[:5]:
            vector = embedder.embed_image(Image.open(path))
            top = store.search(vector, k=3)
            assert top[0].id == digest and top[0].score == pytest.approx(1.0, abs=1e-5)
            assert top[0].image_ref == str(path.absolute())
    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert sorted(e["id"] for e in lines if e.get("fate") == "indexed") == sorted(files)
    assert lines[-1]["run_end"] and lines[-1]["pending"] == 0


def test_rerun_is_a_no_op_and_duplicates_are_skipped(
    collection: tuple[Path, dict[str, Path]], embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    root, files = collection
    copy = tmp_path / "copies"
    copy.mkdir()
    first = next(iter(files.values()))
    (copy / "same-bytes.jpg").write_bytes(first.read_bytes())
    with LocalStore(tmp_path / "store") as store:
        once = ingest(iter_sources([str(root), str(copy)]), embedder, store)
        assert once.count(Fate.INDEXED) == len(files) and once.count(Fate.SKIPPED) == 1
        again = ingest(iter_sources([str(root)]), embedder, store)
        assert again.ok and again.embedded == 0 and again.count(Fate.SKIPPED) == len(files)
        assert store.count() == len(files)


def _bad_inputs(folder: Path) -> dict[str, str | None]:
    """File name -> expected failure reason (None: must be indexed)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = photo("coffee").resize((120, 80))
    jpeg = io.BytesIO()
    base.save(jpeg, "JPEG")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "text.jpg").write_bytes(b"this is not an image at all\n" * 20)
    corrupt = bytearray(jpeg.getvalue())
    corrupt[200:400] = b"\xff" * 200
    (folder / "corrupt.jpg").write_bytes(bytes(corrupt))
    base.convert("CMYK").save(folder / "cmyk.jpg", "JPEG")
    grey16 = Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16))
    grey16.save(folder / "grey16.png")
    rotated = photo("chelsea").resize((90, 60))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(folder / "exif-rotated.jpg", "JPEG", exif=exif)
    Image.new("RGB", (700, 700), "white").save(folder / "bomb.png")  # over the test's pixel cap
    return {
        "zero.jpg": "empty",
        "truncated.jpg": "truncated",
        "text.jpg": "unsupported_format",
        "corrupt.jpg": "corrupt",
        "cmyk.jpg": None,
        "grey16.png": None,
        "exif-rotated.jpg": None,
        "bomb.png": "too_many_pixels",
    }


def test_bad_inputs_each_get_their_outcome(embedder: OnnxEmbedder, tmp_path: Path) -> None:
    expected = _bad_inputs(tmp_path / "bad")
    ledger = tmp_path / "ledger.jsonl"
    options = IngestOptions(image=ImageLoadConfig(max_pixels=400_000), ledger_path=ledger)
    with LocalStore(tmp_path / "store") as store:
        report = ingest(iter_sources([str(tmp_path / "bad")]), embedder, store, options)
        assert not report.ok
        assert store.count() == sum(v is None for v in expected.values())
    fates = {
        Path(e["source"]).name: e for e in map(json.loads, ledger.read_text().splitlines()) if "fate" in e
    }
    for name, reason in expected.items():
        entry = fates[name]
        if reason is None:
            assert entry["fate"] == "indexed", entry
        else:
            assert (entry["fate"], entry["reason"]) in {("failed", reason), ("failed", "corrupt")}, entry
            if name != "corrupt.jpg":  # damage inside entropy-coded data may read as truncated too
                assert entry["reason"] == reason, entry
    assert report.failed_by_reason.total() == sum(v is not None for v in expected.values())


def test_exif_rotated_image_is_embedded_upright(embedder: OnnxEmbedder, tmp_path: Path) -> None:
    _bad_inputs(tmp_path / "bad")
    upright = photo("chelsea").resize((90, 60)).transpose(Image.Transpose.ROTATE_270)
    with LocalStore(tmp_path / "store") as store:
        ingest(iter_sources([str(tmp_path / "bad")]), embedder, store)
        raw = (tmp_path / "bad" / "exif-rotated.jpg").read_bytes()
        stored = store.get(hashlib.sha256(raw).hexdigest())
        assert stored is not None
        cosine = float(stored.vector @ embedder.embed_image(upright))
        sideways = float(stored.vector @ embedder.embed_image(upright.transpose(Image.Transpose.ROTATE_90)))
        assert cosine > 0.99 and cosine > sideways


@pytest.mark.timeout(180)  # "never hangs": a stuck decode or pipeline fails the test instead
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blobs=st.lists(st.binary(max_size=2048), min_size=1, max_size=6))
def test_random_bytes_never_crash_the_ingest(
    blobs: list[bytes], embedder: OnnxEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("fuzz")
    for i, blob in enumerate(blobs):
        (folder / f"f{i}.jpg").write_bytes(blob)
    with LocalStore(folder / "store") as store:
        report = ingest(iter_sources([str(folder)]), embedder, store)
    assert report.read == len(blobs)
    assert report.count(Fate.INDEXED) + report.count(Fate.FAILED) + report.count(Fate.SKIPPED) == len(blobs)
    assert report.count(Fate.PENDING) == 0 and report.stopped_by is None


def test_a_store_made_for_another_model_is_refused(embedder: OnnxEmbedder, tmp_path: Path) -> None:
    other = make_tiny_model(tmp_path / "other.onnx", name="other", dim=8, seed=5)
    with LocalStore(tmp_path / "store") as store:
        store.ensure_index(other)
        with pytest.raises(Exception, match=r"(?i)model|dim"):
            ingest(iter_sources([str(tmp_path)]), embedder, store)
        assert store.count() == 0


def test_embedder_refuses_files_without_a_manifest(tmp_path: Path) -> None:
    import onnx

    path = tmp_path / "plain.onnx"
    make_tiny_model(path)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="no gemsearch manifest"):
        OnnxEmbedder(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load"):
        OnnxEmbedder(tmp_path / "junk.onnx")


_KILLER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from gemsearch.plugin.ingest.pipeline import IngestOptions, ingest
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.inputs.sources import iter_sources
seen = 0
def tick(n):
    global seen
    seen += n
    if seen >= {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)
store = LocalStore({store!r})
ingest(iter_sources([{root!r}]), OnnxEmbedder({model!r}, threads=1), store,
       IngestOptions(write_batch=7, workers=2), written=tick)
"""


@pytest.mark.slow
def test_ingest_killed_mid_run_then_rerun_loses_and_duplicates_nothing(
    collection: tuple[Path, dict[str, Path]], model: Path, embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    root, files = collection
    store_dir = tmp_path / "store"
    code = _KILLER.format(
        tests=str(TESTS), kill_after=25, store=str(store_dir), root=str(root), model=str(model)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with LocalStore(store_dir) as store:
        partial = store.count()
        assert 0 < partial < len(files)
        report = ingest(iter_sources([str(root)]), embedder, store)
        assert report.ok and report.count(Fate.SKIPPED) == partial
        assert report.count(Fate.INDEXED) == len(files) - partial
        assert store.count() == len(files) and store.existing_ids(files) == set(files)


def test_cli_ingest_into_a_local_store(
    collection: tuple[Path, dict[str, Path]], model: Path, tmp_path: Path
) -> None:
    root, files = collection
    store = tmp_path / "store"
    runner = CliRunner()
    args = ["ingest", str(root), "--model", str(model), "--store", str(store), "--json", "--no-progress"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["indexed"] == len(files) and report["ok"] is True
    again = runner.invoke(main, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] == len(files)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    try:
        failed = runner.invoke(main, [*args[:-2], "--no-progress"])
    finally:
        (root / "broken.jpg").unlink()
    assert failed.exit_code == 1
    assert "failed 1" in failed.stdout and "failed by reason" in failed.stdout


def test_cli_shards_split_the_collection_exactly(
    collection: tuple[Path, dict[str, Path]], model: Path, tmp_path: Path
) -> None:
    root, files = collection
    runner = CliRunner()
    for i in range(3):
        store = tmp_path / f"store{i}"
        args = ["ingest", str(root), "--model", str(model), "--store", str(store), "--shard", f"{i}/3"]
        assert runner.invoke(main, [*args, "--no-progress"]).exit_code == 0
    ids = [set(LocalStore(tmp_path / f"store{i}", read_only=True).existing_ids(files)) for i in range(3)]
    assert set.union(*ids) == set(files)
    assert sum(len(s) for s in ids) == len(files)


def test_cli_ingest_takes_a_model_by_its_name_in_the_models_cache(
    collection: tuple[Path, dict[str, Path]], model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, files = collection
    monkeypatch.setenv("GEMSEARCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "models").mkdir(parents=True)
    (tmp_path / "cache" / "models" / "tiny-named.onnx").write_bytes(model.read_bytes())
    args = ["ingest", str(root), "--model", "tiny-named", "--store", str(tmp_path / "s"), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    with LocalStore(tmp_path / "s", read_only=True) as store:
        assert store.count() == len(files)


def test_cli_refuses_both_stores(model: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["ingest", str(tmp_path), "--model", str(model), "--store", "x", "--opensearch", "http://h:9200"],
    )
    assert result.exit_code == 2 and "either --store or --opensearch" in result.output


def test_embedder_batches_equal_single_runs_and_memory_stays_bounded(embedder: OnnxEmbedder) -> None:
    rng = np.random.default_rng(1)
    sizes = [(40 + 7 * (i % 5), 50 + 3 * (i % 7)) for i in range(40)]
    arrays = [rng.integers(0, 255, (3, h, w), dtype=np.uint8) for h, w in sizes]
    together = embedder.embed_prepared(arrays)
    alone = np.stack([embedder.run(a[None])[0] for a in arrays])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    consumed, done, most = 0, 0, 0

    def feed():
        nonlocal consumed
        for i, a in enumerate(arrays):
            consumed += 1
            yield i, a

    for keys, _ in embedder.run_grouped(feed()):
        done += len(keys)
        most = max(most, consumed - done)
    assert done == len(arrays) and most <= 4 * embedder.batch_size


def test_crop_follows_the_evaluation_rule(embedder: OnnxEmbedder) -> None:
    from gemsearch.preprocess import crop_and_shrink

    img = photo("astronaut")  # 512 x 512, over the tiny model's max_side of 256
    box = (100.0, 50.0, 300.0, 350.0)
    prepared = embedder.prepare(img, crop=box)
    expected = np.asarray(crop_and_shrink(img, box, 256)).transpose(2, 0, 1)
    np.testing.assert_array_equal(prepared, expected)
    assert max(embedder.prepare(img).shape[1:]) == 256


def test_providers_are_chosen_and_checked() -> None:
    from gemsearch.plugin.embedding.sessions import resolve_providers

    assert resolve_providers()[-1] == "CPUExecutionProvider"
    assert resolve_providers(["cpu"]) == ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in resolve_providers():
        with pytest.raises(ModelError, match="not available"):
            resolve_providers(["cuda"])


def test_embedder_satisfies_the_protocol(embedder: OnnxEmbedder) -> None:
    from gemsearch.protocols import Embedder

    assert isinstance(embedder, Embedder) and embedder.output_dim == 16
    assert os.fspath(embedder.path).endswith("tiny.onnx")


def test_bad_manifest_rows_are_failures_not_crashes(
    collection: tuple[Path, dict[str, Path]], model: Path, tmp_path: Path
) -> None:
    from gemsearch.plugin.ingest.pipeline import ingest_collection

    _, files = collection
    some = list(files.items())[:3]
    manifest = tmp_path / "list.jsonl"
    rows = [json.dumps({"path": str(p), "colour": "red", "n": i}) for i, (_, p) in enumerate(some)]
    rows.insert(1, "{not json")
    rows.append(json.dumps({"id": "no-path"}))
    manifest.write_text("\n".join(rows) + "\n")
    report = ingest_collection([str(manifest)], model, tmp_path / "store")
    assert report.read == 5 and report.count(Fate.INDEXED) == 3
    assert report.failed_by_reason == {"bad_row": 2}
    with LocalStore(tmp_path / "store", read_only=True) as store:
        record = store.get(some[2][0])
        assert record is not None and record.metadata == {"colour": "red", "n": 2}
        assert [h.id for h in store.search(record.vector, k=5, filters={"n": 0})] == [some[0][0]]


def test_parallel_runs_give_the_same_descriptors_once_each(model: Path) -> None:
    rng = np.random.default_rng(2)
    arrays = [rng.integers(0, 255, (3, 30 + i % 6, 40 + i % 4), dtype=np.uint8) for i in range(30)]
    serial = OnnxEmbedder(model, threads=2).embed_prepared(arrays)
    parallel = OnnxEmbedder(model, threads=2, parallel_runs=3, batch_size=2)
    np.testing.assert_allclose(parallel.embed_prepared(arrays), serial, atol=1e-6)
    keys = [k for ks, _ in parallel.run_grouped(enumerate(arrays)) for k in ks]
    assert sorted(keys) == list(range(len(arrays)))


def test_bulk_runs_default_to_one_per_two_cpus() -> None:
    from gemsearch.plugin.embedding.embedder import bulk_parallel_runs
    from gemsearch.plugin.embedding.sessions import default_threads

    runs = bulk_parallel_runs(["cpu"])
    cpus = default_threads()
    assert runs == (cpus if cpus <= 2 else min(8, cpus // 2))


def _manifest(path: Path, files: dict[str, Path], **columns: list[object]) -> Path:
    rows = [
        {"path": str(p), "n": i, **{name: values[i] for name, values in columns.items()}}
        for i, p in enumerate(files.values())
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_update_metadata_writes_a_new_column_onto_stored_documents_without_embedding(
    collection: tuple[Path, dict[str, Path]], model: Path, embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    _, all_files = collection
    files = dict(list(all_files.items())[:12])
    albums = ["nature" if i % 3 else "city" for i in range(len(files))]
    with LocalStore(tmp_path / "store") as store:
        first = ingest(iter_sources([str(_manifest(tmp_path / "a.jsonl", files))]), embedder, store)
        assert first.ok and first.count(Fate.INDEXED) == len(files)
        before = {i: store.get(i) for i in files}
        manifest = _manifest(tmp_path / "b.jsonl", files, album=albums)
        plain = ingest(iter_sources([str(manifest)]), embedder, store)
        assert plain.skipped_by_reason == {"present": len(files)}  # without the flag: a no-op
        ledger = tmp_path / "ledger.jsonl"
        opts = IngestOptions(update_metadata=True, ledger_path=ledger)
        again = ingest(iter_sources([str(manifest)]), embedder, store, opts)
        assert again.ok and again.embedded == 0 and again.count(Fate.INDEXED) == 0
        assert again.skipped_by_reason == {"metadata_updated": len(files)}
        lines = [json.loads(line) for line in ledger.read_text().splitlines()[:-1]]
        assert len(lines) == len(files) and {line["reason"] for line in lines} == {"metadata_updated"}
        nature = {i for i, album in zip(files, albums, strict=True) if album == "nature"}
        query = next(r for r in before.values() if r is not None).vector
        assert {h.id for h in store.search(query, k=50, filters={"album": "nature"})} == nature
        for i, (doc_id, old) in enumerate(before.items()):
            new = store.get(doc_id)
            assert old is not None and new is not None and np.array_equal(new.vector, old.vector)
            assert new.metadata == {"n": i, "album": albums[i]} and new.image_ref == old.image_ref
        folder = ingest(iter_sources([str(next(iter(files.values())).parent)]), embedder, store, opts)
        assert folder.embedded < folder.read and "metadata_updated" not in folder.skipped_by_reason
    runner = CliRunner()
    args = ["ingest", str(manifest), "--model", str(model), "--store", str(tmp_path / "store"), "--json"]
    result = runner.invoke(main, [*args, "--update-metadata", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped_by_reason"] == {"metadata_updated": len(files)}
    both = runner.invoke(main, [*args, "--update-metadata", "--no-skip-existing"])
    assert both.exit_code == 2 and "exclude each other" in both.output


class _SlowWrites:
    """A LocalStore whose writes wait until ``release`` is set (or a long time has passed)."""

    def __init__(self, inner: LocalStore, release: threading.Event, on_return: list[int], seen: list[int]):
        self.inner, self.release, self.on_return, self.seen = inner, release, on_return, seen

    def write(self, records: object, **kwargs: object) -> object:
        self.release.wait(60)
        out = self.inner.write(records, **kwargs)  # type: ignore[arg-type]
        if not self.on_return:
            self.on_return.append(self.seen[0])
        return out

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_progress_counts_embedded_inputs_before_the_store_acknowledges_them(
    collection: tuple[Path, dict[str, Path]], embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    _, files = collection
    part = sorted(files.values())[:20]
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"{p}\n" for p in part) + f"{tmp_path / 'missing.jpg'}\n")
    done, acknowledged, at_first_return = [0], [0], []
    release = threading.Event()

    def progress(n: int) -> None:
        done[0] += n
        if done[0] == len(part) + 1:  # every input embedded or ended: let the store answer
            release.set()

    def written(n: int) -> None:
        acknowledged[0] += n

    with LocalStore(tmp_path / "store") as inner:
        store = _SlowWrites(inner, release, at_first_return, done)
        report = ingest(
            iter_sources([str(listing)]), embedder, store,  # type: ignore[arg-type]
            IngestOptions(write_batch=8, workers=2), progress=progress, written=written,
        )  # fmt: skip
        assert release.is_set(), "progress did not count every input while the writes were waiting"
        assert report.embedded == len(part) and report.count(Fate.FAILED) == 1
        assert at_first_return == [len(part) + 1] and done[0] == report.read
        assert acknowledged[0] == report.count(Fate.INDEXED) == len(part) == inner.count()
