"""``gemsearch describe``: descriptors of images with a PyTorch model, for debugging and parity checks.

Imports torch only when the command runs, so ``gemsearch --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from .options import extraction_options, model_option, parse_crop

log = logging.getLogger(__name__)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@model_option
@click.option(
    "--crop",
    callback=parse_crop,
    metavar="X,Y,W,H",
    help="Describe this box of each image, as a query: cut from the full image, then shrunk by the "
    "factor the full image would get.",
)
@extraction_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the (n, d) float32 array as .npy instead of printing JSON lines.",
)
def describe(
    images: tuple[Path, ...],
    model_spec: str,
    max_side: int | None,
    crop: tuple[float, float, float, float] | None,
    scales: tuple[float, ...],
    lw: str | None,
    no_whiten: bool,
    device: str,
    batch_size: int,
    out: Path | None,
) -> None:
    """Print (or save) the descriptors of IMAGE... in input order, one row per image.

    Without --out, each line is {"image": path, "descriptor": [...]}.
    """
    import numpy as np

    from gemsearch._deps import require

    require("torch", "train")  # an install hint instead of a traceback on a runtime-only install
    from ..trainer.models.embedder import TorchEmbedder
    from ..trainer.models.loading import load_model

    model = load_model(model_spec, lw=lw)
    embedder = TorchEmbedder(
        model, scales=scales, max_side=max_side, device=device, batch_size=batch_size,
        whiten=not no_whiten, progress=True,
    )  # fmt: skip
    vecs = embedder.embed(list(images), boxes=[crop] * len(images) if crop else None)
    click.echo(f"{model.origin}: {vecs.shape[0]} x {vecs.shape[1]} descriptors, scales {scales}", err=True)
    if out is not None:
        with out.open("wb") as f:  # np.save(path) would append ".npy" to other names
            np.save(f, vecs)
        click.echo(f"saved {out}", err=True)
        return
    for path, row in zip(images, vecs, strict=True):
        click.echo(json.dumps({"image": str(path), "descriptor": row.tolist()}))
