"""``gemsearch evaluate``: mAP of a PyTorch model on Oxford/Paris-style benchmarks (cirtorch's layout).

Imports torch only when the command runs, so ``gemsearch --help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .options import extraction_options, model_option

log = logging.getLogger(__name__)


@click.command()
@model_option
@click.option(
    "--dataset",
    "datasets",
    multiple=True,
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="A folder with gnd_<name>.pkl and jpg/<image>.jpg (cirtorch's layout); repeatable. "
    "The .pkl is a Python pickle, which can run code when loaded: only name folders you trust.",
)
@extraction_options
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the full report (per-query AP and P@k included) to this JSON file.",
)
def evaluate(
    model_spec: str,
    datasets: tuple[Path, ...],
    scales: tuple[float, ...],
    lw: str | None,
    no_whiten: bool,
    max_side: int | None,
    device: str,
    batch_size: int,
    json_out: Path | None,
) -> None:
    """mAP (Easy/Medium/Hard on the revisited datasets) and mP@1,5,10 of a model on each --dataset.

    Queries are described from their bbx box, the database from full images, as cirtorch does.
    Loads each dataset's gnd_<name>.pkl pickle from the folder given: use trusted data only.
    """
    from gemsearch._deps import require
    from gemsearch.metrics import format_score, format_score_table

    require("torch", "train")  # an install hint instead of a traceback on a runtime-only install
    from ..trainer.evaluation.benchmarks import EvaluationReport, evaluate_dataset, load_dataset
    from ..trainer.models.embedder import TorchEmbedder
    from ..trainer.models.loading import load_model

    loaded = [load_dataset(root) for root in datasets]  # fail on a bad folder before any extraction
    model = load_model(model_spec, lw=lw)
    embedder = TorchEmbedder(
        model, scales=scales, max_side=max_side, device=device, batch_size=batch_size,
        whiten=not no_whiten, progress=True,
    )  # fmt: skip
    report = EvaluationReport(
        model=model.origin,
        scales=scales,
        whiten=embedder.whitening is not None,
        max_side=embedder.preprocessing.max_side,
        results=tuple(evaluate_dataset(embedder, d) for d in loaded),
    )
    for name, score in report.scores().items():
        click.echo(format_score(name, score, with_mp=True))
    click.echo(format_score_table({model.origin: report.scores()}))
    if json_out is not None:
        json_out.write_text(report.model_dump_json(indent=2) + "\n")
        click.echo(f"saved {json_out}", err=True)
