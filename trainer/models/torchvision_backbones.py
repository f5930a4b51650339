"""Backbones from torchvision: VGG16, ResNet50/101/152, EfficientNet-B0..B3.

The trunks are cut as cirtorch cuts them (VGG: ``features`` without the last max-pool; ResNet: all
children but ``avgpool`` and ``fc``), as ``nn.Sequential`` of the same children, so their state
dicts use cirtorch's ``features.<i>.*`` names. Pretrained weights: torchvision's ImageNet weights
(``IMAGENET1K_V1``, the classic ones cirtorch started from) or, for VGG16 and the ResNets,
cirtorch's own ImageNet feature files converted from Caffe (``source="cirtorch"``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from torch import nn

from gemsearch._deps import require

from .registry import Backbone, BackboneSpec, StateDict, register
from .weights import fetch, load_state_file

_CIRTORCH_FEATURES = "http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/imagenet/"
CIRTORCH_FEATURES = {
    "vgg16": _CIRTORCH_FEATURES + "imagenet-caffe-vgg16-features-d369c8e.pth",
    "resnet50": _CIRTORCH_FEATURES + "imagenet-caffe-resnet50-features-ac468af.pth",
    "resnet101": _CIRTORCH_FEATURES + "imagenet-caffe-resnet101-features-10a101d.pth",
    "resnet152": _CIRTORCH_FEATURES + "imagenet-caffe-resnet152-features-1011020.pth",
}


def _models() -> ModuleType:
    return require("torchvision.models", "train", package="torchvision")


def _torchvision_source(enum_name: str) -> Callable[[], StateDict]:
    def load() -> StateDict:
        weights = getattr(_models(), enum_name).IMAGENET1K_V1
        url = str(weights.url)
        return load_state_file(fetch(url, what=f"torchvision {enum_name}", check_hash=True))

    return load


def _cirtorch_source(name: str) -> Callable[[], StateDict]:
    def load() -> StateDict:
        return load_state_file(fetch(CIRTORCH_FEATURES[name], what=f"cirtorch {name} features"))

    return load


def _spec(name: str, dim: int, enum_name: str) -> BackboneSpec:
    return BackboneSpec(name=name, output_dim=dim, pretrained_from=f"torchvision {enum_name}.IMAGENET1K_V1")


def _resnet(name: str) -> Backbone:
    full = getattr(_models(), name)(weights=None)
    return Backbone(full, nn.Sequential(*list(full.children())[:-2]))


def _efficientnet(name: str) -> Backbone:
    full = getattr(_models(), name)(weights=None)
    return Backbone(full, full.features)  # ends with conv 1x1 + BN + SiLU


@register(
    _spec("vgg16", 512, "VGG16_Weights"),
    {"torchvision": _torchvision_source("VGG16_Weights"), "cirtorch": _cirtorch_source("vgg16")},
)
def vgg16() -> Backbone:
    full = _models().vgg16(weights=None)
    return Backbone(full, nn.Sequential(*list(full.features.children())[:-1]))  # ends with ReLU


def _register_resnet(name: str, enum_name: str) -> None:
    sources = {"torchvision": _torchvision_source(enum_name), "cirtorch": _cirtorch_source(name)}
    register(_spec(name, 2048, enum_name), sources)(lambda: _resnet(name))


def _register_efficientnet(name: str, dim: int, enum_name: str) -> None:
    register(_spec(name, dim, enum_name), {"torchvision": _torchvision_source(enum_name)})(
        lambda: _efficientnet(name)
    )


_register_resnet("resnet50", "ResNet50_Weights")
_register_resnet("resnet101", "ResNet101_Weights")
_register_resnet("resnet152", "ResNet152_Weights")
_register_efficientnet("efficientnet_b0", 1280, "EfficientNet_B0_Weights")
_register_efficientnet("efficientnet_b1", 1280, "EfficientNet_B1_Weights")
_register_efficientnet("efficientnet_b2", 1408, "EfficientNet_B2_Weights")
_register_efficientnet("efficientnet_b3", 1536, "EfficientNet_B3_Weights")
