"""``gemsearch whiten``: learn a model's whitening (Lw or PCA) and save the model with it.

Imports torch only when the command runs, so ``gemsearch --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import click

from ..trainer.training.config import DataFormat
from .options import model_option, parse_scales


@click.command()
@model_option
@click.option(
    "--data",
    "data_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Training data: a folder per object, a pairs JSONL/CSV, or cirtorch's SfM .pkl "
    "(a Python pickle: only files you trust).",
)
@click.option("--data-format", type=click.Choice(get_args(DataFormat)), default="auto", show_default=True)
@click.option(
    "--images-root", type=click.Path(file_okay=False, path_type=Path), help="SfM ims/ or pairs base."
)
@click.option("--split", default="val", show_default=True, help="SfM split (cirtorch learns Lw on 'val').")
@click.option(
    "--method",
    type=click.Choice(["learned", "pca"]),
    default="learned",
    show_default=True,
    help="learned: Lw from matching pairs; pca: unsupervised PCA whitening.",
)
@click.option(
    "--scales",
    default="1",
    show_default=True,
    callback=parse_scales,
    help="Extraction scales: 1 learns the single-scale ('ss') whitening, ms or a list the 'ms' one.",
)
@click.option("--dims", type=click.IntRange(min=1), help="Keep this many output dimensions.")
@click.option("--max-side", type=click.IntRange(min=1), help="Longer image side (default: the model's).")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1, ...")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the model with its whitening to this gemsearch checkpoint (may be --model itself).",
)
def whiten(
    model_spec: str,
    data_path: Path,
    data_format: str,
    images_root: Path | None,
    split: str,
    method: str,
    scales: tuple[float, ...],
    dims: int | None,
    max_side: int | None,
    device: str,
    batch_size: int,
    out: Path,
) -> None:
    """Learn whitening from a training set with the model's descriptors and store it in a checkpoint.

    The whitening is kept under 'ss' (single-scale) or 'ms' (multi-scale) next to the network, so
    evaluate, describe and export apply it to descriptors extracted the same way.
    """
    from gemsearch._deps import require

    require("torch", "train")
    from ..trainer.models.checkpoint import save_checkpoint
    from ..trainer.models.loading import load_model
    from ..trainer.training.config import DataSource
    from ..trainer.training.data import load_source
    from ..trainer.training.whitening_fit import fit_whitening, whitening_key, with_whitening

    source = DataSource.model_validate(
        {"path": data_path, "format": data_format, "images_root": images_root, "split": split}
    )
    data = load_source(source)
    model = load_model(model_spec)
    whitening = fit_whitening(
        model, data, method="learned" if method == "learned" else "pca", scales=scales, dims=dims,
        max_side=max_side, device=device, batch_size=batch_size, progress=True,
    )  # fmt: skip
    save_checkpoint(with_whitening(model, whitening, scales), out)
    click.echo(
        f"{method} whitening ({whitening.P.shape[1]} -> {whitening.output_dim} dims) from {data.name} "
        f"stored as {whitening_key(scales)!r} in {out}"
    )
