"""Bytes -> pixels. Every failure becomes a ``DecodeFailure`` with a stable error code.

Dispatch is by content, not file name: DICOM (``DICM`` at offset 128) and NIfTI (header size and
magic, gzipped or not) go to their own modules; everything else to Pillow, with OpenCV for what
Pillow would truncate (16-bit colour, float TIFF, Radiance HDR); see ``decode_photo``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from iqaflow.schemas.results import ErrorCode

_BIT_DEPTH = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "LA": 8, "CMYK": 8, "YCbCr": 8,
              "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


@dataclass(frozen=True)
class MedicalMeta:
    """What a medical file tells about itself. Only ``modality`` and ``photometric`` are ever written out."""

    modality: str | None = None
    photometric: str | None = None
    # Never written: the keyed image id is derived from it (iqaflow.tasks.phi).
    instance_uid: str | None = field(default=None, repr=False)
    # Never written: patient name parts and ID, kept only to check paths and scrub messages.
    phi_tokens: tuple[str, ...] = field(default=(), repr=False)


@dataclass
class Decoded:
    pixels: np.ndarray  # (H, W) or (H, W, 3); uint8, uint16 or float32 (the middle slice of a volume)
    width: int
    height: int
    format: str
    mode: str
    bit_depth: int
    frames: np.ndarray | None = None  # (K, H, W[, 3]) slices chosen for per-slice scoring, or None
    n_frames: int = 1  # frames (DICOM) or slices (NIfTI) in the file
    medical: MedicalMeta | None = None


def slice_indices(n: int, k: int) -> list[int]:
    """``k`` slice indices spread evenly over the central 80% of ``n`` (the edges of a volume are mostly air)."""
    if k <= 1 or n <= 1:
        return [n // 2]
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0.1 * (n - 1), 0.9 * (n - 1), k)})


class DecodeFailure(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


def decode(data: bytes, max_frames: int = 1) -> Decoded:
    """Decode an image file's bytes (EXIF orientation applied, ICC profiles converted to sRGB).

    Volumes and multi-frame files decode to their middle slice; with ``max_frames > 1`` also to up
    to that many slices in ``frames``, for per-slice scoring.
    """
    if len(data) == 0:
        raise DecodeFailure(ErrorCode.EMPTY_FILE, "file is empty (0 bytes)")
    from iqaflow.tasks import decode_photo

    kind = sniff_medical(data)
    if kind == "dicom":
        from iqaflow.tasks.decode_dicom import decode_dicom

        return decode_dicom(data, max_frames)
    if kind == "nifti":
        from iqaflow.tasks.decode_nifti import decode_nifti

        return decode_nifti(data, max_frames)
    if decode_photo.is_radiance(data):
        return decode_photo.decode_with_opencv(data, "HDR")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            mode = img.mode
            img.load()
    except UnidentifiedImageError:
        if decode_photo.is_tiff(data):  # float and other TIFF layouts Pillow cannot read
            return decode_photo.decode_with_opencv(data, "TIFF")
        if decode_photo.is_heif(data):
            raise DecodeFailure(ErrorCode.NOT_AN_IMAGE, "HEIC/HEIF image, and no HEIF decoder is installed. Fix: "
                                "pip install pillow-heif") from None
        raise DecodeFailure(ErrorCode.NOT_AN_IMAGE, "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeFailure(ErrorCode.TOO_LARGE, str(exc)) from None
    except OSError as exc:
        code = ErrorCode.TRUNCATED if "truncated" in str(exc).lower() else ErrorCode.DECODE_ERROR
        raise DecodeFailure(code, f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # decoders raise many types (SyntaxError, ValueError...) on bad data
        raise DecodeFailure(ErrorCode.DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None
    if decode_photo.wide_colour(img, data):  # Pillow would cut 16-bit colour to 8 bits
        return decode_photo.decode_with_opencv(data, fmt, decode_photo.exif_orientation(img))
    try:
        img = decode_photo.icc_to_srgb(img)
        img = ImageOps.exif_transpose(img) or img
        pixels = _to_array(img)
    except Exception as exc:
        raise DecodeFailure(ErrorCode.DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None
    if pixels.ndim < 2 or pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise DecodeFailure(ErrorCode.DECODE_ERROR, f"decoded to an empty array {pixels.shape}")
    return Decoded(
        pixels=pixels,
        width=int(pixels.shape[1]),
        height=int(pixels.shape[0]),
        format=fmt,
        mode=mode,
        bit_depth=_BIT_DEPTH.get(mode, 8),
    )


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
