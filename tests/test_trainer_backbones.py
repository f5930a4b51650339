"""Backbone registry: dimensions without a forward pass, strict weight loading, fast-failing downloads."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from gemsearch.errors import ConfigError, ModelError, WeightsUnavailableError
from gemsearch.trainer.models.backbones import (
    backbone_spec,
    create_backbone,
    create_classifier,
    list_backbones,
)
from gemsearch.trainer.models.weights import OFFLINE_ENV, cached_path, fetch

EXPECTED_DIMS = {
    "vgg16": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
    "efficientnet_b0": 1280,
    "efficientnet_b1": 1280,
    "efficientnet_b2": 1408,
    "efficientnet_b3": 1536,
    "efficientnet_lite0": 1280,
}


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty weights cache, so nothing a developer downloaded earlier is used."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(OFFLINE_ENV, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_registry_lists_the_supported_backbones() -> None:
    assert set(list_backbones()) == set(EXPECTED_DIMS)


@pytest.mark.parametrize("name", sorted(EXPECTED_DIMS))
def test_output_dim_is_known_before_and_true_after_a_forward_pass(name: str) -> None:
    assert backbone_spec(name).output_dim == EXPECTED_DIMS[name]
    trunk = create_backbone(name).eval()
    with torch.no_grad():
        out = trunk(torch.randn(1, 3, 45, 37))
    assert out.shape[:2] == (1, EXPECTED_DIMS[name])


def test_trunks_are_cut_like_cirtorch() -> None:
    vgg = create_backbone("vgg16")
    assert isinstance(vgg, nn.Sequential) and isinstance(vgg[-1], nn.ReLU) and len(vgg) == 30
    resnet = create_backbone("resnet50")
    names = {key.split(".")[0] for key in resnet.state_dict()}
    assert names == {"0", "1", "4", "5", "6", "7"}  # conv1, bn1, (relu, maxpool), layer1..4
    assert "4.0.conv1.weight" in resnet.state_dict()


def test_unknown_backbone_and_source_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_backbone("alexnet")
    with pytest.raises(ConfigError, match="unknown weight source"):
        create_backbone("efficientnet_b0", pretrained=True, source="nowhere")


def test_local_weights_load_as_classifier_or_trunk_state(tmp_path: Path) -> None:
    full = create_classifier("efficientnet_b0")
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in full.state_dict().items()}
    torch.save(state, tmp_path / "classifier.pth")
    trunk = create_backbone("efficientnet_b0", weights=tmp_path / "classifier.pth")
    assert torch.equal(trunk.state_dict()["0.0.weight"], state["features.0.0.weight"])
    torch.save(trunk.state_dict(), tmp_path / "trunk.pth")
    again = create_backbone("efficientnet_b0", weights=tmp_path / "trunk.pth")
    reference = trunk.state_dict()
    assert all(torch.equal(value, reference[key]) for key, value in again.state_dict().items())


def test_weights_that_do_not_fit_are_model_errors(tmp_path: Path) -> None:
    state = create_classifier("efficientnet_b0").state_dict()
    del state["features.1.0.block.0.0.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ModelError, match=r"missing features\.1\.0\.block\.0\.0\.weight"):
        create_backbone("efficientnet_b0", weights=tmp_path / "partial.pth")
    with pytest.raises(ModelError, match="no such weights file"):
        create_backbone("efficientnet_b0", weights=tmp_path / "absent.pth")


def test_offline_cache_miss_says_where_to_put_the_file(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("resnet50", pretrained=True)
    assert str(torch_home / "resnet50-0676ba61.pth") in str(err.value)


def test_cached_weights_are_used_without_the_network(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(OFFLINE_ENV, "1")
    state = create_classifier("efficientnet_b0").state_dict()
    torch_home.mkdir(parents=True)
    torch.save(state, torch_home / "efficientnet_b0_rwightman-7f5810bc.pth")
    trunk = create_backbone("efficientnet_b0", pretrained=True)
    assert torch.equal(trunk.state_dict()["0.0.weight"], state["features.0.0.weight"])


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers: a download must time out, not hang."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/weights-0123abcd.pth"
    sock.close()


def test_a_silent_host_fails_fast(torch_home: Path, silent_server: str) -> None:
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError, match=r"download .* failed"):
        fetch(silent_server, what="test weights", timeout_s=0.5)
    assert time.monotonic() - start < 5
    assert not cached_path(silent_server).exists()
    assert not list(torch_home.glob(".part-*"))


def test_an_unreachable_host_fails_fast(torch_home: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError):
        fetch(f"http://127.0.0.1:{port}/x-0123abcd.pth", what="test weights", timeout_s=2)
    assert time.monotonic() - start < 5


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    payload = b"weights" * 1000
    digest = hashlib.sha256(payload).hexdigest()
    served = tmp_path / "served"
    served.mkdir()
    (served / f"good-{digest[:8]}.pth").write_bytes(payload)
    (served / "bad-00000000.pth").write_bytes(payload)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", payload
    server.shutdown()
    server.server_close()


def test_download_lands_in_the_cache_after_the_hash_check(
    torch_home: Path, file_server: tuple[str, bytes]
) -> None:
    base, payload = file_server
    digest = hashlib.sha256(payload).hexdigest()
    path = fetch(f"{base}/good-{digest[:8]}.pth", what="test weights", check_hash=True)
    assert path == torch_home / f"good-{digest[:8]}.pth" and path.read_bytes() == payload
    with pytest.raises(WeightsUnavailableError, match="sha256"):
        fetch(f"{base}/bad-00000000.pth", what="test weights", check_hash=True)
    assert not (torch_home / "bad-00000000.pth").exists()
