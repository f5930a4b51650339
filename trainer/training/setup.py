"""What a training run starts from: the network, its optimiser with cirtorch's parameter groups, the
learning-rate schedule and frozen batch-norm layers."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..models.checkpoint import load_checkpoint
from ..models.model import RetrievalModel
from ..models.network import NetworkConfig, RetrievalNet, build_network
from .config import TrainConfig


def build_model(config: TrainConfig) -> RetrievalModel:
    """The network to fine-tune: ``init_model``'s, else the backbone (pretrained or ``weights``)."""
    if config.init_model is not None:
        model = load_checkpoint(config.init_model)
        model.whitening = {}  # post-hoc whitening no longer fits once the network changes
        return model
    base = NetworkConfig(backbone=config.backbone)
    net_config = NetworkConfig(
        backbone=config.backbone, pooling=config.pooling, p=config.p, whitening_dim=config.whitening_dim,
        preprocessing=base.preprocessing.model_copy(update={"max_side": config.test_image_size}),
    )  # fmt: skip
    net = build_network(
        net_config, pretrained=config.pretrained and config.weights is None, weights=config.weights
    )
    return RetrievalModel(net, net_config, origin=f"training in {config.directory}")


def make_optimizer(net: RetrievalNet, config: TrainConfig) -> torch.optim.Optimizer:
    """Backbone and whitening at ``lr``; the pooling (GeM p) at ``lr x pool_lr_factor``, no decay."""
    groups: list[dict[str, Any]] = [{"params": list(net.features.parameters()), "lr": config.lr}]
    pool_params = list(net.pool.parameters())
    if pool_params:
        groups.append({"params": pool_params, "lr": config.lr * config.pool_lr_factor, "weight_decay": 0.0})
    if net.whiten is not None:
        groups.append({"params": list(net.whiten.parameters()), "lr": config.lr})
    for g in groups:
        g["base_lr"] = g["lr"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def set_epoch_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, epoch: int) -> float:
    """cirtorch's ExponentialLR(gamma=exp(-lr_decay)), computed from the epoch so resuming needs no state."""
    factor = math.exp(-config.lr_decay * epoch)
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * factor
    return config.lr * factor


def freeze_batchnorm(net: nn.Module) -> None:
    """Batch-norm layers in eval mode: batches of one image would ruin their running statistics."""
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
