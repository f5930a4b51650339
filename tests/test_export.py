"""The default model exported to ONNX (EfficientNet-Lite0 + GeM): parity with PyTorch on real photos,
multi-scale in the graph, fp16, and a manifest that reads back without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from gemsearch.exporters import DEFAULT_MODEL_NAME, ensure_default_model, export_onnx, read_manifest
from gemsearch.exporters.check import CheckReport, check_export, check_images
from gemsearch.exporters.export import weights_sha256
from gemsearch.manifest import METADATA_KEY, ModelManifest, model_version
from gemsearch.trainer.models.efficientnet_lite import LITE_PREPROCESSING
from gemsearch.trainer.models.extraction import MULTISCALE
from gemsearch.trainer.models.loading import load_model
from gemsearch.trainer.models.model import RetrievalModel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lite0() -> RetrievalModel:
    return load_model("efficientnet_lite0-gem")


@pytest.fixture(scope="module")
def images() -> list[tuple[str, Image.Image]]:
    import skimage.data  # noqa: F401  (check_images adds its photos only if present: require them)

    return check_images()


@pytest.fixture(scope="module")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # one folder per session: other test files find the exported file there and reuse it
    return ensure_default_model(tmp_path_factory.getbasetemp() / "models")


@pytest.fixture(scope="module")
def fp32_report(
    default_model: Path, lite0: RetrievalModel, images: list[tuple[str, Image.Image]]
) -> CheckReport:
    return check_export(default_model, lite0, images=images)


def test_default_model_manifest_describes_the_graph(default_model: Path, lite0: RetrievalModel) -> None:
    manifest = read_manifest(default_model)
    assert default_model.name == f"{DEFAULT_MODEL_NAME}.onnx"
    assert (manifest.name, manifest.backbone, manifest.output_dim) == (
        DEFAULT_MODEL_NAME,
        "efficientnet_lite0",
        1280,
    )
    assert manifest.pooling.kind == "gem" and manifest.pooling.p == pytest.approx(3.0)
    assert manifest.whitening is None and manifest.precision == "fp32" and manifest.opset >= 17
    assert manifest.input.dtype == "uint8" and manifest.input.max_side == 1024
    np.testing.assert_allclose(manifest.input.mean, LITE_PREPROCESSING.mean)
    np.testing.assert_allclose(manifest.input.std, LITE_PREPROCESSING.std)
    assert manifest.version == model_version(weights_sha256(lite0.net, None), manifest)
    proto = onnx.load(str(default_model))
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) == manifest.opset
    (graph_in,), (graph_out,) = proto.graph.input, proto.graph.output
    assert graph_in.name == "images" and graph_in.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    in_dims = [d.dim_param or d.dim_value for d in graph_in.type.tensor_type.shape.dim]
    assert in_dims[1] == 3 and all(isinstance(d, str) for d in (in_dims[0], in_dims[2], in_dims[3]))
    assert graph_out.name == "descriptors" and graph_out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_fp32_graph_matches_pytorch_on_many_sizes(fp32_report: CheckReport) -> None:
    (cpu,) = fp32_report.providers  # this machine: onnxruntime's CPU provider
    sizes = {(c.height, c.width) for c in cpu.cases}
    assert len(sizes) >= 5
    assert any(h % 2 or w % 2 for h, w in sizes)  # odd sizes: the SAME padding differs from even ones
    assert any(h > w for h, w in sizes) and any(w > h for h, w in sizes)  # portrait and landscape
    assert sum(c.label.startswith(("chelsea", "coffee", "astronaut")) for c in cpu.cases) >= 6  # real photos
    assert fp32_report.passed
    assert cpu.max_abs_diff <= 1e-4 and cpu.min_cosine > 0.9999


def test_descriptors_depend_on_the_image(default_model: Path, images: list[tuple[str, Image.Image]]) -> None:
    """Parity means something only if the descriptors are not near-constant."""
    session = ort.InferenceSession(str(default_model), providers=["CPUExecutionProvider"])
    vecs = [
        session.run(None, {"images": np.asarray(im).transpose(2, 0, 1)[None]})[0][0] for _, im in images[5:8]
    ]
    np.testing.assert_allclose([np.linalg.norm(v) for v in vecs], 1.0, atol=1e-5)
    assert float(vecs[0] @ vecs[2]) < 0.95


def test_batch_of_same_size_images_gives_the_rows_of_single_runs(default_model: Path) -> None:
    session = ort.InferenceSession(str(default_model), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(1).integers(0, 256, (3, 3, 75, 101), dtype=np.uint8)
    together = session.run(None, {"images": batch})[0]
    alone = np.concatenate([session.run(None, {"images": batch[i : i + 1]})[0] for i in range(3)])
    assert together.shape == (3, 1280)
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_manifest_round_trips_through_the_file(default_model: Path) -> None:
    proto = onnx.load(str(default_model))
    (text,) = [p.value for p in proto.metadata_props if p.key == METADATA_KEY]
    assert ModelManifest.from_json(text) == read_manifest(default_model)
    assert ModelManifest.from_json(read_manifest(default_model).to_json()) == read_manifest(default_model)


def test_manifest_reads_with_onnxruntime_where_torch_cannot_be_imported(default_model: Path) -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
        "import onnxruntime as ort\n"
        "from gemsearch.manifest import METADATA_KEY, ModelManifest\n"
        f"s = ort.InferenceSession({str(default_model)!r}, providers=['CPUExecutionProvider'])\n"
        "m = ModelManifest.from_json(s.get_modelmeta().custom_metadata_map[METADATA_KEY])\n"
        "from gemsearch.exporters import read_manifest\n"
        f"assert read_manifest({str(default_model)!r}) == m\n"
        "assert 'torch' not in [k for k, v in sys.modules.items() if v is not None]\n"
        "print(m.name, m.output_dim, m.version)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [DEFAULT_MODEL_NAME, "1280", read_manifest(default_model).version]


def test_ensure_default_model_reuses_a_valid_file_and_replaces_a_broken_one(
    default_model: Path, tmp_path: Path
) -> None:
    stamp = default_model.stat().st_mtime_ns
    assert ensure_default_model(default_model.parent) == default_model
    assert default_model.stat().st_mtime_ns == stamp  # reused, not exported again
    broken = tmp_path / f"{DEFAULT_MODEL_NAME}.onnx"
    broken.write_bytes(default_model.read_bytes()[:5000])  # as a killed copy would leave it
    assert ensure_default_model(tmp_path) == broken
    assert read_manifest(broken) == read_manifest(default_model).model_copy(
        update={"provenance": read_manifest(broken).provenance}
    )
    assert [p.name for p in tmp_path.iterdir()] == [broken.name]  # no temporary files left behind


def test_multiscale_graph_matches_pytorch_multiscale(
    lite0: RetrievalModel, images: list[tuple[str, Image.Image]], default_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "ms.onnx"
    manifest = export_onnx(lite0, path, name="lite0-gem-ms", scales=MULTISCALE, multiscale_in_graph=True)
    assert manifest.multiscale.in_graph and manifest.multiscale.scales == MULTISCALE
    assert manifest.multiscale.msp == pytest.approx(3.0)
    some = images[:5] + [c for c in images if c[0] in ("chelsea", "coffee portrait crop")]  # 7 sizes
    report = check_export(path, lite0, images=some)
    assert report.passed and report.max_abs_diff <= 1e-4
    assert manifest.version != read_manifest(default_model).version  # other descriptors, another index


def test_fp16_stays_within_a_cosine_of_0_999_of_fp32(
    lite0: RetrievalModel, images: list[tuple[str, Image.Image]], default_model: Path, tmp_path: Path
) -> None:
    path = tmp_path / "fp16.onnx"
    manifest = export_onnx(lite0, path, name="lite0-gem-fp16", precision="fp16")
    assert manifest.precision == "fp16" and manifest.version != read_manifest(default_model).version
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert path.stat().st_size < 0.6 * default_model.stat().st_size
    report = check_export(path, lite0, images=images)  # onnxruntime's CPU provider runs the fp16 graph
    print(f"fp16 vs PyTorch fp32: min cosine {report.min_cosine:.6f}, max abs diff {report.max_abs_diff:.2e}")
    assert report.min_cosine >= 0.999 and report.passed
    assert report.max_abs_diff > 1e-6  # it really computes in half precision
