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
