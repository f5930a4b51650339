"""gemsearch.trainer: retrieval networks (backbone + pooling + whitening), fine-tuning and evaluation.

Needs the ``train`` extra (torch, torchvision). The names below are imported on first use, so that
importing this package (as ``gemsearch --help`` does for its commands) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .models.backbones import backbone_spec, create_backbone, create_classifier, list_backbones
    from .models.checkpoint import load_checkpoint, save_checkpoint
    from .models.cirtorch import load_cirtorch
    from .models.embedder import TorchEmbedder
    from .models.extraction import MULTISCALE, extract_descriptors
    from .models.loading import load_model
    from .models.model import RetrievalModel
    from .models.network import NetworkConfig, RetrievalNet, build_network
    from .models.pooling import L2N, MAC, RMAC, GeM, SPoC, gem, l2n, mac, rmac, spoc
    from .training.config import TrainConfig, load_config
    from .training.loop import TrainResult, train
    from .training.whitening_fit import fit_whitening, with_whitening

_EXPORTS = {
    "models.backbones": ("backbone_spec", "create_backbone", "create_classifier", "list_backbones"),
    "models.checkpoint": ("load_checkpoint", "save_checkpoint"),
    "models.cirtorch": ("load_cirtorch",),
    "models.embedder": ("TorchEmbedder",),
    "models.extraction": ("MULTISCALE", "extract_descriptors"),
    "models.loading": ("load_model",),
    "models.model": ("RetrievalModel",),
    "models.network": ("NetworkConfig", "RetrievalNet", "build_network"),
    "models.pooling": ("GeM", "L2N", "MAC", "RMAC", "SPoC", "gem", "l2n", "mac", "rmac", "spoc"),
    "training.config": ("TrainConfig", "load_config"),
    "training.loop": ("TrainResult", "train"),
    "training.whitening_fit": ("fit_whitening", "with_whitening"),
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
