"""Preprocessing against cirtorch's pipeline: sizes worked out by hand, torchvision's normalisation."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pytest
from PIL import Image

from gemsearch.cli.options import parse_crop as describe_crop
from gemsearch.errors import ConfigError, ImageError
from gemsearch.plugin.query_checks import check_box, parse_crop
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
    assert shrink(img, 300) is img and shrink(img, 300.5) is img  # a longer side exactly at the limit fits


def test_shrinking_down_to_one_pixel_works_and_below_is_refused() -> None:
    img = _image(10, 5)
    assert shrink(img, 1).size == (1, 1) and shrink(img, 1.99).size == (1, 1)
    with pytest.raises(ConfigError, match="cannot shrink a 10x5 image"):
        shrink(img, 0.99)


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


# Boxes on every edge of a 64x48 image. A box may reach past the image (that part is black, as in
# cirtorch) but must keep at least one pixel of it, after PIL rounds each edge to the nearest pixel.
W, H = 64, 48
EMPTY_BOXES = [
    (10, 10, 10, 20),  # zero width
    (10, 10, 20, 10),  # zero height
    (30, 5, 20, 9),  # negative width
    (5, 30, 9, 20),  # negative height
    (5, 5, 5.2, 9),  # under a pixel wide: PIL cuts columns 5..5
    (5, 5, 9, 5.4),  # under a pixel high
    (W, H, 0, 0),  # corners swapped
]
OUTSIDE_BOXES = [
    (W, 0, W + 16, 10),  # left edge on the right edge
    (0, H, 10, H + 12),  # top edge on the bottom edge
    (W, H, W + 1, H + 1),  # the corner pixel just outside
    (-16, 0, 0, 10),  # right edge on the left edge
    (0, -12, 10, 0),  # bottom edge on the top edge
    (70, 0, 90, 10),  # beyond the right edge
    (0, 50, 10, 60),  # beyond the bottom edge
    (0, -20, 10, -1),  # above the top edge
    (-30, 0, -5, 10),  # left of the left edge
    (63.6, 0, 70, 10),  # rounds to a left edge on the right edge
    (0, 47.5, 10, 50),  # rounds (half to even) to a top edge on the bottom edge
    (-10, -10, 0.4, 5),  # rounds to a right edge on the left edge
]
NOT_FINITE_BOXES = [
    (0, 0, float("inf"), 5),
    (float("-inf"), 0, 5, 5),
    (0, float("nan"), 5, 5),
]
# (box, the image pixels it keeps as (x1, y1, x2, y2)): the part outside the image is black
EDGE_BOXES = [
    ((0, 0, W, H), (0, 0, W, H)),  # the whole image
    ((W - 1, H - 1, W, H), (W - 1, H - 1, W, H)),  # the bottom-right pixel
    ((0, 0, 1, 1), (0, 0, 1, 1)),  # the top-left pixel
    ((W - 1, 0, W + 9, 10), (W - 1, 0, W, 10)),  # one column inside, nine beyond the right edge
    ((0, H - 1, 10, H + 5), (0, H - 1, 10, H)),  # one row inside, five beyond the bottom edge
    ((-5, -7, 1, 1), (0, 0, 1, 1)),  # one pixel inside, the rest above and left of the image
    ((-3, -3, W + 3, H + 3), (0, 0, W, H)),  # the image with a black frame
    ((4.6, 2.4, 9.5, 7.5), (5, 2, 10, 8)),  # PIL rounds each edge, halves to even
]


@pytest.mark.parametrize("box", EMPTY_BOXES)
def test_empty_crop_boxes_are_refused(box: tuple[float, float, float, float]) -> None:
    with pytest.raises(ConfigError, match="is empty"):
        crop_and_shrink(_image(W, H), box, 32)
    with pytest.raises(ConfigError, match="is empty"):
        crop_and_shrink(_image(W, H), box, None)


@pytest.mark.parametrize("box", OUTSIDE_BOXES)
def test_crop_boxes_without_a_pixel_of_the_image_are_refused(box: tuple[float, float, float, float]) -> None:
    with pytest.raises(ConfigError, match="lies outside the 64x48 image"):
        crop_and_shrink(_image(W, H), box, 32)
    with pytest.raises(ConfigError, match="lies outside"):
        prepare(_image(W, H), Preprocessing(max_side=None), box=box)


@pytest.mark.parametrize("box", NOT_FINITE_BOXES)
def test_crop_boxes_of_infinite_or_nan_numbers_are_refused(box: tuple[float, float, float, float]) -> None:
    with pytest.raises(ConfigError, match="four finite numbers"):
        crop_and_shrink(_image(W, H), box, 32)


@pytest.mark.parametrize(("box", "inside"), EDGE_BOXES)
def test_crop_boxes_on_the_edges_keep_the_pixels_inside_and_black_outside(
    box: tuple[float, float, float, float], inside: tuple[int, int, int, int]
) -> None:
    img = _image(W, H, seed=1)
    out = np.asarray(crop_and_shrink(img, box, None))
    x0, y0, x1, y1 = (round(v) for v in box)
    assert out.shape == (y1 - y0, x1 - x0, 3)
    ix0, iy0, ix1, iy1 = inside
    expected = np.zeros_like(out)
    expected[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = np.asarray(img)[iy0:iy1, ix0:ix1]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("box", EMPTY_BOXES + OUTSIDE_BOXES + NOT_FINITE_BOXES)
def test_the_query_api_refuses_every_box_preprocessing_refuses(
    box: tuple[float, float, float, float],
) -> None:
    with pytest.raises(ConfigError):
        check_box(box, (W, H))


@pytest.mark.parametrize(
    "box",
    [
        (0, 0, W, H),
        (0, 0, 1, 1),
        (W - 1, H - 1, W, H),
        (W - 1, 0, W, H),
        (0, H - 1, W, H),
        (4.6, 2.4, 9.5, 7.5),
    ],
)
def test_the_query_api_takes_boxes_touching_the_edges_from_inside(
    box: tuple[float, float, float, float],
) -> None:
    assert check_box(box, (W, H)) == tuple(float(v) for v in box)
    assert crop_and_shrink(_image(W, H), box, None).size == (
        round(box[2]) - round(box[0]),
        round(box[3]) - round(box[1]),
    )


# the query API is stricter than preprocessing: a box must lie inside the image
@pytest.mark.parametrize(
    "box",
    [
        (W - 1, 0, W + 0.1, 10),
        (0, H - 1, 10, H + 0.1),
        (-0.1, 0, 5, 5),
        (0, -0.1, 5, 5),
        (-3, -3, W + 3, H + 3),
    ],
)
def test_the_query_api_refuses_boxes_reaching_past_an_edge(box: tuple[float, float, float, float]) -> None:
    with pytest.raises(ConfigError, match="leaves the 64x48 image"):
        check_box(box, (W, H))


# "x,y,w,h" as the CLI, the HTTP API and `gemsearch describe` take it, on every edge of a 64x48 image
BAD_CROP_TEXTS = [
    "64,0,16,10",
    "0,48,10,12",
    "64,48,1,1",
    "-16,0,16,10",
    "0,-12,10,12",
    "70,0,20,10",
    "63.6,0,5,5",
]
BAD_SIZE_TEXTS = ["10,10,0,10", "10,10,10,0", "10,10,-5,10", "10,10,10,-5"]


@pytest.mark.parametrize("text", BAD_CROP_TEXTS + BAD_SIZE_TEXTS + ["nan,0,5,5", "0,0,inf,5", "1,2,3"])
def test_crop_texts_on_every_edge_are_refused_by_every_parser(text: str) -> None:
    with pytest.raises(ConfigError):
        check_box(parse_crop(text), (W, H))
    try:
        box = describe_crop(None, None, text)  # type: ignore[arg-type]
    except click.BadParameter:
        return  # refused while parsing
    # a text that is not four finite numbers with a positive size needs no image to be refused
    assert text not in [*BAD_SIZE_TEXTS, "nan,0,5,5", "0,0,inf,5", "1,2,3"]
    assert box is not None
    with pytest.raises(ConfigError):
        crop_and_shrink(_image(W, H), box, 32)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "box"), [("0,0,64,48", (0, 0, W, H)), ("63,47,1,1", (W - 1, H - 1, W, H))])
def test_crop_texts_touching_the_edges_from_inside_are_taken(text: str, box: tuple[int, ...]) -> None:
    assert parse_crop(text) == box == describe_crop(None, None, text)  # type: ignore[arg-type]
    assert check_box(parse_crop(text), (W, H)) == box


def test_a_crop_too_small_to_keep_a_pixel_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot shrink"):
        crop_and_shrink(_image(4000, 100), (0, 0, 3, 2), 1024)  # 1024 * 3 / 4000 < 1


def test_to_array_is_bit_equal_to_torchvision_totensor_normalize() -> None:
    from torchvision import transforms

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
    with pytest.raises(ValueError):
        Preprocessing(std=(0.2, -0.1, 0.2))
    assert Preprocessing(max_side=1).max_side == 1 and Preprocessing(max_side=None).max_side is None
    with pytest.raises(ValueError):
        Preprocessing(max_side=0)
    with pytest.raises(ValueError):  # it travels with a model: never changed in place
        cfg.max_side = 512  # type: ignore[misc]


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
