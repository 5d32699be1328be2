"""Generated JPEGs covering what the tensor decode path must take and what it must leave to the CPU path."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

# name -> whether jpeg_header should accept it for the tensor path
EXPECTED_TAKEN = {
    "plain_420.jpg": True, "plain_444.jpg": True, "gray.jpg": True, "exif_orient1.jpg": True, "srgb_icc.jpg": True,
    "exif_orient6.jpg": False, "xmp_orient6.jpg": False, "xyz_icc.jpg": False, "cmyk.jpg": False,
    "progressive.jpg": False, "truncated.jpg": False, "empty.jpg": False, "notes.jpg": False,
    "corrupt_scan.jpg": True,  # complete markers, broken entropy data: the decoder rejects it, the CPU path decides
}
BROKEN_ENTROPY = {"corrupt_scan.jpg"}  # headers the tensor path takes, data libjpeg rejects


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour waves plus noise: chroma detail, so decoder differences would show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([np.sin(9 * x + c + seed) * np.cos(6 * y - c) for c in range(3)], axis=-1) * 0.3 + 0.5
    return (np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1) * 255).astype(np.uint8)


def _jpeg(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def _with_app1(data: bytes, payload: bytes) -> bytes:
    """Insert an APP1 segment right after SOI."""
    return data[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def make_jpegs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(texture(200, 300, 0))
    orient6, orient1 = Image.Exif(), Image.Exif()
    orient6[0x0112], orient1[0x0112] = 6, 1
    xmp = b'http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xyz = ImageCms.ImageCmsProfile(ImageCms.createProfile("XYZ")).tobytes()
    plain = _jpeg(Image.fromarray(texture(160, 160, 5)), quality=85)
    scan = len(plain) // 2
    files = {
        "plain_420.jpg": _jpeg(rgb, quality=90),
        "plain_444.jpg": _jpeg(Image.fromarray(texture(257, 191, 1)), quality=80, subsampling=0),
        "gray.jpg": _jpeg(Image.fromarray(texture(180, 240, 2)).convert("L"), quality=90),
        "exif_orient1.jpg": _jpeg(Image.fromarray(texture(160, 240, 3)), exif=orient1.tobytes()),
        "srgb_icc.jpg": _jpeg(Image.fromarray(texture(150, 170, 4)), icc_profile=srgb),
        "exif_orient6.jpg": _jpeg(Image.fromarray(texture(160, 240, 6)), exif=orient6.tobytes()),
        "xmp_orient6.jpg": _with_app1(_jpeg(Image.fromarray(texture(120, 200, 7))), xmp),
        "xyz_icc.jpg": _jpeg(Image.fromarray(texture(150, 150, 8)), icc_profile=xyz),
        "cmyk.jpg": _jpeg(Image.fromarray(texture(150, 150, 9)).convert("CMYK")),
        "progressive.jpg": _jpeg(Image.fromarray(texture(150, 210, 10)), progressive=True),
        "truncated.jpg": plain[: len(plain) // 2],
        "empty.jpg": b"",
        "notes.jpg": b"not an image at all",
        "corrupt_scan.jpg": plain[:scan] + bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8))
        + plain[scan + 300 :],
    }
    assert set(files) == set(EXPECTED_TAKEN)
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return sorted(paths)
