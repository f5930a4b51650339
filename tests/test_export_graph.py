"""What goes into the exported graph: folded whitening, the whitening each kind of checkpoint brings,
input types, both torch exporters, the model version, and requests the exporter refuses."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from gemsearch.errors import ConfigError, ModelError, StoreError
from gemsearch.exporters import apply_folded, export_onnx, fold_whitening, read_manifest, weights_sha256
from gemsearch.exporters.check import check_export, check_images
from gemsearch.exporters.onnx_file import write_atomically
from gemsearch.manifest import WhiteningSpec, model_version
from gemsearch.plugin.embedding.embedder import OnnxEmbedder
from gemsearch.plugin.query import Searcher
from gemsearch.plugin.stores.local.store import LocalStore
from gemsearch.preprocess import Preprocessing
from gemsearch.protocols import Record
from gemsearch.trainer.models.checkpoint import save_checkpoint
from gemsearch.trainer.models.efficientnet_lite import SameConv2d
from gemsearch.trainer.models.extraction import MULTISCALE
from gemsearch.trainer.models.loading import load_model
from gemsearch.trainer.models.model import RetrievalModel
from gemsearch.trainer.models.network import NetworkConfig, RetrievalNet
from gemsearch.trainer.models.pooling import PoolingName, create_pooling
from gemsearch.trainer.models.whitening import Whitening

DIM = 1280


def _whitening(d: int, seed: int) -> Whitening:
    rng = np.random.default_rng(seed)
    return Whitening(
        kind="learned", m=rng.normal(0, 0.02, d), P=rng.standard_normal((d, d)), learned_from="synthetic"
    )


def _tiny_model(
    whitening: dict[str, Whitening] | None = None,
    pooling: PoolingName = "gem",
    p: float = 2.5,
    preprocessing: Preprocessing | None = None,
) -> RetrievalModel:
    """A two-convolution trunk with Lite0's SAME padding: cheap to export, dynamic sizes as Lite0's."""
    torch.manual_seed(0)
    features = torch.nn.Sequential(
        SameConv2d(3, 8, 3, 2), torch.nn.ReLU(), SameConv2d(8, 16, 5, 2), torch.nn.ReLU()
    )
    net = RetrievalNet(features, create_pooling(pooling, p=p), feature_dim=16).eval()
    config = NetworkConfig(backbone="efficientnet_lite0", pooling=pooling)
    if preprocessing is not None:
        config = config.model_copy(update={"preprocessing": preprocessing})
    return RetrievalModel(net, config, whitening or {}, origin="tiny")


@pytest.fixture(scope="module")
def images() -> list[tuple[str, Image.Image]]:
    import skimage.data  # noqa: F401  (check_images adds its photos only if present: require them)

    cases = check_images()
    return cases[:5] + [c for c in cases if c[0] in ("chelsea", "coffee portrait crop")]


@pytest.fixture(scope="module")
def lite0_lw() -> RetrievalModel:
    """The pretrained Lite0-GeM with a single- and a multi-scale whitening."""
    model = load_model("efficientnet_lite0-gem")
    model.whitening = {"ss": _whitening(DIM, 1), "ms": _whitening(DIM, 2)}
    return model


def test_folded_whitening_equals_applying_lw_after_the_network() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    lw = _whitening(64, 3)
    for dims in (None, 64, 17):
        weight, bias = fold_whitening(lw, dims)
        assert weight.shape == (dims or 64, 64) and bias.shape == (dims or 64,)
        np.testing.assert_allclose(bias, -lw.P[: dims or 64] @ lw.m, rtol=1e-5, atol=1e-6)
        expected = lw.reduced(dims).apply(x) if dims else lw.apply(x)
        np.testing.assert_allclose(apply_folded(x, weight, bias), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="dims"):
        fold_whitening(lw, 65)


@pytest.mark.slow
def test_our_checkpoint_exports_with_its_single_scale_whitening_reduced(
    lite0_lw: RetrievalModel, images: list[tuple[str, Image.Image]], tmp_path: Path
) -> None:
    model = load_model(save_checkpoint(lite0_lw, tmp_path / "lite0-lw.ckpt"))
    manifest = export_onnx(model, tmp_path / "m.onnx", name="ckpt-lw", dims=256)
    assert manifest.whitening == WhiteningSpec(
        kind="learned", input_dim=DIM, output_dim=256, learned_from="synthetic"
    )
    assert manifest.output_dim == 256 and read_manifest(tmp_path / "m.onnx") == manifest
    report = check_export(tmp_path / "m.onnx", model, images=images)
    # the graph's descriptor is the network's, then Lw: parity with applying Lw after PyTorch
    assert report.passed and report.max_abs_diff <= 1e-5, report.max_abs_diff
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape[1] == 256


@pytest.mark.slow
def test_cirtorch_checkpoint_exports_multiscale_with_its_ms_whitening(
    lite0_lw: RetrievalModel, images: list[tuple[str, Image.Image]], tmp_path: Path
) -> None:
    lw = {kind: {"m": w.m.reshape(-1, 1), "P": w.P} for kind, w in lite0_lw.whitening.items()}
    pre = lite0_lw.config.preprocessing
    meta = {"architecture": "efficientnet_lite0", "pooling": "gem", "whitening": False,
            "local_whitening": False, "regional": False, "mean": list(pre.mean), "std": list(pre.std),
            "outputdim": DIM, "Lw": {"synthetic": lw}}  # fmt: skip
    torch.save({"meta": meta, "state_dict": lite0_lw.net.state_dict()}, tmp_path / "cirtorch.pth")
    model = load_model(tmp_path / "cirtorch.pth", lw="synthetic")
    path = tmp_path / "ms.onnx"
    manifest = export_onnx(model, path, name="cirtorch-ms", scales=MULTISCALE, multiscale_in_graph=True)
    assert manifest.multiscale.in_graph and manifest.whitening is not None
    assert manifest.whitening.learned_from == "synthetic"
    ms_weight, _ = fold_whitening(model.whitening["ms"])
    (initializer,) = [t for t in onnx.load(str(path)).graph.initializer if t.dims == [DIM, DIM]]
    stored = onnx.numpy_helper.to_array(initializer)  # the ms whitening is in the file, as one matrix
    assert np.array_equal(stored, ms_weight) or np.array_equal(stored, ms_weight.T)
    report = check_export(path, model, images=images)
    assert report.passed and report.max_abs_diff <= 1e-4, report.max_abs_diff
    single = export_onnx(model, tmp_path / "ss.onnx", name="cirtorch-ss", whitening="ss")
    assert single.version != manifest.version and not single.multiscale.in_graph
    assert check_export(tmp_path / "ss.onnx", model, whitening="ss", images=images[:3]).passed


@pytest.mark.slow
def test_float32_input_takes_normalised_images(images: list[tuple[str, Image.Image]], tmp_path: Path) -> None:
    model = load_model("efficientnet_lite0-gem")
    manifest = export_onnx(
        model, tmp_path / "f.onnx", name="lite0-float", input_dtype="float32", max_side=512
    )
    assert manifest.input.dtype == "float32" and not manifest.input.normalize_in_graph
    assert manifest.input.max_side == 512
    proto = onnx.load(str(tmp_path / "f.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    report = check_export(tmp_path / "f.onnx", model, images=images)
    assert report.passed and report.max_abs_diff <= 1e-4


@pytest.mark.slow
def test_dynamo_exporter_keeps_height_and_width_dynamic(tmp_path: Path) -> None:
    model = _tiny_model({"ss": _whitening(16, 4)})
    export_onnx(model, tmp_path / "d.onnx", name="tiny-dynamo", exporter="dynamo", dims=8)
    cases = check_images()[:5]  # random images of five sizes, none the size used at export
    report = check_export(tmp_path / "d.onnx", model, images=cases)
    assert report.passed and report.max_abs_diff <= 1e-5
    assert len({(c.height, c.width) for c in report.providers[0].cases}) == 5


def test_multiscale_graph_of_a_small_network_matches_pytorch(tmp_path: Path) -> None:
    model = _tiny_model()
    a = export_onnx(
        model, tmp_path / "a.onnx", name="tiny", scales=MULTISCALE, multiscale_in_graph=True, opset=17
    )
    assert a.multiscale.msp == pytest.approx(2.5) and a.opset == 17
    assert {(o.domain, o.version) for o in onnx.load(str(tmp_path / "a.onnx")).opset_import} >= {("", 17)}
    report = check_export(tmp_path / "a.onnx", model, images=check_images()[:5])
    assert report.passed and report.max_abs_diff <= 1e-5


def test_exporting_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    model = _tiny_model()
    model.net.train()
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    export_onnx(model, tmp_path / "h.onnx", name="tiny-fp16", precision="fp16")
    assert model.net.training
    after = model.net.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_version_is_the_hash_of_what_makes_the_descriptors(tmp_path: Path) -> None:
    def version(model: RetrievalModel, **options: Any) -> str:
        return export_onnx(model, tmp_path / "v.onnx", name="tiny", **options).version

    base = version(_tiny_model())
    assert version(_tiny_model()) == base  # deterministic: the same export twice
    assert version(_tiny_model(), msp=9.0) == base  # msp is unused on one scale
    assert version(_tiny_model(), input_dtype="float32") == base  # the same normalisation, elsewhere
    lw = {"ss": _whitening(16, 5)}
    others = {
        "mac": version(_tiny_model(pooling="mac")),
        "spoc": version(_tiny_model(pooling="spoc")),
        "gem p=3": version(_tiny_model(p=3.0)),
        "whitened": version(_tiny_model(lw)),
        "whitened, 8 dims": version(_tiny_model(lw), dims=8),
        "multi-scale": version(_tiny_model(), scales=MULTISCALE, multiscale_in_graph=True),
        "multi-scale, msp 1": version(_tiny_model(), scales=MULTISCALE, multiscale_in_graph=True, msp=1.0),
        "two scales": version(_tiny_model(), scales=(1.0, 0.5), multiscale_in_graph=True),
        "fp16": version(_tiny_model(), precision="fp16"),
        "max side 512": version(_tiny_model(), max_side=512),
        "mean/std": version(_tiny_model(preprocessing=Preprocessing(mean=(0.5, 0.5, 0.5)))),
    }
    assert base not in others.values() and len(set(others.values())) == len(others), others


def test_version_is_the_weights_hash_combined_with_the_manifest(tmp_path: Path) -> None:
    model = _tiny_model({"ss": _whitening(16, 5)})
    manifest = export_onnx(model, tmp_path / "w.onnx", name="tiny", dims=8)
    weights = weights_sha256(model.net, fold_whitening(_whitening(16, 5), 8))
    assert manifest.version == model_version(weights, manifest) == read_manifest(tmp_path / "w.onnx").version
    assert weights_sha256(model.net, fold_whitening(_whitening(16, 5), 7)) != weights
    with torch.no_grad():
        model.net.pool.p.add_(0.1)  # type: ignore[union-attr, operator]
    assert weights_sha256(model.net, None) != weights_sha256(_tiny_model().net, None)
    renamed = manifest.model_copy(update={"name": "other", "opset": 18, "evaluation": ()})
    assert model_version(weights, renamed) == manifest.version  # names and notes are not descriptors


def test_a_spoc_model_named_like_a_mac_one_is_refused_on_its_store(tmp_path: Path) -> None:
    mac, spoc = tmp_path / "mac.onnx", tmp_path / "spoc.onnx"
    export_onnx(_tiny_model(pooling="mac"), mac, name="tiny")
    export_onnx(_tiny_model(pooling="spoc"), spoc, name="tiny")  # same weights, same name
    embedder = OnnxEmbedder(mac)
    images = [im for _, im in check_images()[:3]]
    with LocalStore(tmp_path / "store") as store:
        store.ensure_index(embedder.manifest)
        store.upsert([Record(id=f"d{i}", vector=v) for i, v in enumerate(embedder.embed(images))])
        with pytest.raises(ModelError, match="would not compare"):
            Searcher(OnnxEmbedder(spoc), store)  # search
        with pytest.raises(StoreError, match="refusing to mix"):
            store.ensure_index(OnnxEmbedder(spoc).manifest)  # ingest
        assert store.count() == 3


def test_requests_that_cannot_be_honoured_are_refused(tmp_path: Path) -> None:
    model = _tiny_model({"ms": _whitening(16, 6)})
    out = tmp_path / "x.onnx"
    with pytest.raises(ConfigError, match="multiscale_in_graph"):
        export_onnx(model, out, name="x", scales=MULTISCALE)  # "auto" picks ms, which needs the graph
    with pytest.raises(ModelError, match="no 'ss' whitening"):
        export_onnx(model, out, name="x", whitening="ss")
    with pytest.raises(ConfigError, match="dims"):
        export_onnx(model, out, name="x", whitening=None, dims=8)
    with pytest.raises(ConfigError, match="dims"):
        export_onnx(model, out, name="x", scales=MULTISCALE, multiscale_in_graph=True, dims=17)
    with pytest.raises(ConfigError, match="name"):
        export_onnx(model, out, name="Not A Name")
    with pytest.raises(ConfigError, match="scales"):
        export_onnx(model, out, name="x", scales=(1.0, -0.5))
    rmac = RetrievalModel(model.net, NetworkConfig(backbone="efficientnet_lite0", pooling="rmac"))
    with pytest.raises(ConfigError, match="R-MAC"):
        export_onnx(rmac, out, name="x")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_client_side_multiscale_exports_the_single_scale_graph(tmp_path: Path) -> None:
    model = _tiny_model()
    manifest = export_onnx(model, tmp_path / "c.onnx", name="tiny-client-ms", scales=MULTISCALE)
    assert manifest.multiscale.scales == MULTISCALE and not manifest.multiscale.in_graph
    assert math.isclose(manifest.multiscale.msp, 2.5, rel_tol=1e-6)
    assert check_export(tmp_path / "c.onnx", model, images=check_images()[:3]).passed


def test_written_files_get_the_umask_permissions_not_private_ones(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = write_atomically(tmp_path / "m.onnx", lambda tmp: tmp.write_bytes(b"model"))
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 and path.read_bytes() == b"model"


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"half a model")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_atomically(tmp_path / "m.onnx", fail)
    assert list(tmp_path.iterdir()) == []


def test_export_settings_are_validated_also_when_keywords_override_them(tmp_path: Path) -> None:
    from gemsearch.errors import ConfigError
    from gemsearch.exporters.export import ExportSettings, export_onnx

    with pytest.raises(ConfigError, match="precision"):
        export_onnx(None, tmp_path / "m.onnx", ExportSettings(name="m"), precision="fp8")  # type: ignore[arg-type]
    assert not (tmp_path / "m.onnx").exists()
