"""``gemsearch quickstart``: the README's main command, on a tiny model and on the real default (also
where torch cannot be imported, as on a base install)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.no_torch import run_without_torch
from support.onnx_models import make_tiny_model

from gemsearch.cli import main
from gemsearch.onnx_manifest import read_manifest
from gemsearch.plugin.stores.local.store import LocalStore


def _ranking(output: str) -> list[tuple[float, bool]]:
    rows = re.findall(r"^\s+\d+\s+([0-9.]+)\s+(yes|no)\s+\S+$", output, flags=re.M)
    return [(float(score), same == "yes") for score, same in rows]


def test_quickstart_runs_every_step_and_reuses_its_work(tmp_path: Path) -> None:
    model = tmp_path / "tiny.onnx"
    manifest = make_tiny_model(model)
    args = ["quickstart", "--dir", str(tmp_path / "qs"), "--model", str(model), "-k", "4"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    for step in ("1/4 model", "2/4 sample collection", "3/4 ingest", "4/4 crop-and-search"):
        assert step in first.output
    # one crop convention on the command line: the crop shown is the --crop suggested, x,y,w,h
    shown = re.search(r"crop (\d+,\d+,\d+,\d+) \(x,y,w,h\)", first.output)
    suggested = re.search(r"--crop (\S+)", first.output)
    assert shown and suggested and shown.group(1) == suggested.group(1), first.output
    ranking = _ranking(first.output)
    assert len(ranking) == 4 and [s for s, _ in ranking] == sorted((s for s, _ in ranking), reverse=True)
    store_dir = tmp_path / "qs" / f"store-tiny-{manifest.version8}"
    with LocalStore(store_dir, read_only=True) as store:
        count = store.count()
    n = int(re.search(r"(\d+) images: \d+ photos", first.output).group(1))  # type: ignore[union-attr]
    assert count == n > 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and f"skipped {n} (present: {n})" in again.output


@pytest.mark.slow
def test_quickstart_with_the_default_model_finds_the_cropped_photo(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["quickstart", "--dir", str(tmp_path / "qs"), "-k", "5"])
    assert result.exit_code == 0, result.output
    assert "lite0-gem@" in result.output
    ranking = _ranking(result.output)
    assert len(ranking) == 5 and ranking[0][1]  # the best hit is a view of the query's photo
    assert sum(same for _, same in ranking) >= 4


@pytest.mark.slow
def test_quickstart_runs_to_its_ranking_where_torch_cannot_be_imported(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    args = ["quickstart", "--dir", str(tmp_path / "qs"), "-k", "3", "--views", "2"]
    code = f"from gemsearch.cli import main\nmain({args!r}, standalone_mode=False)\n"
    run = run_without_torch(code, env={"GEMSEARCH_CACHE": str(cache)})
    assert run.returncode == 0, run.stdout + run.stderr
    model = cache / "models" / "lite0-gem.onnx"
    assert f"lite0-gem@{read_manifest(model).version8}" in run.stdout  # built here, without torch
    ranking = _ranking(run.stdout)
    assert len(ranking) == 3 and [s for s, _ in ranking] == sorted((s for s, _ in ranking), reverse=True)
    assert ranking[0][1]  # the best hit is a view of the query's photo
