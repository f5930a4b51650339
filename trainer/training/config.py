"""``TrainConfig``: every option of ``gemsearch train``, validated; read from YAML, overridden by flags.

Defaults follow cirtorch's ``train.py`` (Adam, lr 1e-6, weight decay 1e-6, lr x exp(-0.01) per
epoch, 5 negatives, 2000 queries, a 20000-image pool, 5 tuples per batch, images of 362 px).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gemsearch.errors import ConfigError

DataFormat = Literal["auto", "folders", "pairs", "sfm"]
PoolingName = Literal["gem", "mac", "spoc", "rmac"]  # = pooling.PoolingName, which would import torch


class DataSource(BaseModel):
    """Where training images come from, in one of three layouts (``training.data``).

    ``auto``: a ``.pkl`` file is cirtorch's SfM database, a folder is one sub-folder per object,
    a ``.jsonl``/``.csv`` file is a list of matching pairs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    format: DataFormat = "auto"
    images_root: Path | None = Field(
        None, description="SfM: the ims/ folder (default: <pkl folder>/ims); pairs: base of relative paths"
    )
    split: str = Field("train", description="SfM database split")

    def resolved_format(self) -> Literal["folders", "pairs", "sfm"]:
        if self.format != "auto":
            return self.format
        if self.path.is_dir():
            return "folders"
        suffix = self.path.suffix.lower()
        if suffix == ".pkl":
            return "sfm"
        if suffix in (".jsonl", ".csv", ".json"):
            return "pairs"
        raise ConfigError(f"{self.path}: cannot tell its layout; pass a format (folders, pairs or sfm)")


class TrainConfig(BaseModel):
    """All the settings of one training run. ``directory`` receives checkpoints and metrics."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # where
    directory: Path = Field(description="output folder: checkpoints, metrics.jsonl, config.yaml")
    resume: bool = Field(False, description="continue the run saved in directory")
    # data
    train_data: Path = Field(description="a folder per object, a pairs JSONL/CSV, or an SfM .pkl")
    val_data: Path | None = Field(None, description="same layouts; SfM: default the 'val' split")
    data_format: DataFormat = Field("auto", description="layout of train/val data; auto: from the path")
    images_root: Path | None = Field(None, description="SfM: the ims/ folder; pairs: base of relative paths")
    test_datasets: list[Path] = Field(default_factory=list, description="cirtorch-layout test folders")
    # network
    backbone: str = Field("resnet101", description="CNN trunk: vgg16, resnet50/101/152, efficientnet_*")
    pooling: PoolingName = Field("gem", description="global pooling")
    p: float = Field(3.0, gt=0, description="initial GeM p")
    whitening_dim: int | None = Field(None, gt=0, description="learnable FC whitening d -> D")
    pretrained: bool = Field(True, description="start from the ImageNet weights")
    weights: Path | None = Field(None, description="local backbone weights instead of a download")
    init_model: Path | None = Field(None, description="start from this gemsearch checkpoint")
    # loss and tuples
    loss: Literal["contrastive", "triplet"] = Field("contrastive", description="on L2-normalised descriptors")
    margin: float | None = Field(None, gt=0, description="default 0.7 (contrastive), 0.1 (triplet)")
    neg_num: int = Field(5, ge=1, description="hard negatives per tuple")
    query_size: int = Field(2000, ge=1, description="(query, positive) pairs drawn per epoch")
    pool_size: int = Field(20000, ge=1, description="random images negatives are mined from per epoch")
    image_size: int = Field(362, ge=16, description="longer side of training images")
    # optimisation
    optimizer: Literal["adam", "sgd"] = Field("adam", description="adam or sgd (with momentum)")
    lr: float = Field(1e-6, gt=0, description="learning rate of the backbone at epoch 0")
    momentum: float = Field(0.9, ge=0, description="SGD momentum")
    weight_decay: float = Field(1e-6, ge=0, description="L2 penalty (not on the GeM p)")
    lr_decay: float = Field(0.01, ge=0, description="lr x exp(-lr_decay * epoch)")
    pool_lr_factor: float = Field(10.0, gt=0, description="GeM p learns this much faster")
    epochs: int = Field(100, ge=1, description="epochs in all (a resumed run continues to this)")
    batch_size: int = Field(5, ge=1, description="tuples per optimiser step (per process)")
    update_every: int = Field(1, ge=1, description="accumulate gradients over this many batches")
    # evaluation
    eval_every: int = Field(1, ge=1, description="mAP on val_data / test_datasets every N epochs")
    test_image_size: int = Field(1024, ge=16)
    # runtime
    device: str = Field("auto", description="auto: CUDA when present, else CPU")
    amp: bool = Field(True, description="mixed precision on CUDA (ignored on CPU)")
    workers: int = Field(2, ge=0, description="image-loading processes")
    seed: int = Field(0, ge=0, description="seeds the weights, draws and mining: same seed, same run")
    progress: bool = Field(True, description="progress bars")

    @field_validator("backbone")
    @classmethod
    def _known_backbone(cls, name: str) -> str:
        from ..models.registry import check_backbone

        return check_backbone(name)

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.loss == "triplet" and self.neg_num < 1:
            raise ValueError("the triplet loss needs at least one negative")
        if self.init_model is not None and self.weights is not None:
            raise ValueError("give either init_model or weights, not both")
        return self

    @property
    def resolved_margin(self) -> float:
        return self.margin if self.margin is not None else (0.7 if self.loss == "contrastive" else 0.1)

    def train_source(self) -> DataSource:
        return DataSource(path=self.train_data, format=self.data_format, images_root=self.images_root)

    def val_source(self) -> DataSource | None:
        """``val_data``; for an SfM database without one, its own ``val`` split."""
        if self.val_data is not None:
            return DataSource(path=self.val_data, format=self.data_format, images_root=self.images_root)
        if self.train_source().resolved_format() == "sfm":
            return DataSource(path=self.train_data, format="sfm", images_root=self.images_root, split="val")
        return None


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file (keys may use dashes, as the flags do)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def make_config(
    file_values: dict[str, Any], overrides: dict[str, Any], origin: str = "options"
) -> TrainConfig:
    """``TrainConfig`` of the file's values with ``overrides`` (e.g. flags) on top; ConfigError if invalid."""
    try:
        return TrainConfig.model_validate({**file_values, **overrides})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid training configuration ({origin}): {problems}") from exc


def load_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """Read ``path`` (YAML) if given, apply ``overrides`` (``None`` values are ignored), validate."""
    values = read_yaml(path) if path is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    return make_config(values, given, str(path) if path else "options")


def dump_config(config: TrainConfig, path: Path) -> None:
    """Write ``config`` as YAML, so a run's folder says how it was made."""
    import yaml

    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
