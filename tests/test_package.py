"""Packaging: the wheel carries every part, the runtime never needs torch, the CLI documents itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import sysconfig
import textwrap
import venv
import zipfile
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gemsearch.cli import main

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = [
    "gemsearch.default_model",
    "gemsearch.trainer",
    "gemsearch.exporters",
    "gemsearch.plugin",
    "gemsearch.opensearch_templates",
]

# Makes "import torch" (and torchvision) fail the way it does on a runtime-only install.
BLOCK_TORCH = textwrap.dedent(
    """
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"{name} is blocked: the runtime must not need it")
    sys.meta_path.insert(0, _NoTorch())
    """
)


def test_plugin_imports_without_torch() -> None:
    code = BLOCK_TORCH + textwrap.dedent(
        """
        import pkgutil, importlib
        import gemsearch, gemsearch.plugin, gemsearch.opensearch_templates, gemsearch.cli
        for mod in pkgutil.walk_packages(gemsearch.plugin.__path__, "gemsearch.plugin."):
            importlib.import_module(mod.name)
        for name in gemsearch.plugin.__all__:  # the lazy re-exports resolve, torch-free
            getattr(gemsearch.plugin, name)
        try:
            import torch
        except ImportError:
            print("torch blocked")
        assert "torch" not in sys.modules
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "torch blocked" in out.stdout


def test_cli_help_lists_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "Instance-level image search for OpenSearch" in result.output


def _imports(*args: str) -> set[str]:
    """The modules loaded once ``gemsearch ARGS`` has run, in a fresh interpreter."""
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: print('MODULES ' + json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
        "from gemsearch.cli import main\n"
        f"main({list(args)!r}, prog_name='gemsearch')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(line for line in out.stderr.splitlines() if line.startswith("MODULES "))
    return set(json.loads(line.removeprefix("MODULES ")))


def test_help_imports_no_command_module_nor_heavy_library() -> None:
    top = _imports("--help")
    heavy = {"opensearchpy", "onnxruntime", "numpy", "torch", "PIL", "pydantic"}
    assert not heavy & top, sorted(heavy & top)
    commands = {m for m in top if m.startswith("gemsearch.cli.")}
    assert commands == set(), sorted(commands)
    # a command's own help loads that command, not the cluster client, the model runtime or numpy
    for args, module in [
        (["search"], "search"), (["ingest"], "ingest"), (["count"], "documents"), (["delete"], "documents"),
        (["index", "list"], "index"), (["index", "create"], "index"), (["export", "inspect"], "export"),
        (["serve"], "serve"),
    ]:  # fmt: skip
        loaded = _imports(*args, "--help")
        assert f"gemsearch.cli.{module}" in loaded, args
        too_much = {"opensearchpy", "onnxruntime", "numpy", "gemsearch.plugin.ingest.pipeline"} & loaded
        assert not too_much, (args, sorted(too_much))


def test_the_command_list_says_what_each_command_says_of_itself() -> None:
    from gemsearch.cli import COMMAND_HELP, LAZY_COMMANDS

    ctx = click.Context(main)
    assert set(COMMAND_HELP) == set(LAZY_COMMANDS)
    for name, text in COMMAND_HELP.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.get_short_help_str(1000) == text, name


def _all_commands() -> list[tuple[str, click.Command]]:
    ctx = click.Context(main)
    found: list[tuple[str, click.Command]] = []
    for name in main.list_commands(ctx):
        cmd = main.get_command(ctx, name)
        assert cmd is not None
        found.append((name, cmd))
        if isinstance(cmd, click.Group):
            found.extend((f"{name} {sub}", cmd.get_command(ctx, sub)) for sub in cmd.list_commands(ctx))  # type: ignore[misc]
    return found


def test_every_command_has_help_and_a_readme_mention() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, cmd in _all_commands():
        assert (cmd.help or "").strip(), f"gemsearch {name} has no help text"
        result = CliRunner().invoke(main, [*name.split(), "--help"])
        assert result.exit_code == 0, result.output
        assert re.search(rf"gemsearch {re.escape(name)}\b", readme), (
            f"README does not mention 'gemsearch {name}'"
        )


@pytest.mark.slow
def test_wheel_installs_and_imports_every_subpackage(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheel = next((tmp_path / "dist").glob("gemsearch-*.whl"))
    with zipfile.ZipFile(wheel) as archive:  # data files the runtime opens by path
        names = set(archive.namelist())
    for data in ("gemsearch/plugin/web/static/index.html", "gemsearch/opensearch_templates/knn_index.json"):
        assert data in names, f"{data} is missing from the wheel"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    # the base install (runtime only): no torch may be needed here
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, capture_output=True)
    runtime = (
        "import gemsearch, gemsearch.plugin, gemsearch.opensearch_templates as t\n"
        "t.knn_index_body(8)\nprint(gemsearch.__file__)"
    )
    out = subprocess.run([str(py), "-c", runtime], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert str(env_dir) in out.stdout, "gemsearch was not imported from the wheel"
    assert subprocess.run([str(env_dir / "bin" / "gemsearch"), "--help"], capture_output=True).returncode == 0
    # the default model is built there, with no torch installed at all
    built = subprocess.run(
        [str(env_dir / "bin" / "gemsearch"), "export", "default", "-o", str(tmp_path / "models")],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "models" / "lite0-gem.onnx").is_file()
    assert subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode != 0
    # the training parts import once torch is present: borrow it from this environment
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, gemsearch
        for name in {SUBPACKAGES!r}:
            pkg = importlib.import_module(name)
            for mod in pkgutil.walk_packages(pkg.__path__, name + "."):
                importlib.import_module(mod.name)
        print(gemsearch.__file__)
        """
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert str(env_dir) in out.stdout


def test_the_python_api_names_import_from_gemsearch_plugin() -> None:
    import gemsearch.plugin as plugin
    from gemsearch.plugin import (
        IndexOptions,
        LocalStoreSpec,
        OnnxEmbedder,
        OpenSearchStoreSpec,
        Searcher,
        SourceItem,
        open_store,
        search,
        search_by_id,
    )
    from gemsearch.plugin.query import Searcher as QuerySearcher

    names = {"search", "search_by_id", "Searcher", "IndexOptions", "SourceItem", "open_store"}
    assert names | {"LocalStoreSpec", "OpenSearchStoreSpec", "OnnxEmbedder"} <= set(plugin.__all__)
    assert Searcher is QuerySearcher and callable(search) and callable(search_by_id)
    assert callable(open_store) and LocalStoreSpec().kind == "local"
    assert OpenSearchStoreSpec().kind == "opensearch" and IndexOptions().prefix
    assert SourceItem(path=Path("a.jpg")).shard_key == "a.jpg" and callable(OnnxEmbedder.embed)
