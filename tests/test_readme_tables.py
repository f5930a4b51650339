"""The benchmark tables of README.md and docs/benchmarks.md are what the committed reference run gives."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"


@pytest.fixture
def tables() -> Iterator[Any]:
    sys.path.insert(0, str(BENCH))
    try:
        import readme_tables

        yield readme_tables
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture
def summary(tables: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(tables.SUMMARY.read_text())
    return data


@pytest.mark.parametrize("doc", ["README.md", "docs/benchmarks.md", "docs/opensearch.md"])
def test_tables_equal_the_reference_summary(tables: Any, summary: dict[str, Any], doc: str) -> None:
    path = REPO / doc
    assert tables.render(path, summary) == path.read_text(), (
        f"{doc} disagrees with benchmarks/reference/summary.json: run python benchmarks/readme_tables.py"
    )


def test_the_reference_summary_says_how_it_was_made(summary: dict[str, Any]) -> None:
    assert (
        summary["command"].startswith("python benchmarks/run_all.py") and "--reference" in summary["command"]
    )
    assert summary["machine"]["cpu"] and summary["machine"]["usable_cores"] >= 1 and summary["date_utc"]
    assert "load average" in summary["note"] and "ratios" in summary["note"]
    photos = summary["benchmarks"]["embed_photos"]
    assert photos["photos"] == "wallpapers" and sum(photos["image_sizes"].values()) >= 1
    assert photos["repeats"] >= 3  # medians, not single runs
    md = (BENCH / "reference" / "summary.md").read_text()
    assert summary["command"] in md and summary["note"] in md


def test_readme_rows_come_from_the_summary(tables: Any, summary: dict[str, Any]) -> None:
    changed = copy.deepcopy(summary)
    rows = changed["benchmarks"]["embed_photos"]["results"]
    ours = next(r for r in rows if r["runner"] == "onnx")
    ours["images_per_s"], ours["ratio_vs_baseline"] = 123.0, 45.6
    block = tables.readme_block(changed)
    assert "| 123 |" in block and "45.60x" in block
    assert block != tables.readme_block(summary)
    # the headline (real photos) comes first, the small images second
    lines = [line for line in block.splitlines() if line.startswith("| real") or line.startswith("| small")]
    assert lines[0].startswith("| real photos") and lines[-1].startswith("| small images")


def test_a_missing_or_doubled_marker_is_an_error(tables: Any) -> None:
    with pytest.raises(ValueError, match="benchmarks:begin"):
        tables.replace_block("no markers here", "benchmarks", "x")
    twice = "<!-- benchmarks:begin -->\n<!-- benchmarks:end -->\n" * 2
    with pytest.raises(ValueError):
        tables.replace_block(twice, "benchmarks", "x")
    once = "a\n<!-- benchmarks:begin -->\nold\n<!-- benchmarks:end -->\nb\n"
    assert tables.replace_block(once, "benchmarks", "new") == (
        "a\n<!-- benchmarks:begin -->\nnew\n<!-- benchmarks:end -->\nb\n"
    )


def test_the_planner_ships_the_reference_k_nn_runs(tables: Any) -> None:
    """``gemsearch index plan`` reads a packaged digest of benchmarks/reference/knn_scale_*.json (an
    installed wheel has no benchmarks folder); it must be the digest of the committed runs."""
    from gemsearch.plugin.stores.opensearch import sizing

    assert tables.BANDS.read_text() == tables.bands_text(), "run python benchmarks/readme_tables.py"
    shipped = sizing.packaged_measurements()
    committed = sorted(p.name for p in (BENCH / "reference").glob("knn_scale_*.json"))
    assert sorted(run["_path"] for run in shipped) == committed
    largest = max(shipped, key=lambda run: run["docs"])
    band = sizing.closest_measured(sizing.SizingInput(docs=largest["docs"] * 10, dims=1280), shipped)
    assert band is not None and band.docs == largest["docs"] and band.rows
    assert f"measured at {largest['docs']:,} vectors on OpenSearch" in band.note
