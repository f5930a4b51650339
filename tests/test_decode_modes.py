"""Draft and exact JPEG decoding: what each mode decodes, that exact mode is cirtorch's preprocessing
bit for bit, that draft mode stays close to it, and that a store refuses the other mode (ingest and
search) in one line."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from opensearchpy import OpenSearch
from PIL import Image
from support.ingest_helpers import photo
from support.onnx_models import make_tiny_model

from gemsearch.cli import main
from gemsearch.errors import ModelError, StoreError
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.inputs.images import load_scaled_image_bytes
from gemsearch.plugin.query import Searcher
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.plugin.stores.opensearch.index_checks import IndexOptions
from gemsearch.plugin.stores.opensearch.store import OpenSearchStore
from gemsearch.preprocess import shrink, thumbnail_size
from gemsearch.protocols import Record

MAX_SIDE = 256


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    make_tiny_model(path, max_side=MAX_SIDE)
    return path


def large_jpeg(
    size: tuple[int, int] = (1600, 1200), orientation: int | None = None, name: str = "coffee"
) -> bytes:
    """A real photo enlarged to ``size``, as a JPEG (optionally with an EXIF orientation)."""
    img = photo(name).resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.ravel(), b.ravel()))


@pytest.mark.parametrize(
    ("size", "max_side"),
    [
        ((1600, 1200), 256),
        ((1200, 1600), 256),
        ((300, 7), 100),
        ((5, 900), 64.7),
        ((640, 480), 640),
        ((2, 2), 1),
    ],
)
def test_thumbnail_size_is_pils(size: tuple[int, int], max_side: float) -> None:
    img = Image.new("RGB", size)
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    assert thumbnail_size(size, max_side) == img.size


@pytest.mark.parametrize(
    ("orientation", "upright"), [(None, (1600, 1200)), (6, (1200, 1600)), (3, (1600, 1200))]
)
def test_draft_decodes_at_the_smallest_scale_covering_the_shrunk_size(
    orientation: int | None, upright: tuple[int, int]
) -> None:
    data = large_jpeg(orientation=orientation)
    exact = load_scaled_image_bytes(data)
    draft = load_scaled_image_bytes(data, draft_side=MAX_SIDE)
    assert exact.scale == 1 and exact.image.size == exact.full_size == upright
    # 1600x1200 -> 256x192: 1/4 gives 400x300, 1/8 would give 200x150 (< 256x192)
    assert draft.scale == 4 and draft.full_size == upright
    assert draft.image.size == (upright[0] // 4, upright[1] // 4)


def test_draft_leaves_small_jpegs_and_other_formats_alone() -> None:
    small = large_jpeg((240, 180))
    assert load_scaled_image_bytes(small, draft_side=MAX_SIDE).scale == 1
    buf = io.BytesIO()
    photo("coffee").resize((1600, 1200)).save(buf, "PNG")
    png = load_scaled_image_bytes(buf.getvalue(), draft_side=MAX_SIDE)
    assert png.scale == 1 and png.image.size == (1600, 1200)


def test_exact_mode_is_cirtorchs_preprocessing_bit_for_bit(model: Path) -> None:
    embedder = OnnxEmbedder(model, decode="exact")
    data = large_jpeg()
    with Image.open(io.BytesIO(data)) as im:  # cirtorch: PIL loads every pixel, then imresize
        full = im.convert("RGB")
    reference = full.copy()
    reference.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    prepared = embedder.prepare(embedder.decode_bytes(data))
    assert np.array_equal(prepared, np.asarray(reference).transpose(2, 0, 1))
    assert np.array_equal(np.asarray(shrink(full, MAX_SIDE)), np.asarray(reference))


def test_draft_mode_gives_the_same_shapes_and_nearly_the_same_descriptors(model: Path) -> None:
    exact, draft = OnnxEmbedder(model, decode="exact"), OnnxEmbedder(model, decode="draft")
    for name, orientation in [("coffee", None), ("astronaut", 6), ("chelsea", 8)]:
        data = large_jpeg((2000, 1500), orientation, name)
        a, b = exact.prepare(exact.decode_bytes(data)), draft.prepare(draft.decode_bytes(data))
        assert a.shape == b.shape
        assert 0 < np.abs(a.astype(int) - b.astype(int)).mean() < 3  # differs, by a little
        assert _cosine(exact.embed(data), draft.embed(data)) > 0.999
        box = (300.0, 200.0, 1500.0, 1100.0)
        crop_a = exact.embed_image(exact.decode_bytes(data), crop=box)
        crop_b = draft.embed_image(draft.decode_bytes(data), crop=box)
        assert _cosine(crop_a, crop_b) > 0.995


def _records(embedder: OnnxEmbedder) -> list[Record]:
    data = large_jpeg()
    return [Record(id="a", vector=embedder.embed(data)[0], image_ref="a.jpg", metadata={})]


def test_a_local_store_refuses_the_other_decode_mode(model: Path, tmp_path: Path) -> None:
    draft = OnnxEmbedder(model, decode="draft")
    with LocalStore(tmp_path / "store") as store:
        store.ensure_index(draft.manifest, decode="draft")
        store.upsert(_records(draft))
    exact = OnnxEmbedder(model, decode="exact")
    with LocalStore(tmp_path / "store") as store:
        assert store.decode == "draft"
        with pytest.raises(StoreError, match="draft JPEG decoding, these with exact") as err:
            store.ensure_index(exact.manifest, decode="exact")
        assert "\n" not in str(err.value)
        assert store.count() == 1
    with LocalStore(tmp_path / "store", read_only=True) as store:
        with pytest.raises(ModelError, match="drop --exact-decode"):
            Searcher(exact, store)
        Searcher(draft, store)  # the same mode searches


def test_ingest_and_search_commands_refuse_the_other_mode_in_one_line(model: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(large_jpeg())
    store = str(tmp_path / "store")
    runner = CliRunner()
    ok = runner.invoke(main, ["ingest", str(photos), "--model", str(model), "--store", store])
    assert ok.exit_code == 0, ok.output
    refused = runner.invoke(
        main,
        [
            "ingest",
            str(photos),
            "--model",
            str(model),
            "--store",
            store,
            "--exact-decode",
            "--no-skip-existing",
        ],
    )
    assert refused.exit_code == 1
    assert "these with exact" in refused.output and "Traceback" not in refused.output
    query = str(photos / "a.jpg")
    searched = runner.invoke(
        main, ["search", query, "--model", str(model), "--store", store, "--exact-decode"]
    )
    assert searched.exit_code == 1
    assert "drop --exact-decode" in searched.output and "Traceback" not in searched.output
    found = runner.invoke(main, ["search", query, "--model", str(model), "--store", store, "--json"])
    assert found.exit_code == 0, found.output


def test_an_opensearch_index_records_the_mode_and_refuses_the_other(
    model: Path, opensearch: OpenSearch, prefix: str
) -> None:
    exact = OnnxEmbedder(model, decode="exact")
    store = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    store.ensure_index(exact.manifest, decode="exact")
    store.upsert(_records(exact))
    assert store.decode == "exact"
    meta = opensearch.indices.get_mapping(index=store.index)[store.index]["mappings"]["_meta"]
    assert meta["gemsearch"]["decode"] == "exact"
    draft = OnnxEmbedder(model, decode="draft")
    other = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix))
    with pytest.raises(StoreError, match="exact JPEG decoding, these with draft") as err:
        other.ensure_index(draft.manifest, decode="draft")
    assert "\n" not in str(err.value)
    reader = OpenSearchStore(opensearch, options=IndexOptions(prefix=prefix), model=draft.manifest.name)
    with pytest.raises(ModelError, match="pass --exact-decode"):
        Searcher(draft, reader)
    Searcher(exact, reader)
