"""``gemsearch train``: fine-tune a retrieval network; ``--config train.yaml`` and/or one flag per option.

The flags are made from ``TrainConfig``'s fields, so every setting of the file is also a flag
(``query_size`` -> ``--query-size``) and a flag given on the command line overrides the file.
Imports torch only when the command runs.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import click
from pydantic.fields import FieldInfo

from ..trainer.training.config import TrainConfig, load_config


def _click_type(annotation: Any) -> tuple[Any, bool, bool]:
    """(click type, is a flag, takes several values) for a field's annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):  # X | None: the X
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        origin = typing.get_origin(annotation)
    if origin is Literal:
        return click.Choice([str(a) for a in typing.get_args(annotation)]), False, False
    if origin is list:
        return _click_type(typing.get_args(annotation)[0])[0], False, True
    if annotation is bool:
        return bool, True, False
    if annotation is Path:
        return click.Path(path_type=Path), False, False
    return annotation, False, False


def _field_option(name: str, info: FieldInfo) -> Callable[[Any], Any]:
    kind, flag, multiple = _click_type(info.annotation)
    dashed = name.replace("_", "-")
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    shown = "required unless in --config" if info.is_required() else f"default: {default}"
    text = f"{info.description or ''} [{shown}]".strip()
    if flag:
        return click.option(f"--{dashed}/--no-{dashed}", name, default=None, help=text)
    return click.option(f"--{dashed}", name, type=kind, multiple=multiple, default=None, help=text)


def _config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for name, info in reversed(list(TrainConfig.model_fields.items())):
        command = _field_option(name, info)(command)
    return command


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file of options (same names as the flags, with _ or -); flags override it.",
)
@click.option("--print-config", is_flag=True, help="Print the resolved configuration as YAML and exit.")
@_config_options
def train(config_file: Path | None, print_config: bool, **options: Any) -> None:
    """Fine-tune a CNN with GeM pooling by siamese learning on tuples with hard negatives.

    Every epoch re-mines hard negatives with the current network, trains, measures the validation
    loss (and mAP every --eval-every epochs) and writes to --directory: model_last.pt,
    model_best.pt (lowest validation loss), train_state.pt (for --resume) and metrics.jsonl.
    Several processes: torchrun --nproc-per-node N -m gemsearch.cli train --config train.yaml
    """
    from gemsearch._deps import require

    if options.get("test_datasets") == ():
        options["test_datasets"] = None  # an unused `multiple` flag is (), not "not given"
    config = load_config(config_file, **options)
    if print_config:
        import yaml

        click.echo(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), nl=False)
        return
    require("torch", "train")
    from ..trainer.training.loop import train as run_training

    result = run_training(config)
    if result.metrics and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 speaks
        click.echo(
            f"best epoch {result.best_epoch} (loss {result.best_loss:.4f}); models in {result.directory}"
        )
