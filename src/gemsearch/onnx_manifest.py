"""The manifest inside an exported ONNX file, read with onnxruntime alone (no torch, no onnx), and
written into an ``onnx.ModelProto`` (by the exporters and the default model's builder).

The exporter checks its files and the runtime opens its models through the same two functions, so a
file that reads for one reads for the other. A manifest is accepted only if the graph agrees with it
(input type and layout, output dimension): stores and indices are sized from the manifest, so a
manifest that lies would create them wrong before the first descriptor showed it.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from .errors import ModelError
from .manifest import METADATA_KEY, InputSpec, ModelManifest

ORT_INPUT_TYPES = {"uint8": "tensor(uint8)", "float32": "tensor(float)"}
_PROBE_SIDE = 64  # height and width of the blank image that measures a dynamic output dimension


def metadata_session(path: str | os.PathLike[str]) -> Any:
    """An onnxruntime CPU session on ``path`` for reading metadata and signatures (no graph
    optimisations: cheap to open); ``ModelError`` if it is not a loadable ONNX model."""
    import onnxruntime as ort  # a base dependency; imported here to keep `gemsearch --help` light

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile types
        raise ModelError(f"{path}: not a loadable ONNX model ({exc})") from exc


def manifest_of_session(session: Any, origin: str) -> ModelManifest:
    """The manifest of an open ``onnxruntime.InferenceSession``, checked against its graph
    (``check_graph``); ``origin`` names it in errors."""
    text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if text is None:
        raise ModelError(
            f"{origin}: no gemsearch manifest ({METADATA_KEY!r} in the ONNX metadata); "
            "export the model with `gemsearch export onnx`"
        )
    try:
        manifest = ModelManifest.from_json(text)
    except ValidationError as exc:
        raise ModelError(f"{origin}: invalid gemsearch manifest ({exc})") from exc
    check_graph(session, manifest, origin)
    return manifest


def check_graph(session: Any, manifest: ModelManifest, origin: str) -> None:
    """``ModelError`` unless the graph takes one image batch as the manifest describes it (dtype,
    NCHW with 3 channels) and gives ``(n, output_dim)`` descriptors. A dynamic output dimension is
    measured by running one blank image."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise ModelError(
            f"{origin}: expected one image input and a descriptor output, got inputs "
            f"{[i.name for i in inputs]} and outputs {[o.name for o in outputs]}"
        )
    _check_input(inputs[0], manifest.input, origin)
    shape = list(outputs[0].shape or [])
    if len(shape) != 2:
        raise ModelError(f"{origin}: the graph's output has shape {shape}, not (batch, descriptor)")
    dim = shape[1] if isinstance(shape[1], int) else _probe_dim(session, inputs[0], manifest.input, origin)
    if dim != manifest.output_dim:
        raise ModelError(
            f"{origin}: the manifest says output_dim {manifest.output_dim} but the graph gives "
            f"{dim}-dimensional descriptors; refusing a model whose manifest does not describe it"
        )


def _check_input(graph_input: Any, spec: InputSpec, origin: str) -> None:
    if graph_input.type != ORT_INPUT_TYPES[spec.dtype]:
        raise ModelError(
            f"{origin}: the manifest says {spec.dtype} input but the graph takes {graph_input.type}"
        )
    shape = list(graph_input.shape or [])
    if len(shape) != 4 or shape[1] != 3:
        raise ModelError(
            f"{origin}: the manifest says {spec.layout} {spec.color} input (batch, 3, height, width) "
            f"but the graph's input has shape {shape}"
        )


def _probe_dim(session: Any, graph_input: Any, spec: InputSpec, origin: str) -> int:
    import numpy as np  # only models with a dynamic output dimension need it

    side = [d if isinstance(d, int) else _PROBE_SIDE for d in graph_input.shape[2:]]
    blank = np.zeros((1, 3, *side), dtype=np.uint8 if spec.dtype == "uint8" else np.float32)
    try:
        out = session.run(None, {graph_input.name: blank})[0]
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"{origin}: the graph does not run on a {side[0]}x{side[1]} image ({exc})") from exc
    shape = np.shape(out)
    if len(shape) != 2 or shape[0] != 1:
        raise ModelError(f"{origin}: one image gives output of shape {shape}, not (1, descriptor)")
    return int(shape[1])


def set_manifest(model: Any, manifest: ModelManifest) -> None:
    """Store ``manifest`` as JSON under ``METADATA_KEY`` in an ``onnx.ModelProto`` (replacing any)."""
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, manifest.to_json()


def read_manifest(path: str | os.PathLike[str]) -> ModelManifest:
    """The manifest embedded in the ONNX file at ``path``; ``ModelError`` if it has none or is invalid."""
    return manifest_of_session(metadata_session(path), str(path))
