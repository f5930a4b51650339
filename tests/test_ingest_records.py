"""``ingest_records``: images handed over in memory (bytes, paths, PIL images) as dicts, into the
LocalStore and the real OpenSearch node — the same vectors and ids as the files, bad records as
failed inputs, reruns skipped before decoding, the iterable read lazily."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opensearchpy import OpenSearch
from PIL import Image
from support.ingest_helpers import write_collection
from support.onnx_models import make_tiny_model

from gemsearch.plugin import OnnxEmbedder, OpenSearchStoreSpec, ingest_collection, ingest_records
from gemsearch.plugin.ingest.pipeline import IngestOptions
from gemsearch.plugin.ingest.report import Fate
from gemsearch.plugin.inputs.images import ImageLoadConfig
from gemsearch.plugin.inputs.items import pixels_id
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.protocols import VectorStore


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> OnnxEmbedder:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    make_tiny_model(path, name="tiny", dim=16)
    return OnnxEmbedder(path, threads=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_collection(tmp_path_factory.mktemp("photos"), 9, side=64)


@pytest.fixture(scope="module")
def file_vectors(
    embedder: OnnxEmbedder, files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The vectors of the files ingested from their folder: what every record must reproduce."""
    folder = next(iter(files.values())).parents[1]
    with LocalStore(tmp_path_factory.mktemp("from-files") / "store") as store:
        report = ingest_collection([str(folder)], embedder, store)
        assert report.ok and report.count(Fate.INDEXED) == len(files)
        return {doc_id: store.get(doc_id).vector for doc_id in files}  # type: ignore[union-attr]


def _records(files: dict[str, Path]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Records of every kind for the files, and {record id: the id of the file it shows}: bytes
    (content-hash id), str and Path paths, PIL images with and without an id."""
    records: list[dict[str, Any]] = []
    same: dict[str, str] = {}
    for n, (digest, path) in enumerate(sorted(files.items())):
        kind = n % 5
        meta = {"n": n, "album": "even" if n % 2 == 0 else "odd"}
        if kind == 0:
            records.append({"image": path.read_bytes(), "metadata": meta})
            same[digest] = digest
        elif kind == 1:
            records.append({"image": str(path), "metadata": meta})
            same[digest] = digest
        elif kind == 2:
            records.append({"id": f"p{n}", "image": path, "metadata": meta})
            same[f"p{n}"] = digest
        elif kind == 3:
            records.append({"id": f"pil{n}", "image": Image.open(path), "metadata": meta})
            same[f"pil{n}"] = digest
        else:
            image = Image.open(io.BytesIO(path.read_bytes()))
            records.append({"image": image})
            same[pixels_id(image)] = digest
    return records, same


BAD: list[tuple[Any, str]] = [
    ("not a dict", "expected a dict"),
    ({"id": "x1", "metadata": {"a": 1}}, "no 'image'"),
    ({"id": "x2", "image": 42}, "'image' must be image bytes, a path or a PIL image, got int"),
    ({"id": "x3", "image": b"this is not an image"}, "not an image in an allowed format"),
    ({"id": "x4", "image": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40}, "x4"),
    ({"id": "x5", "image": b"..", "metadata": {"tags": {"a", "b"}}}, "metadata.tags: a set is not JSON"),
    ({"id": "x6", "image": b"..", "metadata": {"score": float("nan")}}, "metadata.score: nan"),
    ({"id": "x7", "image": b"..", "metadata": {1: "a"}}, "key 1 is not a string"),
    ({"id": "x8", "image": b"..", "imgae": b".."}, "unknown keys ['imgae']"),
    ({"id": "", "image": b".."}, "'id' must be a non-empty string"),
    ({"id": "x9", "image": "/no/such/file.jpg"}, "no such file"),
]


def _check_like_files(
    store: VectorStore, same: dict[str, str], file_vectors: dict[str, Any], files: dict[str, Path]
) -> None:
    for record_id, file_id in same.items():
        stored = store.get(record_id)
        assert stored is not None, record_id
        np.testing.assert_allclose(stored.vector, file_vectors[file_id], atol=1e-6)
        path_given = record_id == file_id and stored.image_ref is not None
        if path_given:  # a path record keeps the file's reference; bytes and PIL images have none
            assert stored.image_ref == str(files[file_id].absolute())


def _run(
    records: list[Any], embedder: OnnxEmbedder, store: Any, ledger: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ingest good and bad records, then again: checks the fates, the reasons and the rerun."""
    good = len(records)
    mixed = [*records[:3], *(bad for bad, _ in BAD), *records[3:]]
    with caplog.at_level(logging.WARNING):
        report = ingest_records(iter(mixed), embedder, store, options=IngestOptions(ledger_path=ledger))
    assert report.read == good + len(BAD)
    assert report.count(Fate.INDEXED) == good and report.count(Fate.FAILED) == len(BAD)
    assert report.stopped_by is None and not report.ok
    for _, why in BAD:
        assert any(why in message for message in caplog.messages), (why, caplog.messages)
    lines = [json.loads(line) for line in ledger.read_text().splitlines() if "fate" in line]
    failed = {line["source"]: line["reason"] for line in lines if line["fate"] == "failed"}
    assert failed["records[3]"] == "bad_record" and failed["records[6]"] == "unsupported_format"
    assert failed["/no/such/file.jpg"] == "not_found"  # a path record is named by its path, as files are

    # a rerun skips every stored id before decoding: even undecodable bytes under a stored id
    again = [*records, {"id": "p2", "image": b"not an image, never decoded"}]
    rerun = ingest_records((r for r in again), embedder, store)
    assert rerun.ok and rerun.embedded == 0
    assert rerun.count(Fate.SKIPPED) == good + 1 and rerun.skipped_by_reason["present"] == good + 1


def test_records_into_a_local_store_match_the_files(
    embedder: OnnxEmbedder,
    files: dict[str, Path],
    file_vectors: dict[str, Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    records, same = _records(files)
    with LocalStore(tmp_path / "store") as store:
        _run(records, embedder, store, tmp_path / "ledger.jsonl", caplog)
        assert store.count() == len(files)
        _check_like_files(store, same, file_vectors, files)
        hit = store.search(file_vectors[sorted(files)[0]], k=1, filters={"album": "even"})
        assert hit[0].metadata == {"n": 0, "album": "even"}


@pytest.mark.opensearch
def test_records_into_opensearch_match_the_files(
    embedder: OnnxEmbedder,
    files: dict[str, Path],
    file_vectors: dict[str, Any],
    tmp_path: Path,
    opensearch: OpenSearch,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = str(opensearch.transport.get_connection().host)
    spec = OpenSearchStoreSpec(prefix=prefix, urls=(url,))
    records, same = _records(files)
    _run(records, embedder, spec, tmp_path / "ledger.jsonl", caplog)
    from gemsearch.plugin.stores.factory import open_store

    with open_store(spec, model="tiny") as store:
        assert store.count() == len(files)
        _check_like_files(store, same, file_vectors, files)


def test_records_are_read_lazily(embedder: OnnxEmbedder, files: dict[str, Path], tmp_path: Path) -> None:
    data = next(iter(files.values())).read_bytes()
    pulled = 0
    seen_at_first_embed: list[int] = []

    def records() -> Iterator[dict[str, Any]]:
        nonlocal pulled
        for n in range(400):
            pulled += 1
            yield {"id": f"r{n}", "image": data}

    def progress(_n: int) -> None:
        if not seen_at_first_embed:
            seen_at_first_embed.append(pulled)

    options = IngestOptions(workers=2, window=8, check_chunk=16, write_batch=32)
    with LocalStore(tmp_path / "store") as store:
        report = ingest_records(records(), embedder, store, options=options, progress=progress)
        assert report.ok and store.count() == 400
    assert seen_at_first_embed and seen_at_first_embed[0] < 100


def test_a_pil_image_over_the_pixel_cap_is_refused_before_its_pixels_are_read(
    embedder: OnnxEmbedder, tmp_path: Path
) -> None:
    """Its id would hash its pixels: the cap comes first. The file is cut short, so reading its
    pixels fails (``corrupt``): the reason says the pixels were never read."""
    data = io.BytesIO()
    Image.effect_noise((400, 300), 64).convert("RGB").save(data, format="PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    lazy = Image.open(cut)  # the header only
    options = IngestOptions(image=ImageLoadConfig(max_pixels=100_000))
    with LocalStore(tmp_path / "store") as store:
        report = ingest_records([{"image": lazy}], embedder, store, options=options)
        assert store.count() == 0
    assert report.failed_by_reason == {"too_many_pixels": 1}
