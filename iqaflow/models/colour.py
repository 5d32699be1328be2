"""Conversion of decoded pixels to the float colour space a scorer declares."""

from __future__ import annotations

import cv2
import numpy as np

from iqaflow.models.base import ColourSpace


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """Integer or float pixels -> float32 in [0, 1]; bit depth is taken from the dtype."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) * np.float32(1 / 255)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) * np.float32(1 / 65535)
    if np.issubdtype(pixels.dtype, np.integer):
        info = np.iinfo(pixels.dtype)
        return ((pixels.astype(np.float32) - info.min) / float(info.max - info.min)).astype(np.float32)
    out = pixels.astype(np.float32, copy=False)
    return np.clip(out, 0.0, 1.0)


def convert(pixels: np.ndarray, colour: ColourSpace) -> np.ndarray:
    """Decoded pixels (H,W), (H,W,1), (H,W,3) or (H,W,4) -> float32 gray (H,W) or RGB (H,W,3)."""
    img = to_unit_float(pixels)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]  # alpha is not part of perceived quality here
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"expected an image of shape (H,W) or (H,W,3|4), got {pixels.shape}")
    if colour == "gray":
        return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2)) if img.ndim == 2 else img
