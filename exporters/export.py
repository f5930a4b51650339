"""``export_onnx``: one ``RetrievalModel`` -> one ONNX file with its whitening folded in and its
manifest embedded. Images go in, final descriptors come out: nothing is left to client code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gemsearch import __version__, weights_digest
from gemsearch.errors import ConfigError, ModelError
from gemsearch.manifest import (
    EvalResult,
    InputSpec,
    ModelManifest,
    MultiScaleSpec,
    PoolingSpec,
    Provenance,
    WhiteningSpec,
)
from gemsearch.trainer.models.extraction import SINGLE_SCALE
from gemsearch.trainer.models.model import RetrievalModel
from gemsearch.trainer.models.network import RetrievalNet
from gemsearch.trainer.models.pooling import GeM
from gemsearch.trainer.models.whitening import Whitening

from ._torch_onnx import INPUT_NAME, OUTPUT_NAME, Exporter, write_graph
from .folding import F32, fold_whitening
from .graph import DescriptorGraph
from .onnx_file import write_atomically

log = logging.getLogger(__name__)

WhiteningChoice = Literal["auto", "ss", "ms"] | None
InputDtype = Literal["uint8", "float32"]
Precision = Literal["fp32", "fp16"]
DEFAULT_OPSET = 18
__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ExportSettings",
    "Exporter",
    "export_onnx",
    "pick_whitening",
    "weights_sha256",
]


class ExportSettings(BaseModel):
    """What an export makes of a model (see ``export_onnx`` for each field's meaning)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: str
    scales: tuple[float, ...] = SINGLE_SCALE
    multiscale_in_graph: bool = False
    whitening: WhiteningChoice = "auto"
    dims: int | None = None
    input_dtype: InputDtype = "uint8"
    precision: Precision = "fp32"
    max_side: int = 1024
    opset: int = DEFAULT_OPSET
    msp: float | None = None
    exporter: Exporter = "torchscript"
    provenance: Provenance | None = None
    evaluation: tuple[EvalResult, ...] = ()


def export_onnx(
    model: RetrievalModel, path: str | Path, settings: ExportSettings | None = None, **fields: Any
) -> ModelManifest:
    """Export ``model`` to ``path`` and return the manifest embedded in it. The export is described by
    ``settings`` or by its fields given as keywords (``name=...``, ``scales=...``):

    ``scales``: the scales the descriptors are taken at; with more than one, ``multiscale_in_graph``
    puts the rescaling and the power mean (``msp``, default the network's) into the graph, otherwise
    the runtime has to do them. ``whitening``: ``"auto"`` takes the model's learned whitening for
    this kind of extraction (``"ms"`` for several scales, ``"ss"`` for one), ``"ss"``/``"ms"`` pick
    one, None exports without; ``dims`` keeps its first ``dims`` output dimensions.
    ``input_dtype="uint8"``: RGB pixels in, mean/std inside the graph; ``"float32"``: normalised
    input. ``precision="fp16"``: the backbone in half precision (input and output as for fp32).
    ``exporter``: torch's TorchScript-based ONNX exporter (fast) or its ``torch.export``-based one.
    """
    try:
        base = settings.model_dump() if settings is not None else {}
        run = ExportSettings.model_validate({**base, **fields})  # validated, also what overrides settings
    except ValidationError as exc:
        raise ConfigError(f"invalid export settings: {exc}") from exc
    run = run.model_copy(update={"scales": _checked_scales(run.scales)})
    lw = _checked_whitening(model, run)
    folded = fold_whitening(lw, run.dims) if lw is not None else None
    power = model.net.multiscale_power if run.msp is None else float(run.msp)
    try:
        manifest = _manifest(model, run, folded, lw, power)
    except ValidationError as exc:
        raise ConfigError(f"invalid export settings: {exc}") from exc
    graph = DescriptorGraph(
        model.net,
        mean=model.config.preprocessing.mean,
        std=model.config.preprocessing.std,
        uint8_input=run.input_dtype == "uint8",
        scales=run.scales if run.multiscale_in_graph else SINGLE_SCALE,
        msp=power,
        whitening=folded,
        half=run.precision == "fp16",
    )
    write_atomically(Path(path), lambda tmp: write_graph(graph, tmp, manifest, run.exporter))
    log.info("exported %s (%s, %d dims) to %s", run.name, manifest.version8, manifest.output_dim, path)
    return manifest


def _checked_whitening(model: RetrievalModel, run: ExportSettings) -> Whitening | None:
    """The learned whitening the export uses, after refusing what a graph cannot hold."""
    if model.config.pooling == "rmac":
        raise ConfigError(
            "R-MAC's region grid is computed in Python from the feature map size, which a traced graph "
            "freezes to one image size: R-MAC networks cannot be exported with dynamic sizes"
        )
    lw = pick_whitening(model, run.whitening, run.scales)
    if lw is not None and len(run.scales) > 1 and not run.multiscale_in_graph:
        raise ConfigError(
            "the whitening applies to the combined multi-scale descriptor, which only the graph can "
            "compute: export with multiscale_in_graph=True (--multiscale), or without whitening"
        )
    if run.dims is not None and lw is None:
        raise ConfigError("dims reduces a learned whitening, and this export has none")
    return lw


def _manifest(
    model: RetrievalModel,
    run: ExportSettings,
    folded: tuple[F32, F32] | None,
    lw: Whitening | None,
    power: float,
) -> ModelManifest:
    weights = weights_sha256(model.net, folded)
    in_graph = run.multiscale_in_graph and len(run.scales) > 1
    return ModelManifest(
        name=run.name,
        version=weights,  # a placeholder of the right form, replaced by with_version below
        backbone=model.config.backbone,
        pooling=_pooling_spec(model),
        whitening=_whitening_spec(model.net, lw, folded),
        output_dim=folded[0].shape[0] if folded is not None else model.net.output_dim,
        input=InputSpec(
            dtype=run.input_dtype,
            mean=model.config.preprocessing.mean,
            std=model.config.preprocessing.std,
            max_side=run.max_side,
        ),
        multiscale=MultiScaleSpec(scales=run.scales, msp=power, in_graph=in_graph),
        precision=run.precision,
        opset=run.opset,
        provenance=run.provenance
        or Provenance(base_weights=model.origin or None, gemsearch_version=__version__),
        evaluation=run.evaluation,
    ).with_version(weights)


def pick_whitening(
    model: RetrievalModel, choice: WhiteningChoice, scales: Sequence[float]
) -> Whitening | None:
    """The learned whitening ``choice`` names for an extraction at ``scales`` (see ``export_onnx``)."""
    if choice is None:
        return None
    if choice == "auto":
        return model.whitening_for(scales)
    if choice not in ("ss", "ms"):
        raise ConfigError(f"whitening must be 'auto', 'ss', 'ms' or None, got {choice!r}")
    found = model.whitening.get(choice)
    if found is None:
        have = ", ".join(model.whitening) or "none"
        raise ModelError(f"{model.origin}: no {choice!r} whitening in this model (it has: {have})")
    if (choice == "ms") != (len(scales) > 1):
        kind = "multi" if len(scales) > 1 else "single"
        log.warning("using the %r whitening for a %s-scale export", choice, kind)
    return found


def weights_sha256(net: RetrievalNet, folded: tuple[F32, F32] | None) -> str:
    """sha256 of the network weights and the folded whitening: the weights' part of the model version
    (``gemsearch.manifest.model_version`` adds pooling, scales, preprocessing and precision from the
    manifest). The format is ``gemsearch.weights_digest``'s, which the torch-free default model shares."""
    arrays = []
    for key, tensor in net.state_dict().items():
        t = tensor.detach().cpu()
        arrays.append((key, (t.float() if t.is_floating_point() else t).numpy()))
    return weights_digest.weights_sha256(arrays, folded)


def _checked_scales(scales: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(s) for s in scales)
    if not out or min(out) <= 0:
        raise ConfigError("scales must be a non-empty list of positive numbers")
    return out


def _pooling_spec(model: RetrievalModel) -> PoolingSpec:
    pool = model.net.pool
    p = float(pool.p.detach().reshape(-1)[0]) if isinstance(pool, GeM) else None
    return PoolingSpec(kind=model.config.pooling, p=p)


def _whitening_spec(
    net: RetrievalNet, lw: Whitening | None, folded: tuple[F32, F32] | None
) -> WhiteningSpec | None:
    if lw is not None and folded is not None:
        out_dim, in_dim = folded[0].shape
        return WhiteningSpec(kind=lw.kind, input_dim=in_dim, output_dim=out_dim, learned_from=lw.learned_from)
    if net.whiten is not None:
        return WhiteningSpec(kind="fc", input_dim=net.whiten.in_features, output_dim=net.whiten.out_features)
    return None
