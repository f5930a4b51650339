"""Opening a model checks its manifest against its graph: a manifest that lies about the input or the
output dimension is refused at load, before any store or index is sized from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import helper, numpy_helper
from PIL import Image
from support.onnx_models import make_tiny_model

from gemsearch.cli import main
from gemsearch.cli.index import load_manifest
from gemsearch.errors import ModelError
from gemsearch.manifest import METADATA_KEY, ModelManifest
from gemsearch.onnx_manifest import read_manifest
from gemsearch.plugin.embedding.embedder import OnnxEmbedder

DIM = 16


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    make_tiny_model(path, dim=DIM)
    return path


def _rewrite(
    src: Path, dst: Path, *, dynamic_output: bool = False, nhwc: bool = False, **changes: Any
) -> Path:
    """A copy of ``src`` with manifest fields replaced by ``changes``, optionally with its output
    dimension made dynamic or its input taken as NHWC (transposed to NCHW inside the graph)."""
    proto = onnx.load(str(src))
    (prop,) = [p for p in proto.metadata_props if p.key == METADATA_KEY]
    prop.value = ModelManifest.from_json(prop.value).model_copy(update=changes).to_json()
    if dynamic_output:
        _hide_output_dim(proto.graph)
    if nhwc:
        graph_input = proto.graph.input[0]
        for node in proto.graph.node:
            node.input[:] = ["nchw" if name == graph_input.name else name for name in node.input]
        proto.graph.node.insert(
            0, helper.make_node("Transpose", [graph_input.name], ["nchw"], perm=[0, 3, 1, 2])
        )
        dims = graph_input.type.tensor_type.shape.dim
        dims[1].dim_param, dims[2].dim_param, dims[3].dim_value = "height", "width", 3
    onnx.checker.check_model(proto)
    onnx.save(proto, str(dst))
    return dst


def _hide_output_dim(graph: onnx.GraphProto) -> None:
    """Reshape the output to (batch, -1) with a shape computed at run time: onnxruntime cannot
    infer the descriptor dimension any more (a declared dim_param alone it would infer through)."""
    out = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["fixed" if name == out else name for name in node.output]
    graph.initializer.extend([numpy_helper.from_array(np.array([-1], np.int64), "minus_one")])
    graph.node.extend([
        helper.make_node("Shape", ["fixed"], ["fixed_shape"], end=1),
        helper.make_node("Concat", ["fixed_shape", "minus_one"], ["flat"], axis=0),
        helper.make_node("Reshape", ["fixed", "flat"], [out]),
    ])  # fmt: skip
    graph.output[0].type.tensor_type.shape.dim[1].dim_param = "descriptor"


def test_a_manifest_that_lies_about_the_output_dim_is_refused_at_load(genuine: Path, tmp_path: Path) -> None:
    lying = _rewrite(genuine, tmp_path / "lying.onnx", output_dim=64)
    for load in (OnnxEmbedder, read_manifest, load_manifest):
        with pytest.raises(ModelError, match="output_dim 64 but the graph gives 16-dimensional"):
            load(lying)


def test_ingest_with_a_lying_model_creates_no_store(genuine: Path, tmp_path: Path) -> None:
    lying = _rewrite(genuine, tmp_path / "lying.onnx", output_dim=64)
    (tmp_path / "photos").mkdir()
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "photos" / f"{i}.png")
    store = tmp_path / "store"
    args = ["ingest", str(tmp_path / "photos"), "--model", str(lying), "--store", str(store)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "output_dim 64" in result.output, result.output
    assert not store.exists()


def test_a_dynamic_output_dim_is_measured_at_load(genuine: Path, tmp_path: Path) -> None:
    lying = _rewrite(genuine, tmp_path / "lying.onnx", dynamic_output=True, output_dim=64)
    with pytest.raises(ModelError, match="output_dim 64 but the graph gives 16-dimensional"):
        OnnxEmbedder(lying)
    honest = OnnxEmbedder(_rewrite(genuine, tmp_path / "honest.onnx", dynamic_output=True))
    assert honest.session.get_outputs()[0].shape[1] == "descriptor"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 41, 3), dtype=np.uint8))
    assert honest.embed([image]).shape == (1, DIM)


def test_a_manifest_that_lies_about_the_input_is_refused_at_load(genuine: Path, tmp_path: Path) -> None:
    manifest = read_manifest(genuine)
    float_input = manifest.input.model_copy(update={"dtype": "float32"})
    wrong_dtype = _rewrite(genuine, tmp_path / "dtype.onnx", input=float_input)
    for load in (OnnxEmbedder, read_manifest, load_manifest):
        with pytest.raises(ModelError, match=r"says float32 input but the graph takes tensor\(uint8\)"):
            load(wrong_dtype)
    nhwc = _rewrite(genuine, tmp_path / "nhwc.onnx", nhwc=True)
    session = ort.InferenceSession(str(nhwc), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": np.zeros((1, 20, 24, 3), np.uint8)})[0].shape == (1, DIM)  # valid
    for load in (OnnxEmbedder, read_manifest):
        with pytest.raises(ModelError, match=r"NCHW RGB input .* the graph's input has shape \['batch'"):
            load(nhwc)


def test_embed_takes_paths_bytes_and_pil_images(genuine: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    path = tmp_path / "photo.png"
    image.save(path)
    embedder = OnnxEmbedder(genuine)
    rows = embedder.embed([path, str(path), path.read_bytes(), image])
    assert rows.shape == (4, DIM) and rows.dtype == np.float32
    np.testing.assert_allclose(rows, np.repeat(rows[:1], 4, axis=0), atol=1e-6)  # the same pixels
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    for single in (path, path.read_bytes(), image):  # one image, not in a list: one row
        one = embedder.embed(single)
        assert one.shape == (1, DIM) and one.dtype == np.float32
        np.testing.assert_allclose(one[0], rows[0], atol=1e-6)
