"""Photo archives: ICC profiles converted to sRGB, 16-bit colour kept, float/HDR tone mapped, EXIF
orientation on the OpenCV path, the common formats, and HEIC when a decoder is installed.

The ICC check is independent of LittleCMS's arithmetic: the embedded profile is sRGB with its red and
green primaries swapped, so converting to sRGB must swap the R and G channels (to +-2 levels of 255).
"""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from iqaflow.schemas.results import ErrorCode
from iqaflow.tasks.decode import DecodeFailure, decode
from iqaflow.tasks.decode.photo import HEIF_AVAILABLE, orient, tone_map

# sRGB primaries adapted to D50 (ICC's connection space), and D50 itself.
_RED, _GREEN, _BLUE = (0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)
_D50 = (0.9642, 1.0, 0.8249)


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _xyz(xyz: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz)


def _srgb_curve() -> bytes:
    x = np.linspace(0, 1, 1024)
    y = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    return b"curv\0\0\0\0" + struct.pack(">I", 1024) + (np.round(y * 65535).astype(">u2")).tobytes()


def swapped_profile() -> bytes:
    """A v2 matrix/TRC RGB display profile: sRGB with the red and green primaries exchanged."""
    desc_text = b"sRGB with R and G swapped\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(desc_text)) + desc_text + b"\0" * 12 + b"\0" * 67
    tags = [(b"desc", desc), (b"wtpt", _xyz(_D50)), (b"rXYZ", _xyz(_GREEN)), (b"gXYZ", _xyz(_RED)),
            (b"bXYZ", _xyz(_BLUE)), (b"rTRC", _srgb_curve()), (b"gTRC", _srgb_curve()), (b"bTRC", _srgb_curve())]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 24 + struct.pack(">I", 0) + b"".join(_s15(v) for v in _D50))
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + body


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_icc_profile_is_converted_to_srgb() -> None:
    rgb = np.zeros((8, 24, 3), np.uint8)
    rgb[:, :8] = (200, 40, 10)
    rgb[:, 8:16] = (30, 180, 90)
    rgb[:, 16:] = (120, 120, 120)
    img = Image.fromarray(rgb)
    plain = decode(_encode(img, "PNG")).pixels
    np.testing.assert_array_equal(plain, rgb)
    for fmt in ("PNG", "TIFF", "JPEG"):
        out = decode(_encode(img, fmt, icc_profile=swapped_profile(),
                             **({"quality": 100, "subsampling": 0} if fmt == "JPEG" else {})))
        tol = 2 if fmt != "JPEG" else 6
        np.testing.assert_allclose(out.pixels[:, :, 0].astype(int), rgb[:, :, 1], atol=tol)
        np.testing.assert_allclose(out.pixels[:, :, 1].astype(int), rgb[:, :, 0], atol=tol)
        np.testing.assert_allclose(out.pixels[:, :, 2].astype(int), rgb[:, :, 2], atol=tol)


def test_broken_icc_profile_leaves_pixels_as_stored() -> None:
    rgb = np.full((4, 4, 3), (10, 20, 30), np.uint8)
    out = decode(_encode(Image.fromarray(rgb), "PNG", icc_profile=b"not a profile" * 20))
    np.testing.assert_array_equal(out.pixels, rgb)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
def test_16_bit_colour_is_kept(ext: str) -> None:
    arr = (np.random.default_rng(0).random((20, 30, 3)) * 65535).astype(np.uint16)
    ok, buf = cv2.imencode(ext, arr[:, :, ::-1])
    out = decode(buf.tobytes())
    assert out.pixels.dtype == np.uint16 and out.bit_depth == 16 and out.mode == "RGB;16"
    np.testing.assert_array_equal(out.pixels, arr)


def test_float_tiff_and_radiance_hdr() -> None:
    unit = np.random.default_rng(1).random((16, 16, 3)).astype(np.float32)
    ok, buf = cv2.imencode(".tiff", unit[:, :, ::-1])
    out = decode(buf.tobytes())
    assert out.format == "TIFF" and out.pixels.dtype == np.float32
    np.testing.assert_allclose(out.pixels, unit, atol=1e-6)
    radiance = np.concatenate([unit, unit * 40], axis=1)  # highlights 40x brighter than a unit white
    ok, buf = cv2.imencode(".hdr", radiance[:, :, ::-1])
    hdr = decode(buf.tobytes())
    assert hdr.format == "HDR" and 0.0 <= hdr.pixels.min() and hdr.pixels.max() <= 1.0
    lum = hdr.pixels.mean(axis=2)
    assert lum[:, 16:].mean() > lum[:, :16].mean()  # tone mapping keeps the order of brightness
    assert np.array_equal(tone_map(unit), unit)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_on_arrays_matches_pillow(orientation: int) -> None:
    arr = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = orientation
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(_encode(img, "PNG", exif=exif.tobytes())))))
    np.testing.assert_array_equal(orient(arr, orientation), expected)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_common_formats(fmt: str) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    out = decode(_encode(Image.fromarray(rgb), fmt, **({"lossless": True} if fmt == "WEBP" else {})))
    assert (out.width, out.height, out.format) == (32, 24, fmt)
    if fmt != "JPEG":
        np.testing.assert_array_equal(out.pixels, rgb)


def test_heic_needs_a_decoder() -> None:
    if HEIF_AVAILABLE:
        import pillow_heif  # noqa: F401  (the installed opener)

        rgb = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        out = decode(_encode(Image.fromarray(rgb), "HEIF", quality=-1))
        assert (out.width, out.height) == (16, 16)
        return
    fake = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 64
    with pytest.raises(DecodeFailure) as exc:
        decode(fake)
    assert exc.value.code == ErrorCode.NOT_AN_IMAGE and "pillow-heif" in exc.value.message
