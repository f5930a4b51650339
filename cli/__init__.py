"""The ``gemsearch`` command line: a thin layer over the Python API of each part.

Subcommands live next to the code they drive (``gemsearch.cli.describe``, ...) and are
imported only when used or listed, so ``gemsearch --help`` never loads torch or onnxruntime.
"""

from __future__ import annotations

import importlib
import logging
import traceback
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
    "count": "gemsearch.cli.documents:count",
    "delete": "gemsearch.cli.documents:delete",
    "opensearch": "gemsearch.cli.pipelines:opensearch",
}
# what `gemsearch --help` lists for each command without importing it: each command's own first
# sentence (a test keeps them equal)
COMMAND_HELP: dict[str, str] = {
    "count": "The number of documents in a store, or of those matching --filter.",
    "delete": "Delete documents by id, the documents of a manifest or folder, or those matching --filter.",
    "describe": "Print (or save) the descriptors of IMAGE... in input order, one row per image.",
    "evaluate": "mAP (Easy/Medium/Hard on the revisited datasets) and mP@1,5,10 of a model on each "
    "--dataset.",
    "export": "Export retrieval models to ONNX and check the files.",
    "index": "Manage OpenSearch k-NN indices: one index per model version, one alias per model.",
    "ingest": "Embed the images of SOURCES and write them into a store.",
    "opensearch": "Work with an OpenSearch cluster beyond its indices (see also `gemsearch index`).",
    "quickstart": "Run the whole pipeline on the embedded default, no cluster needed.",
    "search": "Find the indexed images most similar to IMAGE, or to a region of it (--crop).",
    "serve": "Serve the search API and the demo page (needs `pip install 'gemsearch[web]'`).",
    "train": "Fine-tune a CNN with GeM pooling by siamese learning on tuples with hard negatives.",
    "whiten": "Learn whitening from a training set with the model's descriptors and store it in a "
    "checkpoint.",
}


# library errors name the settings (and arguments) a fix needs; the CLI names its options for them
CLI_WORDS = {
    "the urls setting": "--opensearch",
    "the user/password settings": "the user/password keys of --opensearch-config",
    "force=True": "--force",
}


def cli_wording(message: str) -> str:
    """A library error's message with the CLI's option names in place of the library's settings."""
    for library, cli in CLI_WORDS.items():
        message = message.replace(library, cli)
    return message


class ShortUsageError(click.UsageError):
    """A usage error in two lines, "Error: ..." and where the help is (click's own adds the usage
    line and a blank one); exit code 2."""

    @classmethod
    def of(cls, exc: click.UsageError) -> ShortUsageError:
        return exc if isinstance(exc, cls) else cls(exc.format_message(), exc.ctx)

    def show(self, file: Any = None) -> None:
        color = self.ctx.color if self.ctx is not None else None
        click.echo(f"Error: {self.format_message()}", file=file, err=True, color=color)
        if self.ctx is not None:
            click.echo(f"Try '{self.ctx.command_path} --help'.", file=file, err=True, color=color)


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

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise ShortUsageError.of(exc) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from ``COMMAND_HELP``: listing a command does not import its module."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            # a stand-in shortens the text as click shortens a command's own
            command = click.Command(name, help=COMMAND_HELP[name]) if name in COMMAND_HELP else None
            command = command or self.get_command(ctx, name)  # one registered directly, not lazily
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise ShortUsageError.of(exc) from None
        except GemsearchError as exc:
            raise self._error(ctx, exc, str(exc)) from exc
        except Exception as exc:
            if not type(exc).__module__.startswith("opensearchpy"):
                raise
            # a transport error no store or admin function translated (they name the index too)
            from opensearchpy.exceptions import TransportError

            from ..plugin.stores.opensearch.errors import store_error

            if not isinstance(exc, TransportError):
                raise
            raise self._error(ctx, exc, str(store_error(exc))) from exc

    @staticmethod
    def _error(ctx: click.Context, exc: BaseException, message: str) -> click.ClickException:
        """The one-line error; with -v its traceback first (the cause included)."""
        if ctx.meta.get(VERBOSE_KEY, 0) > 0:
            click.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
        return click.ClickException(cli_wording(message))


VERBOSE_KEY = "gemsearch.verbose"
# the transport's loggers (a logger's filter sees only its own records, so the children are named)
TRANSPORT_LOGGERS = (
    "opensearch",
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.util.retry",
)


class TransportLogFilter(logging.Filter):
    """Each failed or retried request as one INFO line (shown from -v on); its traceback only with
    -vv/--debug. Without -v nothing: the command's own error names the cluster and the fix."""

    def __init__(self, verbose: int) -> None:
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose == 0:
            return False
        if logging.INFO < record.levelno < logging.CRITICAL:
            record.levelno, record.levelname = logging.INFO, "INFO"
        if self.verbose < 2:
            record.exc_info, record.exc_text = None, None
        return True


def configure_logging(verbose: int) -> None:
    """Log level from -v (info) / -vv or --debug (debug); transport retries as one line each."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in TRANSPORT_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, TransportLogFilter)]:
            logger.removeFilter(old)
        logger.addFilter(TransportLogFilter(verbose))


@click.group(cls=GemsearchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gemsearch")
@click.option(
    "-v", "--verbose", count=True, help="More log output (-v info and error tracebacks, -vv debug)."
)
@click.option("--debug", is_flag=True, help="Same as -vv.")
@click.pass_context
def main(ctx: click.Context, verbose: int, debug: bool) -> None:
    """Instance-level image search for OpenSearch.

    Train GeM retrieval networks, export them to one ONNX file each, bulk-load image
    collections into OpenSearch k-NN indices (or the embedded local store) and answer
    crop-and-search queries.
    """
    verbose = max(verbose, 2) if debug else verbose
    ctx.meta[VERBOSE_KEY] = verbose
    configure_logging(verbose)


if __name__ == "__main__":  # pragma: no cover
    main()
