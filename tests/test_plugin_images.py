"""Image loading: every kind of real-world file ends as an upright RGB image or the right reason."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from gemsearch.errors import ConfigError, ImageError
from gemsearch.plugin.inputs.images import (
    IMAGE_ERROR_REASONS,
    ImageLoadConfig,
    load_image,
    load_image_bytes,
    load_image_file,
    read_image_file,
)
from gemsearch.plugin.inputs.rgb import to_rgb

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _photo(width: int = 48, height: int = 32, seed: int = 0) -> Image.Image:
    """Smooth colour gradients with a little noise: JPEG keeps them close, so colours can be compared."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    arr = np.stack([x * 255 / width, y * 255 / height, 128 + 0 * x], axis=-1) + rng.normal(
        0, 4, (height, width, 3)
    )
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height RGB pixels, with one compressed row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _reason(
    source: bytes | Path, config: ImageLoadConfig | None = None, roots: list[Path] | None = None
) -> str:
    with pytest.raises(ImageError) as info:
        load_image(source, config, roots)
    assert info.value.reason in IMAGE_ERROR_REASONS
    return info.value.reason


# --- what must load, and how ---------------------------------------------------------------------


def test_jpeg_file_gives_rgb_and_the_bytes_it_read(tmp_path: Path) -> None:
    data = _encode(_photo(), "JPEG", quality=95)
    (tmp_path / "a.jpg").write_bytes(data)
    loaded = load_image_file(tmp_path / "a.jpg", roots=[tmp_path])
    assert (loaded.image.mode, loaded.image.size, loaded.format) == ("RGB", (48, 32), "JPEG")
    assert loaded.data == data
    assert read_image_file(tmp_path / "a.jpg") == data


def test_type_comes_from_the_content_not_the_extension(tmp_path: Path) -> None:
    (tmp_path / "really_a_png.jpg").write_bytes(_encode(Image.new("RGB", (4, 4), GREEN), "PNG"))
    loaded = load_image_file(tmp_path / "really_a_png.jpg")
    assert loaded.format == "PNG" and loaded.image.getpixel((0, 0)) == GREEN
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    assert _reason(tmp_path / "text.jpg") == "unsupported_format"


def test_formats_outside_the_allowed_list_are_refused() -> None:
    bmp = _encode(Image.new("RGB", (4, 4), RED), "BMP")
    assert load_image(bmp).getpixel((1, 1)) == RED
    assert _reason(bmp, ImageLoadConfig(formats=("jpeg", "png"))) == "unsupported_format"
    with pytest.raises(ValueError, match="cannot open"):
        ImageLoadConfig(formats=("NOPE",))


def test_exif_orientation_is_applied() -> None:
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 8, 8))  # marks the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    upright = load_image(_encode(stored, "JPEG", quality=95, exif=exif))
    assert upright.size == (20, 40)
    # Rotated clockwise, the stored top-left corner is the displayed top-right one.
    assert np.allclose(upright.getpixel((17, 2)), RED, atol=12)
    assert np.allclose(upright.getpixel((2, 2)), BLUE, atol=12)


def test_cmyk_jpeg_colours_stay_close_to_the_rgb_original() -> None:
    original = _photo(seed=1)
    cmyk = original.convert("CMYK")
    data = _encode(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    loaded = np.asarray(load_image(data), dtype=np.float64)
    assert np.abs(loaded - np.asarray(original, dtype=np.float64)).mean() < 4.0


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_not_clamped(fmt: str) -> None:
    values = np.array([[65535, 32768, 0, 257]], dtype=np.uint16)
    data = _encode(Image.fromarray(values), fmt)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    rgb = np.asarray(load_image(data))
    assert rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [255, 128, 0, 1]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_big_endian_16_bit_and_32_bit_modes() -> None:
    big = Image.frombytes("I;16B", (2, 1), np.array([65535, 32768], dtype=">u2").tobytes())
    assert np.asarray(to_rgb(big))[0, :, 1].tolist() == [255, 128]
    in_range = Image.fromarray(np.array([[65535, 32768]], dtype=np.int32))  # how some readers give 16-bit
    assert (in_range.mode, np.asarray(to_rgb(in_range))[0, :, 0].tolist()) == ("I", [255, 128])
    wide = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))  # out of the 16-bit range
    assert wide.mode == "I"
    assert np.asarray(to_rgb(wide))[0, :, 0].tolist() == [0, 128, 255]  # stretched over its range
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert np.asarray(to_rgb(unit))[0, :, 0].tolist() == [0, 128, 255]


@given(st.lists(st.integers(0, 65535), min_size=1, max_size=64))
@settings(max_examples=50, deadline=None)
def test_16_bit_scaling_rounds_like_the_formula(values: list[int]) -> None:
    grey = Image.fromarray(np.array([values], dtype=np.uint16))
    got = np.asarray(to_rgb(grey))[0, :, 0].astype(int)
    want = [int(v * 255 / 65535 + 0.5) for v in values]
    assert got.tolist() == want


def test_greyscale_and_bilevel_become_grey_rgb() -> None:
    assert load_image(_encode(Image.new("L", (3, 3), 77), "PNG")).getpixel((0, 0)) == (77, 77, 77)
    assert load_image(_encode(Image.new("1", (3, 3), 1), "PNG")).getpixel((0, 0)) == WHITE


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 128))
    got = load_image(_encode(rgba, "PNG"))
    assert got.getpixel((0, 0)) == WHITE  # fully transparent black shows as white, not black
    assert all(abs(c - 127) <= 1 for c in got.getpixel((1, 0)))  # half black over white
    la = load_image(_encode(Image.new("LA", (2, 2), (0, 255)), "PNG"))
    assert la.getpixel((0, 0)) == (0, 0, 0)  # opaque stays as it is


def test_palette_with_a_transparent_entry() -> None:
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([*RED, *GREEN] + [0] * (256 * 3 - 6))
    pal.putpixel((1, 0), 1)
    for fmt in ("PNG", "GIF"):
        got = load_image(_encode(pal, fmt, transparency=1))
        assert (got.getpixel((0, 0)), got.getpixel((1, 0))) == (RED, WHITE), fmt


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animations_give_their_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, GREEN, BLUE)]
    params: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": 50}
    if fmt == "WEBP":
        params["lossless"] = True
    data = _encode(frames[0], fmt, **params)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3
    assert load_image(data).getpixel((4, 4)) == RED


# --- what must be refused, and why ---------------------------------------------------------------


def test_truncated_files_are_reported_not_half_decoded() -> None:
    for fmt in ("JPEG", "PNG", "WEBP", "GIF"):
        data = _encode(_photo(), fmt)
        assert _reason(data[: len(data) // 2]) == "truncated", fmt


def test_corrupt_data_is_reported() -> None:
    data = bytearray(_encode(_photo(), "PNG"))
    start = data.index(b"IDAT") + 8
    data[start : start + 40] = bytes(40)  # zeros into the zlib stream
    assert _reason(bytes(data)) == "corrupt"
    assert _reason(b"\xff\xd8\xff\xe0" + bytes(40)) == "corrupt"  # starts like a JPEG, no readable header


def test_empty_input(tmp_path: Path) -> None:
    (tmp_path / "zero.jpg").write_bytes(b"")
    assert _reason(tmp_path / "zero.jpg") == "empty"
    assert _reason(b"") == "empty"


def test_decompression_bombs_are_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _reason(_png_claiming(100_000, 100_000)) == "too_many_pixels"  # Pillow's own error
    assert _reason(_encode(_photo(), "PNG"), ImageLoadConfig(max_pixels=1000)) == "too_many_pixels"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's warning zone: 1000 < 1536 < 2000
    assert _reason(_encode(_photo(), "PNG"), ImageLoadConfig(max_pixels=10**9)) == "too_many_pixels"


def test_byte_cap_is_checked_before_and_after_reading(tmp_path: Path) -> None:
    data = _encode(_photo(), "PNG")
    (tmp_path / "a.png").write_bytes(data)
    small = ImageLoadConfig(max_bytes=len(data) - 1)
    assert _reason(tmp_path / "a.png", small) == "too_many_bytes"
    assert _reason(data, small) == "too_many_bytes"
    assert load_image(tmp_path / "a.png", ImageLoadConfig(max_bytes=len(data))).size == (48, 32)


def test_only_regular_files_inside_the_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    png = _encode(Image.new("RGB", (2, 2), RED), "PNG")
    (outside / "secret.png").write_bytes(png)
    (root / "real.png").write_bytes(png)
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "inside_link.png").symlink_to(root / "real.png")
    (root / "loop.png").symlink_to(root / "loop.png")
    os.mkfifo(root / "fifo.png")
    assert _reason(root / "escape.png", roots=[root]) == "outside_root"
    assert _reason(root / ".." / "outside" / "secret.png", roots=[root]) == "outside_root"
    assert load_image(root / "inside_link.png", roots=[root]).getpixel((0, 0)) == RED
    assert load_image(root / "escape.png").getpixel((0, 0)) == RED  # no roots given: no root check
    assert _reason(root / "fifo.png", roots=[root]) == "not_regular_file"  # and it did not block
    assert _reason(root, roots=[tmp_path]) == "not_regular_file"
    assert _reason(root / "missing.png") == "not_found"
    assert _reason(root / "loop.png") == "unreadable"
    assert _reason(Path("/dev/null")) == "not_regular_file"


def test_truncated_loading_switched_on_elsewhere_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ConfigError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(_encode(_photo(), "PNG"))


# --- hostile input: an RGB image or an ImageError, nothing else, never a hang --------------------

_FUZZ_CONFIG = ImageLoadConfig(max_pixels=1_000_000)
_SEEDS = [
    _encode(_photo(24, 16), "JPEG", quality=80),
    _encode(_photo(24, 16), "PNG"),
    _encode(_photo(24, 16).convert("P"), "GIF"),
    _encode(_photo(24, 16), "WEBP"),
    _encode(_photo(24, 16), "TIFF"),
]


def _loads_or_refuses(data: bytes) -> None:
    try:
        image = load_image_bytes(data, _FUZZ_CONFIG)
    except ImageError as exc:
        assert exc.reason in IMAGE_ERROR_REASONS
    else:
        assert image.mode == "RGB" and image.width > 0 and image.height > 0


_MAGIC = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x01\x00\x00WEBPVP8 ",
    b"II*\x00",
    b"BM",
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF plugin warns about damaged tags
@given(st.one_of(st.binary(max_size=2048), st.tuples(st.sampled_from(_MAGIC), st.binary()).map(b"".join)))
@settings(max_examples=200, deadline=2000)
def test_random_bytes_never_crash_the_loader(data: bytes) -> None:
    _loads_or_refuses(data)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[pos:]
            if not data:
                break
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@pytest.mark.filterwarnings("ignore::UserWarning")
@given(_mutated())
@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
def test_mutated_images_never_crash_the_loader(data: bytes) -> None:
    _loads_or_refuses(data)
