"""Preprocessing against cirtorch's pipeline: sizes worked out by hand, torchvision's normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gemsearch.errors import ConfigError, ImageError
from gemsearch.preprocess import Preprocessing, crop_and_shrink, load_rgb, prepare, shrink, to_array


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


# (image size, max side, expected size). PIL's thumbnail floors the long side to max_side and picks
# the short side among floor/ceil of the exact value, whichever keeps the aspect closer:
# 1001x667 -> 500 x 333.17: 500/333 = 1.5015 is closer to 1.5007 than 500/334 = 1.4970 -> 333;
# 1000x337 -> 100 x 33.7: 100/34 = 2.941 is closer to 2.967 than 100/33 = 3.030 -> 34 (not floor).
@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((1001, 667), 500, (500, 333)),
        ((667, 1001), 500, (333, 500)),
        ((1000, 337), 100, (100, 34)),
        ((1001, 667), 500.9, (500, 333)),  # a fractional side is floored
        ((333, 211), 1024, (333, 211)),  # never enlarged
    ],
)
def test_shrink_sizes_match_pils_thumbnail_rule(
    size: tuple[int, int], max_side: float, expected: tuple[int, int]
) -> None:
    assert shrink(_image(*size), max_side).size == expected


def test_shrink_uses_lanczos_and_leaves_the_input_alone() -> None:
    img = _image(1001, 667)
    before = np.asarray(img).copy()
    out = shrink(img, 500)
    reference = img.resize((500, 333), Image.Resampling.LANCZOS, reducing_gap=2.0)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(reference))
    np.testing.assert_array_equal(np.asarray(img), before)


def test_small_image_is_returned_unchanged() -> None:
    img = _image(300, 200)
    assert shrink(img, 1024) is img


# Crop from the full 1001x667 image, then shrink to max_side * crop_long / full_long:
# box 333x211 -> target floor(500 * 333 / 1001) = floor(166.33) = 166, short side 211 * 166 / 333 =
# 105.18 -> 105 (166/105 = 1.5810 is closer to 333/211 = 1.5782 than 166/106 = 1.5660).
# box 201x601 -> target floor(500 * 601 / 1001) = floor(300.2) = 300, short 100.33 -> 100.
# box 21x11 -> target floor(500 * 21 / 1001) = floor(10.49) = 10, short 5.24 -> 5.
@pytest.mark.parametrize(
    ("box", "expected"),
    [((101, 53, 434, 264), (166, 105)), ((0, 0, 201, 601), (100, 300)), ((5, 7, 26, 18), (10, 5))],
)
def test_query_crop_keeps_the_scale_of_the_full_image(
    box: tuple[int, int, int, int], expected: tuple[int, int]
) -> None:
    img = _image(1001, 667)
    out = crop_and_shrink(img, box, 500)
    assert out.size == expected
    # the same pixels as cutting first and shrinking with the full image's factor
    crop = img.crop(box)
    if crop.size != expected:
        ref = crop.resize(expected, Image.Resampling.LANCZOS, reducing_gap=2.0)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(ref))


def test_query_crop_without_max_side_is_the_plain_crop() -> None:
    img = _image(64, 48)
    out = crop_and_shrink(img, (3, 4, 20, 30), None)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img)[4:30, 3:20])


@pytest.mark.parametrize("box", [(10, 10, 10, 20), (30, 5, 20, 9), (70, 0, 90, 10), (0, -20, 10, -1)])
def test_bad_crop_boxes_are_config_errors(box: tuple[int, int, int, int]) -> None:
    with pytest.raises(ConfigError):
        crop_and_shrink(_image(64, 48), box, 32)


def test_a_crop_too_small_to_keep_a_pixel_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot shrink"):
        crop_and_shrink(_image(4000, 100), (0, 0, 3, 2), 1024)  # 1024 * 3 / 4000 < 1


def test_to_array_is_bit_equal_to_torchvision_totensor_normalize() -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    img = _image(37, 23, seed=3)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])(img).numpy()
    out = to_array(img, mean, std)
    assert out.dtype == np.float32 and out.shape == (3, 23, 37)
    np.testing.assert_array_equal(out, ref)


def test_to_array_formula_by_hand() -> None:
    img = Image.new("RGB", (2, 1), (255, 0, 128))
    out = to_array(img, (0.5, 0.25, 0.125), (0.5, 0.25, 2.0))
    expected = [(1 - 0.5) / 0.5, (0 - 0.25) / 0.25, (128 / 255 - 0.125) / 2.0]
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)


def test_prepare_applies_the_configured_side_and_statistics() -> None:
    cfg = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), max_side=50)
    img = _image(101, 67)
    out = prepare(img, cfg)
    assert out.shape == (3, 33, 50)  # 50 / (101/67) = 33.17 -> 33
    np.testing.assert_array_equal(out, to_array(shrink(img, 50), cfg.mean, cfg.std))
    assert prepare(img, cfg, box=(0, 0, 50, 40)).shape == (3, 19, 24)  # floor(50*50/101) = 24


def test_preprocessing_defaults_are_imagenet_and_1024() -> None:
    cfg = Preprocessing()
    assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    assert cfg.max_side == 1024
    with pytest.raises(ValueError):
        Preprocessing(std=(0.2, 0.0, 0.2))


def test_unloaded_jpeg_is_not_draft_decoded(tmp_path: Path) -> None:
    """PIL's thumbnail would decode a still-lazy JPEG at 1/2 scale (draft); cirtorch never does."""
    path = tmp_path / "big.jpg"
    _image(1600, 1200).save(path, quality=90)
    with Image.open(path) as lazy:
        out = prepare(lazy, Preprocessing(max_side=300))
    np.testing.assert_array_equal(out, prepare(load_rgb(path), Preprocessing(max_side=300)))


def test_load_rgb_converts_and_reports_typed_errors(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    Image.new("L", (5, 4), 77).save(grey)
    img = load_rgb(grey)
    assert img.mode == "RGB" and img.size == (5, 4) and img.getpixel((0, 0)) == (77, 77, 77)
    with pytest.raises(ImageError) as missing:
        load_rgb(tmp_path / "nope.png")
    assert missing.value.reason == "not_found"
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(ImageError):
        load_rgb(junk)
