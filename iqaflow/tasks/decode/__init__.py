"""Bytes -> pixels. Every failure becomes a ``DecodeFailure`` with a stable error code.

Dispatch is by content, not file name: DICOM (``DICM`` at offset 128) and NIfTI (header size and
magic, gzipped or not) go to their own modules; everything else to Pillow, with OpenCV for what
Pillow would truncate (16-bit colour, float TIFF, Radiance HDR); see ``decode_photo``.

Huge photos are bounded in memory (docs/domains.md, "Huge images"): an image of more than
``max_pixels`` is downscaled (aspect kept, area averaging) to at most that many pixels. JPEG is
decoded at 1/2, 1/4 or 1/8 size in the DCT domain (``Image.draft``), so its full-resolution raster
never exists; other formats are decoded whole and then downscaled, which is allowed only up to
``FULL_DECODE_CEILING`` pixels. Over a ceiling an image is ``TOO_LARGE``. ``Decoded.width`` and
``height`` stay the original size; ``Decoded.scale`` says how far the pixels were reduced.
"""

from __future__ import annotations

import io
import math
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from iqaflow.schemas.results import ErrorCode
from iqaflow.tasks.decode._types import Decoded, DecodeFailure, MedicalMeta, slice_indices

# The shared types are part of this package's interface: ``from iqaflow.tasks.decode import Decoded``.
__all__ = ["DEFAULT_MAX_PIXELS", "Decoded", "DecodeFailure", "MedicalMeta", "decode", "open_image", "slice_indices",
           "sniff_medical"]

_BIT_DEPTH = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "LA": 8, "CMYK": 8, "YCbCr": 8,
              "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}

# Memory bounds, in pixels (one pixel is 1-8 bytes as decoded: L, RGB, RGBA, 16-bit RGB).
# Images above this are downscaled before scoring. 36 MP (7360x4912, a 36 MP full-frame camera) keeps
# every phone and nearly every camera photo at native resolution, and bounds a decoded image to about
# 108 MB as 8-bit RGB, so a batch of 32 huge images stays near 3.5 GB. RunConfig.max_decode_pixels sets it.
DEFAULT_MAX_PIXELS = 36_000_000
# Formats Pillow can only decode whole (PNG, TIFF, WebP, GIF, BMP, progressive JPEG...): the largest frame
# decoded at all, then downscaled. Pillow's own decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS' default):
# up to ~360 MB as RGBA, ~540 MB as 16-bit RGB. Larger is TOO_LARGE.
FULL_DECODE_CEILING = 89_478_485
# Baseline JPEG decodes at 1/2..1/8 scale (only the reduced raster is allocated), so its header may claim more:
# 500 MP (a 400 MP multi-shot camera file) decodes at 1/4, 31 MP, under the default bound (1/8 is ~8 MP). It
# still caps the entropy-decoding time a file can cost (every coefficient is read, ~1-3 s at this size) and
# turns absurd headers (a 65535x65535 bomb) into TOO_LARGE at once.
JPEG_DECODE_CEILING = 500_000_000
_JPEG_SCALES = (8, 4, 2, 1)  # the DCT-domain reductions libjpeg offers (Pillow's draft)
# Modes Pillow resizes only by nearest neighbour, or whose alpha it would premultiply: converted to what
# _to_array would make of them anyway before the area-averaging resize.
_RESIZE_AS = {"1": "L", "LA": "L", "La": "L", "P": "RGB", "PA": "RGB", "RGBA": "RGB", "RGBa": "RGB"}
_PIL_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def _to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("L", "RGB"):
        return np.asarray(img)
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.uint16) if mode == "I;16" else np.asarray(img).astype(np.uint16)
    if mode == "I":
        arr = np.asarray(img, dtype=np.int64)
        return np.clip(arr, 0, 65535).astype(np.uint16)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        return ((arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)).astype(np.float32)
    if mode in ("1", "LA"):
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))  # P, RGBA, CMYK, YCbCr, LAB...


def target_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """The size an image of ``width`` x ``height`` is scored at: unchanged if it has at most ``max_pixels``
    pixels (or ``max_pixels`` is None), else the largest size of the same aspect ratio within the bound.

    Symmetric in width and height, so an image and its reference of the same displayed size get the same
    size whichever way round each is stored (EXIF orientation).
    """
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    f = math.sqrt(max_pixels / (width * height))
    w, h = max(1, int(width * f)), max(1, int(height * f))
    if w * h > max_pixels:  # only for extreme aspect ratios, where a side was clamped to 1 pixel
        w, h = (max(1, max_pixels // h), h) if w >= h else (w, max(1, max_pixels // w))
    return w, h


def _too_large(fmt: str, size: tuple[int, int] | None, pixels: int, limit: int, name: str, why: str) -> DecodeFailure:
    dims = f"{size[0]}x{size[1]} = " if size else ""
    return DecodeFailure(
        ErrorCode.TOO_LARGE,
        f"{fmt} image of {dims}{pixels / 1e6:.1f} MP is over the {limit / 1e6:.1f} MP limit {why}. Fix: downscale "
        f"or tile the file before intake (baseline JPEG decodes at reduced size, up to "
        f"{JPEG_DECODE_CEILING / 1e6:.0f} MP); the limit is iqaflow.tasks.decode.{name}, raise it in the worker "
        "processes to accept such files at the cost of memory",
    )


def open_image(data: bytes) -> Image.Image:
    """Open (header only). JPEG skips Pillow's process-wide decompression-bomb check: ``_plan`` bounds it."""
    if data[:3] == b"\xff\xd8\xff":
        try:
            return JpegImagePlugin.jpeg_factory(io.BytesIO(data))
        except Exception:
            pass  # a broken header: let Image.open report it as for any other file
    with warnings.catch_warnings():
        # Pillow warns from MAX_IMAGE_PIXELS and raises from twice that; FULL_DECODE_CEILING is checked after opening.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data))


def _plan(img: Image.Image, fmt: str, target: tuple[int, int], bounded: bool) -> tuple[float, ...] | None:
    """Check the ceilings before anything is decoded; for baseline JPEG set the DCT-domain reduction.

    Returns the region of the (reduced) raster that maps onto the whole image, for the final resize; None
    when nothing was reduced. The reduction is the largest that keeps at least ``target`` (no upsampling),
    made larger still if that would decode more than FULL_DECODE_CEILING pixels.
    """
    w, h = img.size
    if not isinstance(img, JpegImagePlugin.JpegImageFile) or img.info.get("progressive"):
        # Progressive JPEG buffers every DCT coefficient of the full image (2 bytes a sample) even when drafted.
        if w * h > FULL_DECODE_CEILING:
            why = "for progressive JPEG (decoded whole)" if fmt in ("JPEG", "MPO") else "for formats decoded whole"
            raise _too_large(fmt, (w, h), w * h, FULL_DECODE_CEILING, "FULL_DECODE_CEILING", why)
        if not isinstance(img, JpegImagePlugin.JpegImageFile) or (w, h) == target:
            return None
    if w * h > JPEG_DECODE_CEILING:
        raise _too_large(fmt, (w, h), w * h, JPEG_DECODE_CEILING, "JPEG_DECODE_CEILING", "for JPEG")
    ok = [s for s in _JPEG_SCALES if s <= min(w, h) and -(-w // s) >= target[0] and -(-h // s) >= target[1]]
    s = ok[0]
    while bounded and s < 8 and s * 2 <= min(w, h) and -(-w // s) * -(-h // s) > FULL_DECODE_CEILING:
        s *= 2
    if -(-w // s) * -(-h // s) > FULL_DECODE_CEILING:
        raise _too_large(fmt, (w, h), w * h, FULL_DECODE_CEILING, "FULL_DECODE_CEILING",
                         "for JPEG decoded at full size (max_pixels is None)" if not bounded else
                         "for JPEG even at 1/8 size")
    if s == 1:
        return None
    drafted = img.draft(None, (w // s, h // s))  # requested size: Pillow picks exactly scale s for it
    return None if drafted is None else drafted[1]


def _resize(img: Image.Image, size: tuple[int, int], box: tuple[float, ...] | None) -> Image.Image:
    """Area-averaging (box filter) resize of ``box`` (default: all) of ``img`` to ``size``."""
    if img.mode in _RESIZE_AS:
        img = img.convert(_RESIZE_AS[img.mode])
    if img.size == size:  # a JPEG reduced to exactly this size (a partial edge pixel, if any, is kept)
        return img
    return img.resize(size, Image.Resampling.BOX, box=box)


def _bound_array(decoded: Decoded, max_pixels: int | None) -> Decoded:
    """Downscale an already decoded image (OpenCV paths) to ``max_pixels``, by area averaging."""
    h, w = decoded.pixels.shape[:2]
    tw, th = target_size(w, h, max_pixels)
    if (tw, th) != (w, h):
        import cv2

        decoded.pixels = cv2.resize(decoded.pixels, (tw, th), interpolation=cv2.INTER_AREA)
        decoded.scale = tw / w
    return decoded


def _pillow_failure(exc: Exception, data: bytes) -> DecodeFailure:
    if isinstance(exc, UnidentifiedImageError):
        from iqaflow.tasks.decode import photo as decode_photo

        if decode_photo.is_heif(data):
            return DecodeFailure(ErrorCode.NOT_AN_IMAGE, "HEIC/HEIF image, and no HEIF decoder is installed. Fix: "
                                 "pip install pillow-heif")
        return DecodeFailure(ErrorCode.NOT_AN_IMAGE, "not a recognised image format")
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        found = _PIL_BOMB_PIXELS.search(str(exc))  # raised by Image.open over twice Pillow's MAX_IMAGE_PIXELS
        if found is None:
            return DecodeFailure(ErrorCode.TOO_LARGE, str(exc))
        png = data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
        size = (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) if png else None
        return _too_large("PNG" if png else "this", size, int(found.group(1)), FULL_DECODE_CEILING,
                          "FULL_DECODE_CEILING", "for formats decoded whole")
    if isinstance(exc, OSError):
        code = ErrorCode.TRUNCATED if "truncated" in str(exc).lower() else ErrorCode.DECODE_ERROR
        return DecodeFailure(code, f"{type(exc).__name__}: {exc}")
    # decoders raise many types (SyntaxError, ValueError...) on bad data
    return DecodeFailure(ErrorCode.DECODE_ERROR, f"{type(exc).__name__}: {exc}")


def decode(data: bytes, max_frames: int = 1, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode an image file's bytes (EXIF orientation applied, ICC profiles converted to sRGB).

    Volumes and multi-frame files decode to their middle slice; with ``max_frames > 1`` also to up
    to that many slices in ``frames``, for per-slice scoring.

    Photos with more than ``max_pixels`` pixels are downscaled to at most that many (``target_size``;
    None: never), JPEG at reduced size in the DCT domain; ``scale`` records the factor, ``width`` and
    ``height`` stay the original size. Medical files (DICOM, NIfTI) are never downscaled (their
    measures are per native pixel); they have their own size limits.
    """
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive pixel count or None, got {max_pixels!r}")
    if len(data) == 0:
        raise DecodeFailure(ErrorCode.EMPTY_FILE, "file is empty (0 bytes)")
    from iqaflow.tasks.decode import photo as decode_photo

    kind = sniff_medical(data)
    if kind == "dicom":
        from iqaflow.tasks.decode.dicom import decode_dicom

        return decode_dicom(data, max_frames)
    if kind == "nifti":
        from iqaflow.tasks.decode.nifti import decode_nifti

        return decode_nifti(data, max_frames)
    if decode_photo.is_radiance(data):  # OpenCV decodes it whole (its own limit: 2**30 pixels), then downscaled
        return _bound_array(decode_photo.decode_with_opencv(data, "HDR"), max_pixels)
    try:
        img = open_image(data)
        fmt = img.format or "unknown"
        mode = img.mode
        size = img.size
    except UnidentifiedImageError as exc:
        if decode_photo.is_tiff(data):  # float and other TIFF layouts Pillow cannot read
            return _bound_array(decode_photo.decode_with_opencv(data, "TIFF"), max_pixels)
        raise _pillow_failure(exc, data) from None
    except Exception as exc:
        raise _pillow_failure(exc, data) from None
    target = target_size(*size, max_pixels)
    box = _plan(img, fmt, target, max_pixels is not None)  # raises TOO_LARGE before any pixel is decoded
    try:
        img.load()
    except Exception as exc:
        raise _pillow_failure(exc, data) from None
    if decode_photo.wide_colour(img, data):  # Pillow would cut 16-bit colour to 8 bits
        orientation = decode_photo.exif_orientation(img)
        img.close()  # free Pillow's 8-bit copy before OpenCV decodes the file again
        return _bound_array(decode_photo.decode_with_opencv(data, fmt, orientation), max_pixels)
    try:
        if box is None and img.size == target:
            img = decode_photo.icc_to_srgb(img)
            img = ImageOps.exif_transpose(img) or img
            pixels = _to_array(img)
            width, height = int(pixels.shape[1]), int(pixels.shape[0])
        else:  # downscale first (stored orientation), then colour-convert and orient the small image
            orientation = decode_photo.exif_orientation(img)
            # A JPEG reduced further than target (FULL_DECODE_CEILING) is kept at its reduced size.
            out = target if img.size[0] >= target[0] and img.size[1] >= target[1] else img.size
            img = decode_photo.icc_to_srgb(_resize(img, out, box))
            pixels = decode_photo.orient(_to_array(img), orientation)
            width, height = (size[1], size[0]) if orientation in (5, 6, 7, 8) else size  # displayed size
    except Exception as exc:
        raise DecodeFailure(ErrorCode.DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None
    if pixels.ndim < 2 or pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise DecodeFailure(ErrorCode.DECODE_ERROR, f"decoded to an empty array {pixels.shape}")
    return Decoded(
        pixels=pixels,
        width=width,
        height=height,
        format=fmt,
        mode=mode,
        bit_depth=_BIT_DEPTH.get(mode, 8),
        scale=pixels.shape[1] / width,
        dpi=_dpi(img.info.get("dpi")),
    )


def _dpi(value: object) -> float | None:
    """Pillow's ``info["dpi"]`` (x, y) as one number; None when absent or not positive."""
    try:
        x = float(value[0])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return None
    return round(x, 1) if x > 0 else None  # PNG stores dots per metre: 150 dpi reads back 150.0124


_NIFTI_MAGIC = {(348, 344): (b"n+1\x00", b"ni1\x00"), (540, 4): (b"n+2\x00", b"ni2\x00")}


def sniff_medical(data: bytes) -> str | None:
    """"dicom", "nifti" or None, from the first bytes (gzipped NIfTI is decompressed just far enough)."""
    if data[128:132] == b"DICM":
        return "dicom"
    head = data[:544]
    if data[:2] == b"\x1f\x8b":
        import zlib

        try:
            head = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(data[:4096], 544)
        except zlib.error:
            return None
    for (size, at), magics in _NIFTI_MAGIC.items():
        for order in ("little", "big"):
            if int.from_bytes(head[:4], order) == size and head[at : at + 4] in magics:
                return "nifti"
    return None
