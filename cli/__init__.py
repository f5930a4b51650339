"""The ``gemsearch`` command line: a thin layer over the Python API of each part.

Subcommands live next to the code they drive (``gemsearch.cli.describe``, ...) and are
imported only when used or listed, so ``gemsearch --help`` never loads torch or onnxruntime.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from .. import __version__
from ..errors import GemsearchError

# command name -> "module:attribute" of a click.Command; modules import heavy deps lazily.
LAZY_COMMANDS: dict[str, str] = {
    "index": "gemsearch.cli.index:index",
    "describe": "gemsearch.cli.describe:describe",
    "evaluate": "gemsearch.cli.evaluate:evaluate",
    "train": "gemsearch.cli.train:train",
    "whiten": "gemsearch.cli.whiten:whiten",
    "export": "gemsearch.cli.export:export",
    "ingest": "gemsearch.cli.ingest:ingest",
    "quickstart": "gemsearch.cli.quickstart:quickstart",
    "search": "gemsearch.cli.search:search",
    "serve": "gemsearch.cli.serve:serve",
}


class GemsearchGroup(click.Group):
    """Loads subcommands lazily and turns library errors into readable click errors."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GemsearchError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=GemsearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gemsearch")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Instance-level image search for OpenSearch.

    Train GeM retrieval networks, export them to one ONNX file each, bulk-load image
    collections into OpenSearch k-NN indices (or the embedded local store) and answer
    crop-and-search queries.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # pragma: no cover
    main()
