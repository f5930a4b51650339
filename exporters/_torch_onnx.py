"""Running torch's ONNX exporters on a ``DescriptorGraph`` and finishing the file (manifest, check)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import torch

from gemsearch import __version__
from gemsearch.errors import ConfigError, ModelError
from gemsearch.manifest import ModelManifest

from .graph import DescriptorGraph
from .onnx_file import set_manifest

Exporter = Literal["torchscript", "dynamo"]
INPUT_NAME, OUTPUT_NAME = "images", "descriptors"
_EXAMPLE_HW = (224, 192)  # any size works: height and width are dynamic axes of the graph


def write_graph(graph: DescriptorGraph, path: Path, manifest: ModelManifest, exporter: Exporter) -> None:
    import onnx

    example = _example_input(manifest.input.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' notices; the parity check is what proves the graph
        if exporter == "dynamo":
            _export_dynamo(graph, example, path, manifest.opset)
        elif exporter == "torchscript":
            _export_torchscript(graph, example, path, manifest.opset)
        else:
            raise ConfigError(f"exporter must be 'torchscript' or 'dynamo', got {exporter!r}")
    proto = onnx.load(str(path))
    proto.producer_name, proto.producer_version = "gemsearch", __version__
    proto.doc_string = f"gemsearch retrieval model {manifest.name} ({manifest.version8})"
    set_manifest(proto, manifest)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def _example_input(dtype: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    shape = (1, 3, *_EXAMPLE_HW)
    if dtype == "uint8":
        return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    return torch.randn(shape, generator=generator)


def _export_torchscript(graph: DescriptorGraph, example: torch.Tensor, path: Path, opset: int) -> None:
    torch.onnx.export(
        graph,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )


def _export_dynamo(graph: DescriptorGraph, example: torch.Tensor, path: Path, opset: int) -> None:
    dim = torch.export.Dim
    try:
        program = torch.onnx.export(
            graph,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"images": {0: dim("batch"), 2: dim("height"), 3: dim("width")}},
            opset_version=opset,
            dynamo=True,
        )
    except Exception as exc:  # torch.export's many error types; e.g. sizes scaled by a float
        raise ModelError(
            f"torch.export could not export this graph ({type(exc).__name__}); "
            "the torchscript exporter (the default) can"
        ) from exc
    if program is None:
        raise ModelError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)
