"""``gemsearch serve``'s memory under load: the soak benchmark at a small size, under a ceiling.

Cold thumbnails of 4000x4333 JPEGs asked for 16 at once, eight 16-bit 4000x4000 PNG searches at
once, then 30 mixed requests 8 at a time: without the decode budget, reduced-size thumbnails and
single-flight decodes the server passed 1.2-1.8 GB here; with them it stays near 400 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "serve_soak.py"
CEILING_MB = 700


def test_serve_stays_under_the_memory_ceiling_through_the_soak(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SOAK), "--out-dir", str(tmp_path), "--ceiling-mb", str(CEILING_MB)]
    cmd += ["--side", "4000", "--png-side", "4000", "--thumbs", "16", "--uploads", "8"]
    cmd += ["--requests", "30", "--concurrency", "8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    print(proc.stdout)
    results = json.loads((tmp_path / "serve_soak.json").read_text())
    loads = {load["load"]: load for load in results["loads"]}
    assert set(loads) == {"thumbnails", "uploads", "mixed"}
    for load in loads.values():
        assert load["status_codes"] == {"200": load["requests"]}, load
        assert load["peak_rss_mb"] < CEILING_MB, load
        assert load["settled_rss_mb"] <= load["peak_rss_mb"]
    assert proc.returncode == 0, proc.stderr[-3000:]
