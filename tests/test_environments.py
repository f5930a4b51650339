"""The scripts' environments: each checkout has its own, the runtime one has no torch.

Two copies of this checkout's tracked files set up their runtime environment (`.venv`, as
`scripts/quickstart.sh` does) through `scripts/env.sh`; each must import gemsearch from its own tree,
setting up the second must not re-point the first, and neither may contain torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _copy_checkout(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / os.fsdecode(name))
    return dest


def _runtime_env(checkout: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in {"GEMSEARCH_VENV", "VIRTUAL_ENV", "PYTHONPATH"}}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env["PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    script = (
        "source scripts/env.sh && gemsearch_env .venv samples >/dev/null && "
        "python -c 'import gemsearch, importlib.util as u; "
        'print(gemsearch.__file__); print(u.find_spec("torch") is None)\''
    )
    proc = subprocess.run(
        ["bash", "-c", script], cwd=checkout, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _imported_from(checkout: Path) -> str:
    proc = subprocess.run(
        [str(checkout / ".venv/bin/python"), "-c", "import gemsearch; print(gemsearch.__file__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def test_two_checkouts_keep_their_own_runtime_environments_without_torch(tmp_path: Path) -> None:
    first = _copy_checkout(tmp_path / "first")
    second = _copy_checkout(tmp_path / "second")

    out_first = _runtime_env(first).splitlines()
    assert Path(out_first[0]).resolve().is_relative_to(first.resolve())
    assert out_first[1] == "True", "the runtime environment must not contain torch"

    out_second = _runtime_env(second).splitlines()
    assert Path(out_second[0]).resolve().is_relative_to(second.resolve())
    assert out_second[1] == "True"

    # setting up the second checkout left the first one's environment pointing at the first tree
    assert Path(_imported_from(first)).resolve().is_relative_to(first.resolve())
    assert (first / ".venv").is_dir() and (second / ".venv").is_dir()
