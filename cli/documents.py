"""``gemsearch count`` and ``gemsearch delete``: the documents of a store or of a model's alias, all
of them, by id or by metadata filter."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from ..errors import ConfigError, GemsearchError
from .options import (
    DEFAULT_STORE,
    exported_model_option,
    filter_option,
    opensearch_options,
    parse_filters,
    store_option,
    wants_opensearch,
)

if TYPE_CHECKING:
    from ..protocols import VectorStore

DRY_RUN_IDS = 1000  # the most ids a --dry-run --json lists


def _store(params: dict[str, Any], *, write: bool) -> VectorStore:
    """The LocalStore folder, or the alias of ``--model`` in OpenSearch (which needs the model)."""
    from ..onnx_manifest import read_manifest
    from ..plugin.stores.factory import LocalStoreSpec, OpenSearchStoreSpec, open_store

    urls, config = params["opensearch_urls"], params["opensearch_config"]
    if not wants_opensearch(params["store_dir"], urls, config):
        return open_store(LocalStoreSpec(path=params["store_dir"] or DEFAULT_STORE), read_only=not write)
    if params["model_path"] is None:
        raise click.UsageError("with OpenSearch, give --model: its alias holds the documents")
    spec = OpenSearchStoreSpec(prefix=params["prefix"], urls=tuple(urls) or None, config=config)
    return open_store(spec, model=read_manifest(params["model_path"]).name)


@click.command(name="count")
@exported_model_option(required=False, more="; needed with --opensearch (its alias is counted)")
@store_option("LocalStore folder to count.")
@opensearch_options("Count the model's documents in OpenSearch at this URL")
@filter_option(": count only the documents that match")
@click.option("--json", "as_json", is_flag=True, help='Print {"documents": N} as JSON.')
def count(filter_specs: Sequence[str], as_json: bool, **params: Any) -> None:
    """The number of documents in a store, or of those matching --filter.

    \b
    Examples:
      gemsearch count --store ./gemsearch-store
      gemsearch count --model lite0-gem --opensearch https://search:9200 --filter album=nature
    """
    filters = parse_filters(filter_specs)
    with _store(params, write=False) as store:
        n = store.count(filters)
        if filters and n == 0:
            _warn_unknown_fields(store, filters)
    matching = f" match {' '.join(filter_specs)}" if filters else ""
    click.echo(json.dumps({"documents": n}) if as_json else f"{n} documents{matching}")


@click.command(name="delete")
@click.argument("ids", nargs=-1)
@click.option(
    "--manifest",
    "sources",
    multiple=True,
    help="Delete the documents of these sources instead (a JSONL/CSV manifest, a folder or a path "
    "list, as for ingest: a row's id, else the sha256 of the file); repeatable.",
)
@filter_option(": delete the documents that match it instead (the syntax of search --filter)")
@exported_model_option(required=False, more="; needed with --opensearch (documents go through its alias)")
@store_option("LocalStore folder to delete from.")
@opensearch_options("Delete from the model's index in OpenSearch at this URL")
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path), help="JSONL file: each id's fate.")
@click.option(
    "--dry-run",
    is_flag=True,
    help=f"Only say how many documents would be deleted (with --json, also the first {DRY_RUN_IDS} ids).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def delete(ids: Sequence[str], sources: Sequence[str], filter_specs: Sequence[str], ledger: Path | None,
           dry_run: bool, yes: bool, as_json: bool, **params: Any) -> None:  # fmt: skip
    """Delete documents by id, the documents of a manifest or folder, or those matching --filter.

    Every id gets one fate, in the summary and the --ledger file: deleted, not_found, or failed
    (a file whose id could not be computed). A filter is resolved to the ids it matches, which are
    deleted a chunk at a time, each with its fate.

    The exit code is 0 when every id was deleted (or, with --dry-run, counted), 1 when an id was
    not found or failed (see the summary and --ledger), 2 for usage errors.

    \b
    Examples:
      gemsearch delete 3f2a...e1 --store ./gemsearch-store
      gemsearch delete --manifest removed.jsonl --model lite0-gem --opensearch https://search:9200 --yes
      gemsearch delete --filter album=nature --filter 'year<2010' --store ./gemsearch-store --dry-run
    """
    if filter_specs and (ids or sources):
        raise click.UsageError("give ids and --manifest, or --filter, not both")
    if not ids and not sources and not filter_specs:
        raise click.UsageError("give ids, --manifest with the sources to delete, or --filter")
    if filter_specs:
        report = _delete_by_filter(filter_specs, ledger, dry_run, yes, as_json, params)
        if report is None:
            return
    else:
        wanted = [(i, i) for i in ids] + list(_source_ids(sources))
        if dry_run:
            with _store(params, write=False) as store:
                present = store.existing_ids([i for _, i in wanted if i is not None])
            _echo_dry_run(len(present), as_json, sorted(present))
            return
        if not yes:
            _confirm(f"Delete up to {len(wanted)} documents?")
        with _store(params, write=True) as store, _ledger(ledger) as out:
            report = _delete(store, wanted, out)
    click.echo(json.dumps(report) if as_json else _summary(report))
    if report["failed"] or report["not_found"]:
        raise SystemExit(1)


def _summary(report: dict[str, int]) -> str:
    """The summary line ("deleted 3, not_found 1, failed 0"), and why the exit code is 1 when it is."""
    line = ", ".join(f"{fate} {n}" for fate, n in report.items())
    missed = [f"{report[f]} {f.replace('_', ' ')}" for f in ("not_found", "failed") if report[f]]
    return line + (f" (exit code 1: {' and '.join(missed)})" if missed else "")


DELETE_CHUNK = 1000  # ids per existence check and delete when deleting by filter


def _delete_by_filter(
    specs: Sequence[str], ledger: Path | None, dry_run: bool, yes: bool, as_json: bool, params: dict[str, Any]
) -> dict[str, int] | None:
    """Delete the documents matching the filter, ``DELETE_CHUNK`` ids at a time; None after a dry run."""
    filters = parse_filters(specs)
    assert filters is not None  # specs were given
    shown = " ".join(specs)
    with _store(params, write=not dry_run) as store:
        n = store.count(filters)
        if n == 0:
            _warn_unknown_fields(store, filters)
        if dry_run:
            _echo_dry_run(n, as_json, itertools.islice(store.ids_matching(filters), DRY_RUN_IDS))
            return None
        if not yes:
            _confirm(f"Delete the {n} documents matching {shown}?")
        report = {"deleted": 0, "not_found": 0, "failed": 0}
        source = f"filter {shown}"
        with _ledger(ledger) as out:
            chunk: list[tuple[str, str | None]] = []
            for doc_id in store.ids_matching(filters):
                chunk.append((source, doc_id))
                if len(chunk) == DELETE_CHUNK:
                    _add(report, _delete(store, chunk, out))
                    chunk = []
            if chunk:
                _add(report, _delete(store, chunk, out))
    return report


def _add(total: dict[str, int], part: dict[str, int]) -> None:
    for fate, n in part.items():
        total[fate] += n


def _echo_dry_run(n: int, as_json: bool, ids: Iterable[str]) -> None:
    """How many documents would go; with --json also which (the first ``DRY_RUN_IDS`` of them)."""
    if not as_json:
        click.echo(f"{n} documents would be deleted (dry run)")
        return
    listed = list(itertools.islice(ids, DRY_RUN_IDS))
    click.echo(json.dumps({"would_delete": n, "ids": listed, "ids_listed": len(listed)}))


def _confirm(question: str) -> None:
    """Ask before deleting, on a terminal; without one (a script, a pipe) say to pass --yes instead."""
    if not sys.stdin.isatty():
        raise click.ClickException("no terminal to confirm the deletion on: pass --yes")
    click.confirm(question, abort=True)


def _warn_unknown_fields(store: VectorStore, filters: dict[str, Any]) -> None:
    """Why a filter matched nothing: a field no document has, or values of a kind the field never holds."""
    from ..plugin.query import filter_warnings

    for field in sorted(set(filters) - store.known_fields(filters)):
        click.echo(f"warning: no document has the field {field!r}; the filter matches nothing", err=True)
    for line in filter_warnings(store, filters):
        click.echo(f"warning: {line}", err=True)


def _source_ids(sources: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """(source, id) of every input of ``sources``: the id a row gives, else the sha256 of the file;
    None where neither can be had (the input fails)."""
    from ..plugin.inputs.images import read_image_file
    from ..plugin.inputs.items import document_id
    from ..plugin.inputs.sources import read_sources

    for entry in read_sources(sources):
        if isinstance(entry, GemsearchError):
            yield str(entry.origin or entry), None
            continue
        assert entry.path is not None  # sources name files (only records hold images in memory)
        try:
            doc_id = entry.id or document_id(entry, read_image_file(entry.path))
        except GemsearchError:
            doc_id = None
        yield str(entry.path), doc_id


def _delete(store: VectorStore, wanted: list[tuple[str, str | None]], out: TextIO | None) -> dict[str, int]:
    ids = [doc_id for _, doc_id in wanted if doc_id is not None]
    present = store.existing_ids(ids)
    store.delete(sorted(present))
    report = {"deleted": 0, "not_found": 0, "failed": 0}
    for source, doc_id in wanted:
        fate = "failed" if doc_id is None else "deleted" if doc_id in present else "not_found"
        present.discard(doc_id or "")  # an id listed twice is deleted once
        report[fate] += 1
        if out is not None:
            out.write(json.dumps({"source": source, "id": doc_id, "fate": fate}) + "\n")
            out.flush()
    return report


@contextlib.contextmanager
def _ledger(path: Path | None) -> Iterator[TextIO | None]:
    if path is None:
        yield None
        return
    try:
        out = path.open("a", encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the ledger: {exc.strerror or exc}") from exc
    with out:
        yield out
