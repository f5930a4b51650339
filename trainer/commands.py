"""``gemsearch describe``: descriptors of images with a PyTorch model, for debugging and parity checks.

Imports torch only when the command runs, so ``gemsearch --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import click

log = logging.getLogger(__name__)
_MULTISCALE = (1.0, 1 / math.sqrt(2), 0.5)  # = extraction.MULTISCALE, which would import torch here


def _parse_crop(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        x, y, w, h = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected x,y,w,h (four numbers)") from None
    if w <= 0 or h <= 0:
        raise click.BadParameter("width and height must be positive")
    return (x, y, x + w, y + h)  # PIL's / cirtorch's (x1, y1, x2, y2)


def _parse_scales(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[float, ...]:
    if value == "ms":
        return _MULTISCALE
    try:
        scales = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected comma-separated numbers, e.g. 1,0.7071,0.5, or 'ms'") from None
    if not scales or min(scales) <= 0:
        raise click.BadParameter("scales must be positive")
    return scales


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--model",
    "model_spec",
    required=True,
    help="A checkpoint (gemsearch's or cirtorch's), a released cirtorch network name, or "
    "BACKBONE-POOLING for an off-the-shelf ImageNet network, e.g. efficientnet_lite0-gem.",
)
@click.option("--max-side", type=click.IntRange(min=1), help="Longer image side (default: the model's).")
@click.option(
    "--crop",
    callback=_parse_crop,
    metavar="X,Y,W,H",
    help="Describe this box of each image, as a query: cut from the full image, then shrunk by the "
    "factor the full image would get.",
)
@click.option(
    "--scales",
    default="1",
    show_default=True,
    callback=_parse_scales,
    help="Comma-separated scales, e.g. 1,0.7071,0.5; 'ms' is 1,1/sqrt(2),1/2.",
)
@click.option("--lw", help="Dataset of the learned whitening to use, for checkpoints with several.")
@click.option("--no-whiten", is_flag=True, help="Skip the model's learned (post-hoc) whitening.")
@click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1, ...")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
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
    from .embedder import TorchEmbedder
    from .loading import load_model

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
