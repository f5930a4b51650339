"""The model manifest validates what the runtime relies on and survives a JSON round trip."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from gemsearch.manifest import ModelManifest, PoolingSpec, WhiteningSpec

VERSION = hashlib.sha256(b"weights").hexdigest()


def _manifest(**overrides: object) -> ModelManifest:
    fields: dict[str, object] = {
        "name": "lite0-gem",
        "version": VERSION,
        "backbone": "efficientnet_lite0",
        "pooling": PoolingSpec(kind="gem", p=3.0),
        "output_dim": 320,
    }
    fields.update(overrides)
    return ModelManifest.model_validate(fields)


def test_json_round_trip_keeps_everything() -> None:
    m = _manifest(whitening=WhiteningSpec(kind="learned", input_dim=320, output_dim=128), output_dim=128)
    back = ModelManifest.from_json(m.to_json())
    assert back == m
    assert back.input.normalize_in_graph and back.input.mean == (0.485, 0.456, 0.406)


def test_index_and_alias_names() -> None:
    m = _manifest()
    assert m.index_name() == f"gemsearch-lite0-gem-{VERSION[:8]}"
    assert m.alias_name("img") == "img-lite0-gem"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "Bad Name"}, "lowercase"),
        ({"version": "abc"}, "sha256"),
        ({"pooling": {"kind": "mac", "p": 3.0}}, "pooling p"),
        ({"whitening": {"kind": "pca", "input_dim": 320, "output_dim": 64}}, "whitening output_dim"),
        ({"multiscale": {"scales": [1.0, -0.5]}}, "positive"),
        ({"opset": 13}, "greater than or equal to 17"),
    ],
)
def test_invalid_manifests_are_rejected_with_a_reason(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _manifest(**overrides)
