"""Photo-archive formats beyond Pillow's defaults: ICC -> sRGB, 16-bit colour, float/HDR, HEIC.

* ICC: an embedded profile (Adobe RGB, Display P3, a press CMYK profile...) is converted to sRGB
  with LittleCMS (Pillow's ImageCms, perceptual intent), so scores compare like with like. An sRGB
  profile is left alone; a broken profile leaves the pixels as stored rather than failing the image.
* 16-bit RGB(A) PNG and TIFF: Pillow reads them as 8-bit RGB, so OpenCV decodes them unchanged
  (``IMREAD_UNCHANGED``) to uint16; their EXIF orientation is applied here.
* Float TIFF and Radiance ``.hdr``: linear values in [0, 1] are kept; larger ranges are tone mapped
  (Reinhard's global operator, key 0.18) and sRGB-encoded, so "HDR-ish" inputs land in [0, 1].
* HEIC/HEIF: decoded when ``pillow-heif`` (or ``pi-heif``) is installed; it is not a dependency.
"""

from __future__ import annotations

import io
import logging

import cv2
import numpy as np
from PIL import Image, ImageCms

log = logging.getLogger(__name__)

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_SRGB = ImageCms.createProfile("sRGB")
_ICC_MODES = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB"}
_SRGB_NAMES = {"srgb", "srgb built-in", "srgb profile"}  # and "sRGB IEC61966-2.1" and its variants
# (flip vertically?, rotate k times 90 degrees counter-clockwise, transpose first?) per EXIF orientation.
_ORIENT_OPS: dict[int, tuple[bool, int, bool]] = {
    2: (False, 0, True), 3: (False, 2, False), 4: (True, 0, False), 5: (False, 1, True),
    6: (False, 3, False), 7: (False, 3, True), 8: (False, 1, False),
}
REINHARD_KEY = 0.18


def _register_heif() -> bool:
    for module in ("pillow_heif", "pi_heif"):
        try:
            opener = __import__(module, fromlist=["register_heif_opener"]).register_heif_opener
        except Exception:
            continue
        opener()
        return True
    return False


HEIF_AVAILABLE = _register_heif()


def is_tiff(data: bytes) -> bool:
    return data[:4] in _TIFF_MAGIC


def is_heif(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1",
                                                   b"msf1")


def is_radiance(data: bytes) -> bool:
    return data.startswith((b"#?RADIANCE", b"#?RGBE"))


def wide_colour(img: Image.Image, data: bytes) -> bool:
    """True for colour images with more than 8 bits a sample, which Pillow would truncate."""
    if img.format == "PNG":
        # IHDR: bit depth at byte 24, colour type at 25 (2 = RGB, 6 = RGBA).
        return len(data) > 25 and data[24] == 16 and data[25] in (2, 6)
    if img.format == "TIFF":
        bits = getattr(img, "tag_v2", {}).get(258)
        return isinstance(bits, tuple) and len(bits) >= 3 and max(bits) > 8
    return False


def exif_orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:
        return 1


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2-8) to an array as ``ImageOps.exif_transpose`` does to an image."""
    if orientation not in _ORIENT_OPS:
        return pixels
    flip, k, transpose = _ORIENT_OPS[orientation]
    if transpose:
        pixels = np.fliplr(pixels)
    if flip:
        pixels = np.flipud(pixels)
    return np.ascontiguousarray(np.rot90(pixels, k))


def icc_to_srgb(img: Image.Image) -> Image.Image:
    """``img`` converted from its embedded ICC profile to sRGB; unchanged without one (or if it is sRGB)."""
    icc = img.info.get("icc_profile")
    out_mode = _ICC_MODES.get(img.mode)
    if not icc or out_mode is None:
        return img
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        name = ImageCms.getProfileDescription(profile).strip().lower()
        if img.mode != "CMYK" and (name in _SRGB_NAMES or name.startswith("srgb iec61966")):
            return img
        converted = ImageCms.profileToProfile(img, profile, _SRGB, outputMode=out_mode)
    except Exception as exc:  # a broken profile: score the stored values rather than fail the image
        log.debug("ICC conversion skipped: %s", exc)
        return img
    return converted if converted is not None else img


def tone_map(rgb: np.ndarray) -> np.ndarray:
    """Float linear RGB -> display values in [0, 1]: unchanged if already there, else Reinhard + sRGB."""
    rgb = np.nan_to_num(rgb.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(rgb.min(initial=0.0)), float(rgb.max(initial=0.0))
    if lo >= 0.0 and hi <= 1.0:
        return rgb
    rgb = np.maximum(rgb, 0.0)
    lum = rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32) if rgb.ndim == 3 else rgb
    log_mean = float(np.exp(np.mean(np.log(lum + 1e-6))))
    scaled = lum * (REINHARD_KEY / log_mean)
    ratio = (scaled / (1.0 + scaled)) / np.maximum(lum, 1e-6)
    out = np.clip(rgb * (ratio[..., None] if rgb.ndim == 3 else ratio), 0.0, 1.0)
    return np.where(out <= 0.0031308, 12.92 * out, 1.055 * np.power(out, 1 / 2.4) - 0.055).astype(np.float32)


def decode_with_opencv(data: bytes, fmt: str, orientation: int = 1):  # noqa: ANN201 (Decoded; import cycle)
    """Decode with OpenCV, keeping 16-bit and float samples; RGB order, EXIF ``orientation`` applied."""
    from iqaflow.schemas.results import ErrorCode
    from iqaflow.tasks.decode._types import Decoded, DecodeFailure

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise DecodeFailure(ErrorCode.DECODE_ERROR, f"{fmt}: OpenCV could not decode this file")
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    elif arr.ndim == 3:
        arr = arr[:, :, 0]
    bits = arr.dtype.itemsize * 8
    if np.issubdtype(arr.dtype, np.floating):
        arr = tone_map(arr[:, :, :3] if arr.ndim == 3 else arr)
        mode = "RGBF" if arr.ndim == 3 else "F"
    else:
        mode = ("RGBA" if arr.shape[2] == 4 else "RGB") if arr.ndim == 3 else "L"
        mode += f";{bits}" if bits > 8 else ""
    arr = orient(arr, orientation)
    return Decoded(arr, int(arr.shape[1]), int(arr.shape[0]), fmt, mode, bits)
