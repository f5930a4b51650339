"""Ingest under hostile inputs (LocalStore): one entry's trouble is that entry's ledger line, never
the run's; every input read gets exactly one line; a failure never claims an id; odd file names
are stored losslessly."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support.ingest_helpers import photo
from support.onnx_models import make_tiny_model

from gemsearch.cli import main
from gemsearch.image_refs import image_ref_of, path_of_ref, printable_path
from gemsearch.plugin.ingest.pipeline import IngestOptions, ingest_collection
from gemsearch.plugin.ingest.report import Fate, IngestReport
from gemsearch.plugin.stores.local.store import LocalStore


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    make_tiny_model(path, name="tiny", dim=16)
    return path


def _jpeg(seed: int, side: int = 64) -> bytes:
    src = photo(("astronaut", "coffee", "chelsea", "rocket")[seed % 4])
    x, y = 7 * seed % (src.width - side), 11 * seed % (src.height - side)
    buf = io.BytesIO()
    src.crop((x, y, x + side, y + side)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ledger(path: Path) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if "run_end" not in line]


def _stored_ids(store: Path) -> set[str]:
    with LocalStore(store, read_only=True) as s:
        return s.existing_ids([]) | {h.id for h in s.search(np.ones(16, np.float32), k=10_000)}


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def test_a_symlink_loop_is_one_unreadable_entry_not_the_end_of_the_run(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(_jpeg(0))
    (folder / "l.jpg").symlink_to("l.jpg")  # resolves to itself
    (folder / "m.jpg").symlink_to("n.jpg")
    (folder / "n.jpg").symlink_to("m.jpg")  # a loop of two
    ledger = tmp_path / "ledger.jsonl"
    report = ingest_collection(
        [str(folder)], model, tmp_path / "store", options=IngestOptions(ledger_path=ledger)
    )
    assert report.count(Fate.INDEXED) == 1 and report.failed_by_reason == {"unreadable": 3}
    assert sorted(str(line["source"]).rsplit("/", 1)[1] for line in _ledger(ledger)) == [
        "a.jpg",
        "l.jpg",
        "m.jpg",
        "n.jpg",
    ]
    code, out = _cli("ingest", str(folder), "--model", str(model), "--store", str(tmp_path / "s2"))
    assert code == 1 and "indexed 1" in out and "unreadable: 3" in out and "Traceback" not in out


def test_a_non_utf8_file_name_is_indexed_and_its_path_round_trips(model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    odd = folder / os.fsdecode(b"x\xff y\xe9.jpg")
    odd.write_bytes(_jpeg(1))
    plain = folder / "plain é.jpg"
    plain.write_bytes(_jpeg(2))
    ledger = tmp_path / "ledger.jsonl"
    code, out = _cli(
        "ingest", str(folder), "--model", str(model), "--store", str(tmp_path / "s"), "--ledger", str(ledger)
    )
    assert code == 0, out
    with LocalStore(tmp_path / "s", read_only=True) as store:
        odd_ref = store.get(_sha(_jpeg(1)))
        plain_ref = store.get(_sha(_jpeg(2)))
    assert odd_ref is not None and plain_ref is not None
    assert odd_ref.image_ref is not None and odd_ref.image_ref.startswith("file://")
    assert path_of_ref(odd_ref.image_ref) == odd and path_of_ref(odd_ref.image_ref).read_bytes() == _jpeg(1)
    assert plain_ref.image_ref == str(plain)  # valid UTF-8 names are stored as they are
    sources = {str(line["source"]) for line in _ledger(ledger)}
    assert printable_path(odd) in sources and "\\xff" in printable_path(odd)
    # a path list names the same file by its bytes
    listing = tmp_path / "list.txt"
    listing.write_bytes(os.fsencode(odd) + b"\n")
    code, out = _cli("ingest", str(listing), "--model", str(model), "--store", str(tmp_path / "s2"))
    assert code == 0 and "indexed 1" in out


def test_image_refs_round_trip_any_bytes() -> None:
    for raw in (b"/a/b.jpg", b"/a/\xff\xfe.jpg", b"/a/%41 b#?.jpg", b"/caf\xc3\xa9/x.jpg", b"/\x80/%ff"):
        path = os.fsdecode(raw)
        ref = image_ref_of(path)
        ref.encode("utf-8")  # storable in SQLite and JSON
        assert os.fsencode(path_of_ref(ref)) == raw


_BAD_ROWS = [
    b"{x",  # not JSON
    b"[1, 2]",  # not an object
    b'{"path": 5}',  # a path that is not a string
    b'{"path": "\xff.jpg"}',  # not UTF-8
    b'{"path": "' + b"a" * (11 << 20) + b'"}',  # a 11 MB line
    b'{"path": "b.jpg", "colour": "\\udcff"}',  # metadata no store can write
    b'{"path": "b.jpg", "id": "\\ud800"}',  # an id no store can write
    b"[" * 5000 + b"]" * 5000,  # nested past the parser's recursion limit
]


def _bad_manifest(tmp_path: Path) -> Path:
    (tmp_path / "a.jpg").write_bytes(_jpeg(3))
    (tmp_path / "b.jpg").write_bytes(_jpeg(4))
    rows = [b'{"path": "a.jpg"}', *_BAD_ROWS, b'{"path": "b.jpg", "colour": "red"}']
    manifest = tmp_path / "m.jsonl"
    manifest.write_bytes(b"\n".join(rows) + b"\n")
    return manifest


def test_bad_manifest_rows_are_failures_through_the_cli(model: Path, tmp_path: Path) -> None:
    manifest = _bad_manifest(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    code, out = _cli(
        "ingest", str(manifest), "--model", str(model), "--store", str(tmp_path / "s"),
        "--ledger", str(ledger), "--json",
    )  # fmt: skip
    report = json.loads(out[out.index("{") :])
    assert code == 1 and report["indexed"] == 2 and report["failed_by_reason"] == {"bad_row": len(_BAD_ROWS)}
    lines = _ledger(ledger)
    assert len(lines) == report["read"] == len(_BAD_ROWS) + 2
    assert [line["source"] for line in lines if line["fate"] == "failed"] == [
        f"{manifest}:{n}" for n in range(2, len(_BAD_ROWS) + 2)
    ]
    assert _stored_ids(tmp_path / "s") == {_sha(_jpeg(3)), _sha(_jpeg(4))}


def test_bad_manifest_rows_are_failures_through_the_python_api(model: Path, tmp_path: Path) -> None:
    manifest = _bad_manifest(tmp_path)
    report = ingest_collection([str(manifest)], model, tmp_path / "s")
    assert report.count(Fate.INDEXED) == 2 and report.failed_by_reason == {"bad_row": len(_BAD_ROWS)}


def test_bad_csv_rows_are_failures_and_reading_goes_on(model: Path, tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_jpeg(5))
    (tmp_path / os.fsdecode(b"\xfe.jpg")).write_bytes(_jpeg(6))
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(
        b"path,colour\n"
        b"a.jpg,red\n"
        b"a.jpg,red,surplus\n"  # more fields than columns
        b"b.jpg," + b"x" * 200_000 + b"\n"  # a field over the CSV reader's limit
        b"a.jpg,\xff\n"  # metadata that is not UTF-8
        b"\xfe.jpg,blue\n"  # a file name that is not UTF-8: fine, it names the file
    )
    report = ingest_collection([str(manifest)], model, tmp_path / "s")
    assert report.count(Fate.INDEXED) == 2 and report.failed_by_reason == {"bad_row": 3}, report.summary()


def _manifest(tmp_path: Path, rows: list[dict[str, str]]) -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_failed_input_does_not_claim_its_id(model: Path, tmp_path: Path) -> None:
    good = _jpeg(7)
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    (tmp_path / "good.jpg").write_bytes(good)
    rows = [
        {"path": "truncated.jpg", "id": "x1"},
        {"path": "garbage.jpg", "id": "x1"},
        {"path": "good.jpg", "id": "x1"},
        {"path": "good.jpg", "id": "x2"},
        {"path": "truncated.jpg", "id": "x2"},  # after a good one: a duplicate, not a failure
    ]
    ledger = tmp_path / "ledger.jsonl"
    opts = IngestOptions(ledger_path=ledger, check_chunk=1, window=1)
    report = ingest_collection([str(_manifest(tmp_path, rows))], model, tmp_path / "s", options=opts)
    assert report.count(Fate.INDEXED) == 2 and report.count(Fate.FAILED) == 2
    assert report.skipped_by_reason == {"duplicate": 1}
    assert len(_ledger(ledger)) == 5
    with LocalStore(tmp_path / "s", read_only=True) as store:
        x1 = store.get("x1")
        assert x1 is not None and x1.image_ref == str(tmp_path / "good.jpg")
    again = ingest_collection([str(_manifest(tmp_path, rows))], model, tmp_path / "s")
    assert again.count(Fate.INDEXED) == 0 and again.embedded == 0


def test_identical_copies_of_a_broken_file_each_fail_none_is_a_duplicate(model: Path, tmp_path: Path) -> None:
    data = _jpeg(8)
    folder = tmp_path / "d"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (folder / name).write_bytes(data[: len(data) // 2])
    report = ingest_collection([str(folder)], model, tmp_path / "s")
    assert report.failed_by_reason == {"truncated": 3} and report.count(Fate.SKIPPED) == 0


def test_identical_broken_copies_are_read_once_each_not_once_per_round(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gemsearch.plugin.ingest import pipeline

    data = _jpeg(9)
    folder = tmp_path / "d"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i:02d}.jpg").write_bytes(data[: len(data) // 2])
    reads: list[Path] = []
    real = pipeline.read_image_file
    monkeypatch.setattr(pipeline, "read_image_file", lambda path, *a: reads.append(path) or real(path, *a))
    report = ingest_collection([str(folder)], model, tmp_path / "s")
    assert report.failed_by_reason == {"truncated": 12} and len(reads) == 12


def test_a_nul_byte_in_a_path_is_one_failure_not_the_end_of_the_run(model: Path, tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(_jpeg(10))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "a\\u0000b.jpg"}\n{"path": "a.jpg"}\n')
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"a\x00b.jpg\na.jpg\n")
    report = ingest_collection([str(manifest), str(listing)], model, tmp_path / "s")
    assert report.stopped_by is None and report.count(Fate.INDEXED) == 1, report.summary()
    assert report.failed_by_reason == {"bad_row": 1, "unreadable": 1}
    assert report.skipped_by_reason == {"duplicate": 1}


class _SlowStore:
    """A LocalStore whose writes hang, as a cluster that keeps retrying does."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner

    def write(self, records: object, **kwargs: object) -> object:
        time.sleep(60)
        raise AssertionError("the write should have been abandoned")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_an_interrupted_run_does_not_wait_for_a_hanging_write(model: Path, tmp_path: Path) -> None:
    from gemsearch.plugin.embedding.embedder import OnnxEmbedder
    from gemsearch.plugin.ingest.pipeline import ingest
    from gemsearch.plugin.inputs.sources import iter_sources

    root = tmp_path / "d"
    root.mkdir()
    for i in range(6):
        (root / f"{i}.jpg").write_bytes(_jpeg(90 + i))
    ledger = tmp_path / "ledger.jsonl"
    timer = threading.Timer(2.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    with LocalStore(tmp_path / "s") as inner:
        timer.start()
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            ingest(iter_sources([str(root)]), OnnxEmbedder(model), _SlowStore(inner),  # type: ignore[arg-type]
                   IngestOptions(write_batch=2, ledger_path=ledger))  # fmt: skip
        waited = time.monotonic() - start
    assert waited < 20, waited
    lines = _ledger(ledger)
    assert len(lines) == 6 and {line["fate"] for line in lines} == {"pending"}


def test_entries_the_walker_leaves_out_get_a_ledger_line_with_the_reason(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.jpg").write_bytes(_jpeg(9))
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(_jpeg(10))
    (root / "escape.jpg").symlink_to(outside)
    (root / "alias.jpg").symlink_to(root / "a.jpg")
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    os.mkfifo(root / "pipe.jpg")
    ledger = tmp_path / "ledger.jsonl"
    report = ingest_collection([str(root)], model, tmp_path / "s", options=IngestOptions(ledger_path=ledger))
    fates = {Path(str(line["source"])).name: (line["fate"], line["reason"]) for line in _ledger(ledger)}
    assert fates == {
        "a.jpg": ("indexed", None),
        "alias.jpg": ("skipped", "duplicate"),
        "dangling.jpg": ("failed", "not_found"),
        "escape.jpg": ("skipped", "outside_root"),
        "pipe.jpg": ("skipped", "not_regular_file"),
    }
    assert report.read == 5 and report.count(Fate.SKIPPED) == 3


def test_shards_split_the_left_out_entries_too(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for i in range(6):
        os.mkfifo(root / f"pipe{i}.jpg")
        (root / f"img{i}.jpg").write_bytes(_jpeg(11 + i))
    reports = [ingest_collection([str(root)], model, tmp_path / f"s{i}", shard=f"{i}/3") for i in range(3)]
    assert sum(r.read for r in reports) == 12
    assert sum(r.skipped_by_reason["not_regular_file"] for r in reports) == 6


_KILLED = """
import os, signal, sys
from pathlib import Path
from gemsearch.plugin.ingest.pipeline import IngestOptions, ingest_collection
seen = 0
def tick(n):
    global seen
    seen += n
    if seen >= {kill_after}:
        os.kill(os.getpid(), signal.SIGKILL)
ingest_collection([{root!r}], {model!r}, {store!r},
    options=IngestOptions(ledger_path=Path({ledger!r}), write_batch=4, workers=1), written=tick)
"""


def test_a_killed_run_keeps_every_ledger_line_it_counted(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    for i in range(30):
        (root / f"{i:02d}.jpg").write_bytes(_jpeg(20 + i))
    ledger = tmp_path / "ledger.jsonl"
    code = _KILLED.format(
        kill_after=17, root=str(root), model=str(model), store=str(tmp_path / "s"), ledger=str(ledger)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    lines = _ledger(ledger)
    assert len(lines) >= 17 and all(line["fate"] == "indexed" for line in lines)


def test_an_interrupted_run_gives_every_read_input_a_pending_line(model: Path, tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    for i in range(24):
        (root / f"{i:02d}.jpg").write_bytes(_jpeg(60 + i))
    ledger = tmp_path / "ledger.jsonl"
    seen, sent = 0, threading.Event()

    def tick(n: int) -> None:
        nonlocal seen
        seen += n
        if seen >= 5 and not sent.is_set():
            sent.set()
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: a KeyboardInterrupt in the main thread

    with pytest.raises(KeyboardInterrupt):
        ingest_collection(
            [str(root)], model, tmp_path / "s", options=IngestOptions(ledger_path=ledger, write_batch=4),
            progress=tick,
        )  # fmt: skip
    lines = _ledger(ledger)
    end = json.loads(ledger.read_text().splitlines()[-1])
    assert end["stopped_by"] == "interrupted" and len(lines) == end["read"]
    assert len({line["source"] for line in lines}) == len(lines)
    assert {line["fate"] for line in lines} <= {"indexed", "pending"} and end["pending"] > 0
    assert _stored_ids(tmp_path / "s") == {line["id"] for line in lines if line["fate"] == "indexed"}


# --- the invariant, on generated collections ------------------------------------------------------

_KINDS = ("good", "copy", "truncated", "garbage", "empty", "odd_name", "alias", "loop", "outside", "fifo")


def _build(folder: Path, kinds: list[str]) -> set[str]:
    """Entries of ``kinds`` in ``folder``; returns the ids a correct ingest stores."""
    folder.mkdir()
    good: list[Path] = []
    expected: set[str] = set()
    for i, kind in enumerate(kinds):
        data = _jpeg(100 + i)
        path = folder / f"{i:03d}.jpg"
        if kind in {"good", "odd_name"} or (kind in {"copy", "alias"} and not good):
            path = folder / (os.fsdecode(b"\xff%d \xc3.jpg" % i) if kind == "odd_name" else path.name)
            path.write_bytes(data)
            good.append(path)
            expected.add(_sha(data))
        elif kind == "copy":
            path.write_bytes(good[i % len(good)].read_bytes())
        elif kind == "alias":
            path.symlink_to(good[i % len(good)])
        elif kind == "truncated":
            path.write_bytes(data[: len(data) // 3])
        elif kind == "garbage":
            path.write_bytes(bytes(range(256)) * 3)
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "loop":
            path.symlink_to(path.name)
        elif kind == "outside":
            path.symlink_to("/etc/hostname")
        elif kind == "fifo":
            os.mkfifo(path)
    return expected


def _rows(folder: Path, rows: list[tuple[int, str]]) -> tuple[Path, set[str]]:
    """A manifest of (file index, id) rows plus bad rows; returns it and the ids it should store."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    expected: set[str] = set()
    lines: list[bytes] = []
    for n, (index, doc_id) in enumerate(rows):
        if not files or n % 4 == 3:
            lines.append(b'{"path": 1}' if n % 2 else b"{broken")
            continue
        path = files[index % len(files)]
        lines.append(json.dumps({"path": os.fsencode(path).decode("utf-8", "surrogateescape"), "id": doc_id})
                     .encode("utf-8", "surrogateescape"))  # fmt: skip
        try:
            Image.open(path).load()
            expected.add(doc_id)
        except Exception:  # a broken file: its id is stored only if another row gives a good one
            pass
    manifest = folder.parent / "m.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    return manifest, expected


def _check_run(report: IngestReport, ledger: Path) -> None:
    lines = _ledger(ledger)
    assert len(lines) == report.read == sum(report.fates.values())
    assert report.count(Fate.PENDING) == 0 and report.stopped_by is None


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kinds=st.lists(st.sampled_from(_KINDS), min_size=1, max_size=12),
    rows=st.lists(st.tuples(st.integers(0, 20), st.sampled_from(["m0", "m1", "m2"])), max_size=8),
)
def test_ingest_invariant_on_generated_collections(
    model: Path, kinds: list[str], rows: list[tuple[int, str]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        expected = _build(base / "d", kinds)
        manifest, from_rows = _rows(base / "d", rows)
        store, ledger = base / "store", base / "ledger.jsonl"
        opts = IngestOptions(ledger_path=ledger, check_chunk=3, window=2, write_batch=3)
        report = ingest_collection([str(base / "d"), str(manifest)], model, store, options=opts)
        _check_run(report, ledger)
        assert _stored_ids(store) == expected | from_rows
        ledger.unlink()
        again = ingest_collection([str(base / "d"), str(manifest)], model, store, options=opts)
        _check_run(again, ledger)
        assert again.count(Fate.INDEXED) == 0 and again.embedded == 0
        # a broken row whose id another row stored is skipped as present: never decoded again
        assert again.count(Fate.FAILED) <= report.count(Fate.FAILED)
