"""The default model built without torch (``gemsearch.default_model``): its weights reader refuses
anything but tensors, and its file gives the torch export's descriptors, manifest and model version."""

from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from support.no_torch import run_without_torch

from gemsearch.default_model import DEFAULT_MODEL_NAME, build_default_model
from gemsearch.default_model.graph import fold_batch_norm
from gemsearch.default_model.lite0 import lite0_weights_path
from gemsearch.default_model.torch_file import read_state_dict
from gemsearch.errors import ModelError
from gemsearch.exporters.default_model import export_default_model
from gemsearch.exporters.export import weights_sha256
from gemsearch.onnx_manifest import read_manifest
from gemsearch.preprocess import shrink
from gemsearch.trainer.models.loading import load_model
from gemsearch.trainer.models.weights import load_state_file


def _same_tensors(ours: dict[str, np.ndarray], theirs: dict[str, torch.Tensor]) -> None:
    assert list(ours) == list(theirs)
    for key, tensor in theirs.items():
        assert ours[key].shape == tuple(tensor.shape), key
        assert ours[key].dtype == tensor.numpy().dtype, key
        np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=key)


def test_reads_the_lite0_package_file_as_torch_does() -> None:
    path = lite0_weights_path()
    assert not zipfile.is_zipfile(path)  # the legacy stream layout
    ours = read_state_dict(path)
    assert len(ours) == 296 and ours["_bn0.num_batches_tracked"].shape == ()  # scalars stay scalars
    _same_tensors(ours, load_state_file(path))


def test_reads_a_zip_file_from_torch_save_with_views_strides_and_dtypes(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "transposed": base.t(),  # non-contiguous strides
        "slice": base[1:3, 2:5],  # an offset into a shared storage
        "whole": base,
        "half": torch.linspace(-2, 2, 7, dtype=torch.float16),
        "steps": torch.tensor(12345678901, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "bytes": torch.arange(5, dtype=torch.uint8),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2, 2)),
    }
    path = tmp_path / "state.pth"
    torch.save(state, path)
    assert zipfile.is_zipfile(path)
    _same_tensors(read_state_dict(path), {k: v.detach() for k, v in state.items()})


def _legacy_file(payload: bytes) -> bytes:
    """A legacy-layout torch file whose state-dict pickle is ``payload`` (no storages)."""
    head = b"".join(
        pickle.dumps(v, protocol=2)
        for v in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    return head + payload + pickle.dumps([], protocol=2)


class _Shell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["legacy", "zip"])
def test_a_file_that_names_a_function_is_refused_without_running_it(tmp_path: Path, layout: str) -> None:
    marker = tmp_path / "ran"
    payload = pickle.dumps({"weight": _Shell(marker)}, protocol=2)
    assert b"system" in payload
    path = tmp_path / "evil.pth"
    if layout == "legacy":
        path.write_bytes(_legacy_file(payload))
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("evil/data.pkl", payload)
    with pytest.raises(ModelError, match=r"refusing (posix|os)\.system"):
        read_state_dict(path)
    assert not marker.exists()
    pickle.loads(payload)  # the same bytes, unpickled as pickle does, do run the command
    assert marker.exists()


def test_a_tensor_reaching_past_its_storage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.pth"
    torch.save({"w": torch.zeros(4)}, path)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    (pkl,) = [n for n in entries if n.endswith("data.pkl")]
    # the size (4,) becomes (9,): the view would read 5 floats after the storage's end
    assert entries[pkl].count(b"K\x04\x85") == 1
    entries[pkl] = entries[pkl].replace(b"K\x04\x85", b"K\x09\x85")
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(ModelError, match="past the end of storage"):
        read_state_dict(path)


def test_a_tensor_that_repeats_its_storage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.pth"
    torch.save({"w": torch.zeros(1).expand(10_000, 10_000)}, path)  # stride 0: 1e8 elements from one
    with pytest.raises(ModelError, match="more elements than its storage"):
        read_state_dict(path)


@pytest.mark.parametrize("junk", [b"", b"not a weights file", pickle.dumps([1, 2, 3], protocol=2)])
def test_a_file_that_is_not_a_state_dict_gets_a_model_error(tmp_path: Path, junk: bytes) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(junk)
    with pytest.raises(ModelError, match=str(path)):
        read_state_dict(path)
    with pytest.raises(ModelError, match="no such weights file"):
        read_state_dict(tmp_path / "missing.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(Path(lite0_weights_path()).read_bytes()[:100_000])
    with pytest.raises(ModelError, match=r"truncated\.pth"):
        read_state_dict(truncated)


def test_folded_batch_norm_is_the_conv_then_batch_norm() -> None:
    rng = np.random.default_rng(0)
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    bn = torch.nn.BatchNorm2d(6, eps=1e-3).eval()
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.copy_(torch.from_numpy(rng.standard_normal(6).astype(np.float32)))
        bn.running_var.copy_(torch.from_numpy(rng.uniform(0.1, 2, 6).astype(np.float32)))
        x = torch.from_numpy(rng.standard_normal((2, 4, 9, 7)).astype(np.float32))
        kernel, bias = fold_batch_norm(
            conv.weight.numpy(), *(t.numpy() for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)),
            eps=1e-3,
        )  # fmt: skip
        folded = torch.nn.functional.conv2d(x, torch.from_numpy(kernel), torch.from_numpy(bias), padding=1)
        np.testing.assert_allclose(folded.numpy(), bn(conv(x)).numpy(), atol=1e-5)


def _photos() -> list[tuple[str, Image.Image]]:
    """Real photos at several sizes: whole, odd-sized shrinks, a portrait crop, one enlarged to 1024."""
    from skimage import data

    names = ("astronaut", "coffee", "chelsea", "rocket")
    photos = {n: Image.fromarray(getattr(data, n)()).convert("RGB") for n in names}
    out = list(photos.items())
    out += [(f"{name} at 173", shrink(im, 173)) for name, im in photos.items()]
    w, h = photos["coffee"].size
    out.append(("coffee portrait crop", photos["coffee"].crop((w // 5, 0, w // 5 + (2 * h) // 3, h))))
    out.append(
        ("rocket enlarged to 1024x683", photos["rocket"].resize((1024, 683), Image.Resampling.LANCZOS))
    )
    out.append(
        ("chelsea enlarged to 601x1023", photos["chelsea"].resize((601, 1023), Image.Resampling.BICUBIC))
    )
    return out


@pytest.mark.slow
def test_built_without_torch_it_is_the_torch_export(tmp_path: Path) -> None:
    built = tmp_path / "no-torch" / f"{DEFAULT_MODEL_NAME}.onnx"
    code = (
        "from pathlib import Path\n"
        "from gemsearch.default_model import ensure_default_model\n"
        f"print(ensure_default_model(Path({str(built.parent)!r})))\n"
    )
    run = run_without_torch(code)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(built)
    exported = tmp_path / "torch" / f"{DEFAULT_MODEL_NAME}.onnx"
    export_default_model(exported)

    ours, theirs = read_manifest(built), read_manifest(exported)
    assert ours.version == theirs.version
    assert (
        ours.version
        == ours.with_version(weights_sha256(load_model("efficientnet_lite0-gem").net, None)).version
    )
    assert ours == theirs.model_copy(update={"provenance": ours.provenance})
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (built, exported))
    assert [(i.name, i.type, i.shape) for i in a.get_inputs()] == [
        (i.name, i.type, i.shape) for i in b.get_inputs()
    ]
    assert [(o.name, o.shape) for o in a.get_outputs()] == [(o.name, o.shape) for o in b.get_outputs()]
    worst, sizes = 0.0, set()
    for label, image in _photos():
        x = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1)[None])
        va, vb = a.run(None, {"images": x})[0], b.run(None, {"images": x})[0]
        diff = float(np.abs(va - vb).max())
        print(f"{label:<30} {x.shape[2]:>4}x{x.shape[3]:<4} max |diff| {diff:.2e}")
        assert diff <= 1e-5, label
        worst, sizes = max(worst, diff), sizes | {x.shape[2:]}
    print(f"max |diff| over {len(sizes)} sizes: {worst:.2e}")
    assert len(sizes) >= 8 and any(h % 2 or w % 2 for h, w in sizes)
    batch = np.random.default_rng(2).integers(0, 256, (3, 3, 75, 101), dtype=np.uint8)
    np.testing.assert_allclose(
        a.run(None, {"images": batch})[0], b.run(None, {"images": batch})[0], atol=1e-5
    )


def test_the_torch_export_says_which_extra_it_needs_where_torch_is_missing(tmp_path: Path) -> None:
    code = (
        "from click.testing import CliRunner\n"
        "from gemsearch.cli import main\n"
        f"r = CliRunner().invoke(main, ['export', 'default', '--from-torch', '-o', {str(tmp_path)!r}])\n"
        "print(r.exit_code); print(r.output)\n"
    )
    run = run_without_torch(code, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] != "0"
    assert "torch is not installed; install it with: pip install 'gemsearch[train]'" in run.stdout
    assert not list(tmp_path.iterdir())


def test_weights_that_do_not_read_leave_no_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(struct.pack("<q", 7) + b"junk")
    with pytest.raises(ModelError):
        build_default_model(tmp_path / "out" / f"{DEFAULT_MODEL_NAME}.onnx", weights_file=bad)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
