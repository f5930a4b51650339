"""``gemsearch export``: onnx, inspect, check and default, through the real command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from gemsearch.cli import main
from gemsearch.trainer.models.checkpoint import save_checkpoint
from gemsearch.trainer.models.loading import load_model
from gemsearch.trainer.models.whitening import Whitening

SUBCOMMANDS = ("onnx", "inspect", "check", "default")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["export", *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def default_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # the session's model folder: the default model is exported once per test session
    code, out = run("default", "-o", str(tmp_path_factory.getbasetemp() / "models"))
    assert code == 0, out
    return Path(out.strip().splitlines()[-1])


def test_the_command_module_does_not_load_torch_or_onnx() -> None:
    code = (
        "import sys, gemsearch.cli.export, gemsearch.exporters\n"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_subcommand_has_help_text() -> None:
    code, out = run("--help")
    assert code == 0 and all(name in out for name in SUBCOMMANDS)
    for name in SUBCOMMANDS:
        code, out = run(name, "--help")
        assert code == 0, out
        command = main.get_command(None, "export").commands[name]  # type: ignore[arg-type, attr-defined]
        assert command.help and " ".join(command.help.split()[:6]) in " ".join(out.split())


@pytest.mark.slow
def test_inspect_prints_manifest_inputs_outputs_and_size(default_model: Path) -> None:
    code, out = run("inspect", str(default_model))
    assert code == 0, out
    assert "model lite0-gem" in out and "input images: tensor(uint8)" in out
    assert "output descriptors: tensor(float)" in out and "1280 dims" in out and "MiB" in out
    code, out = run("inspect", str(default_model), "--json")
    info = json.loads(out)
    assert info["manifest"]["name"] == "lite0-gem" and info["bytes"] == default_model.stat().st_size
    assert info["inputs"][0]["shape"][1] == 3 and info["outputs"][0]["name"] == "descriptors"


def test_inspect_takes_a_cached_model_name_as_model_does(
    default_model: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GEMSEARCH_CACHE", str(default_model.parent.parent))
    monkeypatch.chdir(tmp_path)  # no lite0-gem file here: the name is looked up in the cache
    code, out = run("inspect", default_model.stem, "--json")
    assert code == 0, out
    assert json.loads(out)["file"] == str(default_model)
    code, out = run("inspect", "no-such-model")
    assert code == 1 and "no such model file" in out and len(out.strip().splitlines()) == 1


@pytest.mark.slow
def test_check_passes_against_its_model_and_fails_against_another(default_model: Path) -> None:
    code, out = run("check", str(default_model), "--against", "efficientnet_lite0-gem")
    assert code == 0, out
    assert "PASS" in out and "CPUExecutionProvider: max abs diff" in out and "min cosine" in out
    code, out = run("check", str(default_model), "--against", "efficientnet_lite0-spoc", "--json",
                    "--provider", "CPUExecutionProvider")  # fmt: skip
    assert code == 1 and "FAIL" in out
    report = json.loads(out[: out.rindex("}") + 1])
    assert report["providers"][0]["cases"][0]["max_abs_diff"] > 1e-4
    code, out = run(
        "check", str(default_model), "--against", "efficientnet_lite0-gem", "--provider", "NoSuchProvider"
    )
    assert code != 0 and "no NoSuchProvider" in out


@pytest.mark.slow
def test_export_onnx_with_every_option(tmp_path: Path) -> None:
    model = load_model("efficientnet_lite0-gem")
    rng = np.random.default_rng(0)
    lw = Whitening(kind="learned", m=rng.normal(0, 0.02, 1280), P=rng.standard_normal((1280, 1280)))
    model.whitening = {"ms": lw.model_copy(update={"learned_from": "synthetic"})}
    checkpoint = save_checkpoint(model, tmp_path / "lw.ckpt")
    results = [{"dataset": "roxford5k", "protocol": "medium", "mean_ap": 0.5, "mp_at": {"10": 0.6}}]
    (tmp_path / "eval.json").write_text(json.dumps(results))
    out_file = tmp_path / "Tuned.onnx"
    code, out = run(
        "onnx", str(checkpoint), "-o", str(out_file), "--multiscale", "--dims", "64", "--input", "float32",
        "--fp16", "--max-side", "512", "--training-data", "sfm120k", "--epochs", "3",
        "--evaluation", str(tmp_path / "eval.json"),
    )  # fmt: skip
    assert code == 0, out
    code, out = run("inspect", str(out_file), "--json")
    manifest = json.loads(out)["manifest"]
    assert manifest["name"] == "tuned" and manifest["output_dim"] == 64 and manifest["precision"] == "fp16"
    assert manifest["input"]["dtype"] == "float32" and manifest["input"]["max_side"] == 512
    assert manifest["multiscale"]["in_graph"] and len(manifest["multiscale"]["scales"]) == 3
    assert manifest["whitening"]["learned_from"] == "synthetic"
    assert manifest["provenance"]["training_data"] == "sfm120k" and manifest["provenance"]["epochs"] == 3
    assert manifest["evaluation"][0]["mean_ap"] == 0.5
    session = ort.InferenceSession(str(out_file), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((2, 3, 61, 83)).astype(np.float32)
    vecs = session.run(None, {"images": x})[0]  # parity of such graphs: test_export.py, test_export_graph.py
    assert vecs.shape == (2, 64) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_unfit_requests_and_files_give_readable_errors(tmp_path: Path) -> None:
    code, out = run("onnx", "efficientnet_lite0-gem", "-o", str(tmp_path / "x.onnx"), "--dims", "8")
    assert code != 0 and "dims reduces a learned whitening" in out and "Traceback" not in out
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "plain.onnx")
    code, out = run("inspect", str(tmp_path / "plain.onnx"))
    assert code != 0 and "no gemsearch manifest" in out
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    code, out = run("inspect", str(tmp_path / "junk.onnx"))
    assert code != 0 and "not a loadable ONNX model" in out and "Traceback" not in out
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_fp16_export_with_check_reports_its_deviation(tmp_path: Path) -> None:
    out_file = tmp_path / "lite0-fp16.onnx"
    code, out = run(
        "onnx", "efficientnet_lite0-gem", "-o", str(out_file), "--fp16", "--max-side", "128", "--check"
    )
    assert code == 0, out
    summary = [line for line in out.splitlines() if line.startswith("PASS")]
    assert len(summary) == 1 and "min cosine" in summary[0] and "(required 0.999)" in summary[0]
    assert json.loads(out[: out.index("\n}") + 2])["precision"] == "fp16"
