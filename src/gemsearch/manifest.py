"""The model manifest: everything a runtime needs to use an exported model, travelling inside it.

The exporter writes it as JSON into the ONNX file's ``metadata_props`` under ``METADATA_KEY``; the
plugin reads it back to preprocess images and to build the index mapping, so dimension and
preprocessing can never silently disagree between export and ingest.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METADATA_KEY = "gemsearch.manifest"
SCHEMA_VERSION: Literal[1] = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputSpec(_Frozen):
    """What the graph's input is and what the caller must do before feeding it.

    ``dtype="uint8"``: RGB pixels 0..255, mean/std applied inside the graph.
    ``dtype="float32"``: the caller scales to 0..1 and normalises with ``mean``/``std``.
    """

    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"
    dtype: Literal["uint8", "float32"] = "uint8"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_side: int = Field(1024, gt=0, description="longer image side after shrinking (never enlarged)")
    resize_filter: Literal["lanczos"] = "lanczos"

    @property
    def normalize_in_graph(self) -> bool:
        return self.dtype == "uint8"


class PoolingSpec(_Frozen):
    kind: Literal["gem", "mac", "spoc", "rmac"]
    p: float | None = Field(None, description="GeM power (learned); None for other poolings")

    @model_validator(mode="after")
    def _p_only_for_gem(self) -> PoolingSpec:
        if (self.kind == "gem") != (self.p is not None):
            raise ValueError("pooling p is required for gem and meaningless otherwise")
        return self


class WhiteningSpec(_Frozen):
    kind: Literal["learned", "pca", "fc"]
    input_dim: int = Field(gt=0)
    output_dim: int = Field(gt=0)
    learned_from: str | None = Field(None, description="dataset the whitening was learned on")


class MultiScaleSpec(_Frozen):
    """Scales applied to the resized image; descriptors combined as (mean_s v_s^msp)^(1/msp), then L2N."""

    scales: tuple[float, ...] = (1.0,)
    msp: float = Field(1.0, gt=0)
    in_graph: bool = Field(False, description="the ONNX graph rescales and combines itself")

    @field_validator("scales")
    @classmethod
    def _positive(cls, scales: tuple[float, ...]) -> tuple[float, ...]:
        if not scales or any(s <= 0 for s in scales):
            raise ValueError("scales must be a non-empty list of positive numbers")
        return scales


class Provenance(_Frozen):
    base_weights: str | None = None
    training_data: str | None = None
    epochs: int | None = None
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    gemsearch_version: str | None = None


class EvalResult(_Frozen):
    dataset: str
    protocol: str = "standard"
    mean_ap: float = Field(ge=0, le=1)
    mp_at: dict[int, float] = Field(default_factory=dict)
    multiscale: bool = False


class ModelManifest(_Frozen):
    """Identity, preprocessing and output of one exported model (schema version 1)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(description="model name: the alias queries use")
    version: str = Field(
        description="sha256 (hex) of the weights and of every manifest field that changes the "
        "descriptors (see model_version)"
    )
    backbone: str
    pooling: PoolingSpec
    whitening: WhiteningSpec | None = None
    output_dim: int = Field(gt=0)
    input: InputSpec = InputSpec()
    multiscale: MultiScaleSpec = MultiScaleSpec()
    precision: Literal["fp32", "fp16"] = "fp32"
    opset: int = Field(17, ge=17)
    provenance: Provenance = Provenance()
    evaluation: tuple[EvalResult, ...] = ()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(
                f"model name {name!r} must be 1-63 chars of lowercase letters, digits, '-' or '_' "
                "(it becomes part of an OpenSearch index name)"
            )
        return name

    @field_validator("version")
    @classmethod
    def _valid_version(cls, version: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", version):
            raise ValueError("version must be a sha256 in 64 lowercase hex digits (see model_version)")
        return version

    @model_validator(mode="after")
    def _dims_agree(self) -> ModelManifest:
        if self.whitening is not None and self.whitening.output_dim != self.output_dim:
            raise ValueError("whitening output_dim must equal the model's output_dim")
        return self

    @property
    def version8(self) -> str:
        return self.version[:8]

    def index_name(self, prefix: str = "gemsearch") -> str:
        """The physical index of this model version: ``<prefix>-<name>-<version8>``."""
        return f"{prefix}-{self.name}-{self.version8}"

    def alias_name(self, prefix: str = "gemsearch") -> str:
        """The alias queries use for this model name, whatever its version."""
        return f"{prefix}-{self.name}"

    def descriptor_fields(self) -> dict[str, Any]:
        """Everything besides the weights that decides the descriptors: architecture, pooling,
        whitening, output size, preprocessing, scales and precision. Left out: names, notes, the
        opset and the input dtype (uint8 or float32 input is the same normalisation, done in the
        graph or by the runtime)."""
        ms = self.multiscale
        lw = self.whitening
        whitening = lw.model_dump(mode="json", exclude={"learned_from"}) if lw is not None else None
        return {
            "backbone": self.backbone,
            "pooling": self.pooling.model_dump(mode="json"),
            "whitening": whitening,
            "output_dim": self.output_dim,
            "input": self.input.model_dump(mode="json", exclude={"dtype"}),
            "scales": list(ms.scales),
            "msp": ms.msp if len(ms.scales) > 1 else None,  # unused on one scale
            "precision": self.precision,
        }

    def with_version(self, weights_sha256: str) -> ModelManifest:
        """This manifest with ``version = model_version(weights_sha256, self)``."""
        return self.model_copy(update={"version": model_version(weights_sha256, self)})

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        return cls.model_validate_json(text)


def model_version(weights_sha256: str, manifest: ModelManifest) -> str:
    """The model version: sha256 of the weights' sha256 and the canonical JSON of
    ``manifest.descriptor_fields()``. Two models share it only if their descriptors compare, so a
    store or index refuses a model of the same name whose pooling, whitening, scales, preprocessing
    or precision differ, even when the weights are the same (MAC and SPoC have no weights of their own)."""
    canonical = json.dumps(manifest.descriptor_fields(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{weights_sha256}\n{canonical}".encode()).hexdigest()
