"""Decoding: formats, modes, EXIF orientation and every broken-file case as an error code."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from iqaflow.schemas.results import ErrorCode
from iqaflow.tasks.decode import DecodeFailure, decode


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", ErrorCode.EMPTY_FILE),
        (b"hello, I am text pretending to be a JPEG\n", ErrorCode.NOT_AN_IMAGE),
        (encode(Image.new("RGB", (64, 64), (10, 200, 30)), "JPEG")[:200], ErrorCode.TRUNCATED),
    ],
)
def test_broken_inputs_become_codes(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(DecodeFailure) as exc:
        decode(data)
    assert exc.value.code == code and exc.value.message


def test_modes_and_bit_depths() -> None:
    rgb = decode(encode(Image.new("RGB", (40, 30), (1, 2, 3)), "PNG"))
    assert (rgb.width, rgb.height, rgb.format, rgb.mode, rgb.bit_depth) == (40, 30, "PNG", "RGB", 8)
    assert rgb.pixels.shape == (30, 40, 3)
    arr16 = (np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    g16 = decode(encode(Image.fromarray(arr16), "PNG"))
    assert g16.bit_depth == 16 and g16.pixels.dtype == np.uint16
    np.testing.assert_array_equal(g16.pixels, arr16)
    pal = decode(encode(Image.new("P", (8, 8)), "GIF"))
    assert pal.pixels.shape == (8, 8, 3)
    rgba = decode(encode(Image.new("RGBA", (8, 8), (255, 0, 0, 10)), "PNG"))
    assert rgba.pixels.shape == (8, 8, 3) and rgba.mode == "RGBA"


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = decode(encode(img, "JPEG", exif=exif.tobytes()))
    assert (out.width, out.height) == (20, 60)


# Every kind of awkward input the issue lists: a documented error code, or pixels that score.
def _gif_animated() -> bytes:
    frames = [Image.new("P", (16, 12), i) for i in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _bomb() -> bytes:
    # 1-bit PNG of 20000 x 20000 = 400 MP: a few kB on disk, over twice PIL's default pixel limit.
    return encode(Image.new("1", (20000, 20000)), "PNG")


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("zero bytes", b"", ErrorCode.EMPTY_FILE),
        ("truncated jpeg", encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")[:150], ErrorCode.TRUNCATED),
        ("truncated png", encode(Image.effect_noise((64, 64), 40), "PNG")[:300], ErrorCode.TRUNCATED),
        ("corrupt jpeg body", encode(Image.new("RGB", (64, 64)), "JPEG")[:20] + b"\x00" * 600, None),
        ("text named .jpg", b"not an image at all", ErrorCode.NOT_AN_IMAGE),
        ("decompression bomb", _bomb(), ErrorCode.TOO_LARGE),
    ],
)
def test_bad_inputs_have_documented_codes(name: str, data: bytes, code: ErrorCode | None) -> None:
    with pytest.raises(DecodeFailure) as exc:
        decode(data)
    assert exc.value.code in ErrorCode and exc.value.message, name
    if code is not None:
        assert exc.value.code == code, (name, exc.value.code)


@pytest.mark.parametrize(
    ("name", "image", "fmt", "shape", "bit_depth"),
    [
        ("cmyk jpeg", Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG", (10, 20, 3), 8),
        ("palette png", Image.new("P", (20, 10), 3), "PNG", (10, 20, 3), 8),
        ("alpha png", Image.new("RGBA", (20, 10), (0, 0, 255, 0)), "PNG", (10, 20, 3), 8),
        ("la png", Image.new("LA", (20, 10), (100, 50)), "PNG", (10, 20), 8),
        ("1x1 png", Image.new("RGB", (1, 1), (1, 2, 3)), "PNG", (1, 1, 3), 8),
        ("16-bit tiff", Image.fromarray(np.full((10, 20), 40000, np.uint16)), "TIFF", (10, 20), 16),
    ],
)
def test_awkward_but_valid_inputs_decode(name: str, image: Image.Image, fmt: str, shape: tuple, bit_depth: int) -> None:
    out = decode(encode(image, fmt))
    assert out.pixels.shape == shape and out.bit_depth == bit_depth, name


def test_cmyk_colours_are_converted_and_gif_uses_first_frame() -> None:
    red = decode(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG")).pixels
    assert red[..., 0].mean() > 200 and red[..., 1].mean() < 60
    gif = decode(_gif_animated())
    assert gif.pixels.shape == (12, 16, 3) and gif.format == "GIF"


def test_tiny_and_flat_images_score_without_crashing() -> None:
    from iqaflow.models.colour import convert
    from iqaflow.models.registry import create_scorer

    for img in (np.zeros((1, 1, 3), np.uint8), np.full((2, 2), 255, np.uint8)):
        for name in ("sharpness", "exposure", "noise"):
            out = create_scorer(name).score([convert(img, create_scorer(name).info.colour)])
            assert out.shape == (1, len(create_scorer(name).info.outputs))
