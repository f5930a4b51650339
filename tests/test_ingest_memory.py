"""Memory is bounded by design: ``gemsearch ingest`` of 40 large photos at the default settings, with
the default model (EfficientNet-Lite0 GeM, 1024 px), peaks under the ceiling of docs/runtime.md.

Not timed: the peak resident memory of the command's own process is what a regression moves. It is
measured by a small launcher process: Linux carries a process's high-water mark across exec, so a
child started straight from this test process (grown large by the tests before it, e.g. with torch
loaded) would report at least the test process's own peak.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from support.ingest_helpers import PHOTOS, photo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from _common import run_with_peak_rss  # the benchmarks' launcher: one copy

pytestmark = pytest.mark.slow

CEILING_MB = 1024  # docs/runtime.md#memory: peak RSS of ingest at default settings, Lite0 on CPU
PHOTO_SIZE = (4000, 3000)


def large_photos(folder: Path, n: int) -> list[Path]:
    """``n`` distinct 12-megapixel JPEGs: scikit-image's photos enlarged, mirrored and cut differently."""
    folder.mkdir(parents=True)
    sources = [photo(name) for name in PHOTOS]
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        if (i // len(sources)) % 2:
            src = ImageOps.mirror(src)
        inset = (i // (2 * len(sources))) * 7  # a few pixels less of the border each round
        src = src.crop((inset, inset, src.width - inset, src.height - inset))
        path = folder / f"photo{i:02d}.jpg"
        src.resize(PHOTO_SIZE, Image.Resampling.BICUBIC).save(path, "JPEG", quality=92)
        paths.append(path)
    return paths


def test_ingest_of_large_photos_stays_under_the_memory_ceiling(tmp_path: Path) -> None:
    from gemsearch.exporters.default_model import ensure_default_model

    model = ensure_default_model()
    photos = large_photos(tmp_path / "photos", 40)
    assert len({p.read_bytes() for p in photos}) == 40
    cmd = [sys.executable, "-m", "gemsearch.cli", "ingest", str(tmp_path / "photos"), "--model", str(model)]
    cmd += ["--store", str(tmp_path / "store"), "--json", "--no-progress"]
    with (tmp_path / "out.txt").open("w") as out, (tmp_path / "err.txt").open("w") as err:
        code, peak_mb, _ = run_with_peak_rss(cmd, tmp_path, stdout=out, stderr=err)
    assert code == 0, (tmp_path / "err.txt").read_text()[-2000:]
    assert '"embedded": 40' in (tmp_path / "out.txt").read_text()
    print(f"peak RSS of gemsearch ingest: {peak_mb:.0f} MB")
    assert peak_mb < CEILING_MB, f"ingest peaked at {peak_mb:.0f} MB, over the {CEILING_MB} MB ceiling"
