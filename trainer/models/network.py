"""The retrieval network: backbone trunk -> pooling -> L2N [-> whitening Linear -> L2N].

``NetworkConfig`` is the data that rebuilds a network (cirtorch's ``net.meta``); ``RetrievalNet``
maps ``(n, 3, h, w)`` images to L2-normalised ``(n, D)`` descriptors, as cirtorch's
``ImageRetrievalNet`` does, with the same parameter names (``features.*``, ``pool.p``, ``whiten.*``)
but rows instead of columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from gemsearch.preprocess import Preprocessing

from .backbones import backbone_spec, create_backbone, list_backbones
from .pooling import L2N, GeM, PoolingName, create_pooling
from .registry import check_backbone


class NetworkConfig(BaseModel):
    """Everything needed to rebuild a ``RetrievalNet`` (the weights aside).

    ``preprocessing`` defaults to that of the backbone's pretrained weights.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backbone: str
    pooling: PoolingName = "gem"
    p: float = Field(3.0, gt=0, description="initial GeM power (the learned value is a weight)")
    whitening_dim: int | None = Field(None, gt=0, description="FC whitening d -> D; None: no whitening")
    preprocessing: Preprocessing = Preprocessing()  # replaced by the backbone's when not given

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        return check_backbone(name)

    @model_validator(mode="before")
    @classmethod
    def _backbone_preprocessing(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and "preprocessing" not in data
            and data.get("backbone") in list_backbones()
        ):
            data = {**data, "preprocessing": backbone_spec(data["backbone"]).preprocessing}
        return data

    @property
    def feature_dim(self) -> int:
        return backbone_spec(self.backbone).output_dim

    @property
    def output_dim(self) -> int:
        return self.whitening_dim or self.feature_dim


class RetrievalNet(nn.Module):
    """``(n, 3, h, w)`` normalised images -> ``(n, D)`` L2-normalised descriptors."""

    def __init__(
        self, features: nn.Module, pool: nn.Module, whiten: nn.Linear | None = None, *, feature_dim: int
    ) -> None:
        super().__init__()
        if whiten is not None and whiten.in_features != feature_dim:
            raise ValueError(f"whitening takes {whiten.in_features} dims, the backbone gives {feature_dim}")
        self.features = features
        self.pool = pool
        self.whiten = whiten
        self.norm = L2N()
        self.feature_dim = feature_dim

    @property
    def output_dim(self) -> int:
        return self.whiten.out_features if self.whiten is not None else self.feature_dim

    @property
    def multiscale_power(self) -> float:
        """cirtorch's ``msp``: the learned GeM p for a plain GeM network, 1 otherwise."""
        if isinstance(self.pool, GeM) and self.whiten is None:
            return float(self.pool.p.detach().item())
        return 1.0

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.norm(self.pool(self.features(x)))
        if self.whiten is not None:
            out = self.norm(self.whiten(out))
        return out


def build_network(
    config: NetworkConfig,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    source: str | None = None,
) -> RetrievalNet:
    """A ``RetrievalNet`` for ``config``; the backbone as ``create_backbone`` makes it, the rest fresh."""
    features = create_backbone(config.backbone, pretrained=pretrained, weights=weights, source=source)
    whiten = None
    if config.whitening_dim is not None:
        whiten = nn.Linear(config.feature_dim, config.whitening_dim, bias=True)
    pool = create_pooling(config.pooling, p=config.p)
    return RetrievalNet(features, pool, whiten, feature_dim=config.feature_dim)
