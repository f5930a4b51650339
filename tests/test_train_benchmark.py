"""The training benchmark runs end to end at tiny sizes and writes well-formed results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_train_multiview_smoke(tmp_path: Path) -> None:
    cmd = [
        sys.executable, str(BENCH / "train_multiview.py"), "--work", str(tmp_path / "work"),
        "--out-dir", str(tmp_path), "--views", "3", "--epochs", "1", "--image-size", "48",
        "--test-size", "64", "--query-size", "4", "--pool-size", "24", "--neg-num", "2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "train_multiview.json").read_text())
    assert data["benchmark"] == "train_multiview" and data["machine"]
    assert list(data["results"]) == [
        "Lite0-GeM off-the-shelf", "Lite0-GeM off-the-shelf + Lw",
        "Lite0-GeM fine-tuned", "Lite0-GeM fine-tuned + Lw",
    ]  # fmt: skip
    assert all(0 < r["mAP"] <= 1 for r in data["results"].values())
    assert [e["epoch"] for e in data["epochs"]] == [1]
    assert data["objects"]["test"] >= 2 and data["objects"]["test_views"] == 3 * data["objects"]["test"]
    assert "fine-tuned + Lw" in (tmp_path / "train_multiview.md").read_text()
