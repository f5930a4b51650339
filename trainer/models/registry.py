"""The backbone registry (timm-like): a name -> how to build the network and where its weights are.

A backbone is built as the full ImageNet classifier plus a view of its convolutional trunk (the
same modules), so published classifier weights load strictly into the full model, while trunk-only
files (cirtorch's feature files, our own) load into the trunk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from gemsearch.errors import ConfigError, ModelError
from gemsearch.preprocess import Preprocessing

StateDict = Mapping[str, torch.Tensor]


class BackboneSpec(BaseModel):
    """What is known about a backbone without building it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    output_dim: int = Field(gt=0, description="channels of the trunk's last feature map")
    preprocessing: Preprocessing = Preprocessing()
    pretrained_from: str = Field(description="where the ImageNet weights come from")


class Backbone(NamedTuple):
    """``classifier``: the full ImageNet model; ``trunk``: its convolutional part (the same modules),
    ``(n, 3, h, w) -> (n, d, h', w')``."""

    classifier: nn.Module
    trunk: nn.Module


@dataclass(frozen=True)
class _Entry:
    spec: BackboneSpec
    build: Callable[[], Backbone]
    sources: Mapping[str, Callable[[], StateDict]]  # first one is the default
    convert: Callable[[StateDict], StateDict] = field(default=dict)  # source -> classifier naming


_REGISTRY: dict[str, _Entry] = {}


def register(
    spec: BackboneSpec,
    sources: Mapping[str, Callable[[], StateDict]],
    convert: Callable[[StateDict], StateDict] = dict,
) -> Callable[[Callable[[], Backbone]], Callable[[], Backbone]]:
    """Decorator: register the randomly initialised builder of ``spec.name`` and its weight sources."""
    if not sources:
        raise ValueError("a backbone needs at least one pretrained weight source")

    def decorate(build: Callable[[], Backbone]) -> Callable[[], Backbone]:
        _REGISTRY[spec.name] = _Entry(spec, build, dict(sources), convert)
        return build

    return decorate


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def check_backbone(name: str) -> str:
    """``name`` if it is a registered backbone; a ValueError naming the known ones otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")
    return name


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}") from None


def backbone_spec(name: str) -> BackboneSpec:
    return _entry(name).spec


def weight_sources(name: str) -> list[str]:
    return list(_entry(name).sources)


def build_backbone(
    name: str, *, pretrained: bool = False, weights: StateDict | None = None, source: str | None = None
) -> Backbone:
    """Build ``name``; load ``weights`` if given, else the pretrained ``source`` (default: the first)."""
    entry = _entry(name)
    parts = entry.build()
    if weights is None and pretrained:
        if source is not None and source not in entry.sources:
            raise ConfigError(f"{name}: unknown weight source {source!r}; known: {', '.join(entry.sources)}")
        weights = entry.sources[source or next(iter(entry.sources))]()
    if weights is not None:
        load_weights(parts, weights, entry.convert, name)
    return parts


def load_weights(
    parts: Backbone, state: StateDict, convert: Callable[[StateDict], StateDict], name: str
) -> None:
    """Strictly load a trunk state dict into the trunk, or any other into the classifier after ``convert``."""
    if set(state) == set(parts.trunk.state_dict()):
        target, state = parts.trunk, dict(state)
    else:
        target, state = parts.classifier, convert(state)
    try:
        result = target.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ModelError(f"{name}: the weights do not fit the network ({exc})") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{name}: the weights do not fit the network: missing {_few(result.missing_keys)}, "
            f"unexpected {_few(result.unexpected_keys)}"
        )


def _few(keys: list[str], n: int = 4) -> str:
    if not keys:
        return "none"
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
