"""One entry point for every kind of model: ``load_model(spec)``.

``spec`` is a checkpoint file (ours or cirtorch's, told apart by their contents), the name of one of
cirtorch's released networks (``CIRTORCH_PRETRAINED``, downloaded once), or an off-the-shelf
ImageNet network written ``BACKBONE-POOLING`` (cirtorch's ``--network-offtheshelf``), e.g.
``efficientnet_lite0-gem``.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from gemsearch.errors import ModelError

from .backbones import list_backbones
from .checkpoint import is_checkpoint, model_from_checkpoint
from .cirtorch import (
    CIRTORCH_PRETRAINED,
    is_cirtorch,
    load_cirtorch,
    model_from_cirtorch,
    read_payload,
)
from .model import RetrievalModel
from .network import NetworkConfig, build_network
from .pooling import PoolingName


def load_model(spec: str | Path, *, lw: str | None = None) -> RetrievalModel:
    """The model ``spec`` names; ``lw`` picks the dataset of a cirtorch checkpoint's learned whitening."""
    path = Path(spec)
    if path.is_file():
        payload = read_payload(path)
        if is_checkpoint(payload):
            return model_from_checkpoint(payload, origin=str(path))
        if is_cirtorch(payload):
            return model_from_cirtorch(payload, origin=str(path), lw=lw)
        raise ModelError(f"{path}: neither a gemsearch nor a cirtorch checkpoint")
    if str(spec) in CIRTORCH_PRETRAINED:
        return load_cirtorch(str(spec), lw=lw)
    config = off_the_shelf_config(str(spec))
    if config is None:
        raise ModelError(
            f"{spec}: no such file, not a cirtorch network ({', '.join(CIRTORCH_PRETRAINED)}) "
            f"and not BACKBONE-POOLING with a backbone of {', '.join(list_backbones())}"
        )
    return RetrievalModel(build_network(config, pretrained=True), config, origin=f"off-the-shelf {spec}")


def off_the_shelf_config(spec: str) -> NetworkConfig | None:
    """``NetworkConfig`` of ``BACKBONE-POOLING`` (e.g. ``resnet101-gem``), or None if it is not one."""
    backbone, _, pooling = spec.rpartition("-")
    if backbone not in list_backbones() or pooling not in get_args(PoolingName):
        return None
    return NetworkConfig(backbone=backbone, pooling=pooling)
