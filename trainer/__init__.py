"""gemsearch.trainer: retrieval networks (backbone + pooling + whitening), fine-tuning and evaluation.

Needs the ``train`` extra (torch, torchvision). The names below are imported on first use, so that
importing this package (as ``gemsearch --help`` does for its commands) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .backbones import backbone_spec, create_backbone, create_classifier, list_backbones
    from .checkpoint import load_checkpoint, save_checkpoint
    from .cirtorch_import import load_cirtorch
    from .embedder import TorchEmbedder
    from .extraction import MULTISCALE, extract_descriptors
    from .loading import load_model
    from .model import RetrievalModel
    from .network import NetworkConfig, RetrievalNet, build_network
    from .pooling import L2N, MAC, RMAC, GeM, SPoC, gem, l2n, mac, rmac, spoc
    from .train_config import TrainConfig, load_config
    from .training import TrainResult, train
    from .whitening_fit import fit_whitening, with_whitening

_EXPORTS = {
    "backbones": ("backbone_spec", "create_backbone", "create_classifier", "list_backbones"),
    "checkpoint": ("load_checkpoint", "save_checkpoint"),
    "cirtorch_import": ("load_cirtorch",),
    "embedder": ("TorchEmbedder",),
    "extraction": ("MULTISCALE", "extract_descriptors"),
    "loading": ("load_model",),
    "model": ("RetrievalModel",),
    "network": ("NetworkConfig", "RetrievalNet", "build_network"),
    "pooling": ("GeM", "L2N", "MAC", "RMAC", "SPoC", "gem", "l2n", "mac", "rmac", "spoc"),
    "train_config": ("TrainConfig", "load_config"),
    "training": ("TrainResult", "train"),
    "whitening_fit": ("fit_whitening", "with_whitening"),
}
__all__ = [
    "L2N",
    "MAC",
    "MULTISCALE",
    "RMAC",
    "GeM",
    "NetworkConfig",
    "RetrievalModel",
    "RetrievalNet",
    "SPoC",
    "TorchEmbedder",
    "TrainConfig",
    "TrainResult",
    "backbone_spec",
    "build_network",
    "create_backbone",
    "create_classifier",
    "extract_descriptors",
    "fit_whitening",
    "gem",
    "l2n",
    "list_backbones",
    "load_checkpoint",
    "load_cirtorch",
    "load_config",
    "load_model",
    "mac",
    "rmac",
    "save_checkpoint",
    "spoc",
    "train",
    "with_whitening",
]


__getattr__ = lazy_exports(__name__, _EXPORTS)
