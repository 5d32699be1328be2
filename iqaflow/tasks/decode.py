"""Bytes -> pixels. Every failure becomes a ``DecodeFailure`` with a stable error code."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from iqaflow.schemas.results import ErrorCode

_BIT_DEPTH = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "LA": 8, "CMYK": 8, "YCbCr": 8,
              "I;16": 16, "I;16B": 16, "I;16L": 16, "I": 32, "F": 32}


@dataclass
class Decoded:
    pixels: np.ndarray  # (H, W) or (H, W, 3); uint8, uint16 or float32
    width: int
    height: int
    format: str
    mode: str
    bit_depth: int


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


def decode(data: bytes) -> Decoded:
    """Decode an image file's bytes (EXIF orientation applied)."""
    if len(data) == 0:
        raise DecodeFailure(ErrorCode.EMPTY_FILE, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            mode = img.mode
            img.load()
    except UnidentifiedImageError:
        raise DecodeFailure(ErrorCode.NOT_AN_IMAGE, "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeFailure(ErrorCode.TOO_LARGE, str(exc)) from None
    except OSError as exc:
        code = ErrorCode.TRUNCATED if "truncated" in str(exc).lower() else ErrorCode.DECODE_ERROR
        raise DecodeFailure(code, f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # decoders raise many types (SyntaxError, ValueError...) on bad data
        raise DecodeFailure(ErrorCode.DECODE_ERROR, f"{type(exc).__name__}: {exc}") from None
    try:
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
