"""Backbones by name: ``create_backbone("resnet101", pretrained=True)`` -> the convolutional trunk.

Registered: vgg16, resnet50/101/152, efficientnet_b0..b3 (torchvision) and efficientnet_lite0 (our
definition, offline weights). ``backbone_spec(name)`` gives the output dimension and the
preprocessing of the pretrained weights without building anything.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from . import efficientnet_lite, torchvision_backbones  # noqa: F401 (they register themselves)
from .registry import Backbone, BackboneSpec, backbone_spec, build_backbone, list_backbones, register
from .weights import load_state_file


def create_backbone(
    name: str,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    source: str | None = None,
) -> nn.Module:
    """The trunk of ``name``: ``(n, 3, h, w) -> (n, d, h', w')`` with ``d = backbone_spec(name).output_dim``.

    ``weights``: a local file (the trunk's or the full classifier's state dict), used instead of any
    download. ``pretrained``: the ImageNet weights of ``source`` (default: the first listed by
    ``weight_sources``); missing from the cache and not downloadable -> ``WeightsUnavailableError``.
    """
    return _build(name, pretrained, weights, source).trunk


def create_classifier(
    name: str, *, pretrained: bool = False, weights: str | Path | None = None, source: str | None = None
) -> nn.Module:
    """The full ImageNet classifier of ``name`` (1000 logits), e.g. to check that weights loaded right."""
    return _build(name, pretrained, weights, source).classifier


def _build(name: str, pretrained: bool, weights: str | Path | None, source: str | None) -> Backbone:
    state = load_state_file(weights) if weights is not None else None
    return build_backbone(name, pretrained=pretrained, weights=state, source=source)


__all__ = [
    "Backbone",
    "BackboneSpec",
    "backbone_spec",
    "create_backbone",
    "create_classifier",
    "list_backbones",
    "register",
]
