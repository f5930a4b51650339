"""Options shared by the trainer's commands (describe, evaluate): one definition, one help text."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
MULTISCALE = (1.0, 1 / math.sqrt(2), 0.5)  # = extraction.MULTISCALE, which would import torch here


def parse_crop(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        x, y, w, h = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected x,y,w,h (four numbers)") from None
    if w <= 0 or h <= 0:
        raise click.BadParameter("width and height must be positive")
    return (x, y, x + w, y + h)  # PIL's / cirtorch's (x1, y1, x2, y2)


def parse_scales(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[float, ...]:
    if value == "ms":
        return MULTISCALE
    try:
        scales = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter("expected comma-separated numbers, e.g. 1,0.7071,0.5, or 'ms'") from None
    if not scales or min(scales) <= 0:
        raise click.BadParameter("scales must be positive")
    return scales


model_option = click.option(
    "--model",
    "model_spec",
    required=True,
    help="A checkpoint (gemsearch's or cirtorch's), a released cirtorch network name, or "
    "BACKBONE-POOLING for an off-the-shelf ImageNet network, e.g. efficientnet_lite0-gem.",
)

_EXTRACTION_OPTIONS = (
    click.option("--max-side", type=click.IntRange(min=1), help="Longer image side (default: the model's)."),
    click.option(
        "--scales",
        default="1",
        show_default=True,
        callback=parse_scales,
        help="Comma-separated scales, e.g. 1,0.7071,0.5; 'ms' is 1,1/sqrt(2),1/2.",
    ),
    click.option("--lw", help="Dataset of the learned whitening to use, for checkpoints with several."),
    click.option("--no-whiten", is_flag=True, help="Skip the model's learned (post-hoc) whitening."),
    click.option("--device", default="cpu", show_default=True, help="torch device: cpu, cuda, cuda:1, ..."),
    click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True),
)


def extraction_options(command: F) -> F:
    """--max-side, --scales, --lw, --no-whiten, --device, --batch-size (in that order in --help)."""
    for option in reversed(_EXTRACTION_OPTIONS):
        command = option(command)
    return command
