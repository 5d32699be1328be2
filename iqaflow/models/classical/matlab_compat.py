"""MATLAB image-processing semantics that published reference codes depend on, in numpy.

``gray255`` is ``rgb2gray`` of the 8-bit image: NIQE, SSIM, MS-SSIM, GMSD and VIF's reference codes
all start from it, and its rounding back to integers moves their values by up to 1e-3.

``imresize`` follows MATLAB's ``imresize`` for an explicit output size: pixel centres map by
``u = x / s + (1 - 1 / s) / 2``, on downscaling the kernel is stretched by ``1 / s`` (antialiasing),
weights are normalised per output pixel and out-of-range taps mirror (``[1..n, n..1]``). It works
as one weight matrix per axis, which is exact and fast for the sizes reference codes use
(a few hundred pixels a side): each is a sparse band matrix (scipy CSR), ~10x faster than dense.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import cv2
import numpy as np
import scipy.sparse as sp

Method = Literal["bilinear", "bicubic"]
# MATLAB rgb2gray: the first row of inv of the NTSC YIQ matrix (not BT.601's rounded 0.299, 0.587, 0.114).
RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def gray255(img: np.ndarray) -> np.ndarray:
    """``rgb2gray(im2uint8(img))`` as float64 integers 0-255, for ``(H, W)`` or ``(H, W, 1|3)`` in [0, 1].

    The 3-term sum in float64 is never within 4.6e-6 of a .5 (checked over all 2**24 colours), so
    any float64 evaluation order, here or in ``gray255_torch``, rounds as MATLAB does.
    """
    a = np.asarray(img, dtype=np.float32)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        raise ValueError(f"expected gray (H, W) or RGB (H, W, 3) images, got shape {a.shape}")
    q = cv2.convertScaleAbs(np.clip(a, 0.0, 1.0), alpha=255.0)  # round to uint8, ties to even
    if q.ndim == 2:
        return q.astype(np.float64)
    return np.floor(cv2.transform(q.astype(np.float64), np.array([RGB2GRAY])) + 0.5)


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    outer = np.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, 0.0)
    return np.where(ax <= 1, 1.5 * ax**3 - 2.5 * ax**2 + 1, outer)


_KERNELS = {"bilinear": (_triangle, 2.0), "bicubic": (_cubic, 4.0)}


@lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int, method: Method = "bilinear", antialias: bool = True) -> sp.csr_matrix:
    """``(n_out, n_in)`` sparse float64 matrix ``W`` such that ``W @ x`` is MATLAB's 1-D imresize of ``x``.

    Cached and shared between callers: read it, never modify it."""
    kernel, width = _KERNELS[method]
    scale = n_out / n_in
    if scale < 1 and antialias:

        def h(x: np.ndarray) -> np.ndarray:
            return scale * kernel(scale * x)

        width /= scale
    else:
        h = kernel
    u = np.arange(1, n_out + 1) / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinates
    left = np.floor(u - width / 2)
    taps = left[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
    weights = h(u[:, None] - taps)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])
    index = mirror[np.mod(taps.astype(np.int64) - 1, 2 * n_in)]
    # Mirrored taps that land on the same pixel add up (coo -> csr sums duplicates).
    out = sp.coo_matrix(
        (weights.ravel(), (np.repeat(np.arange(n_out), taps.shape[1]), index.ravel())), shape=(n_out, n_in)
    ).tocsr()
    out.eliminate_zeros()
    return out


def imresize(img: np.ndarray, size: tuple[int, int], method: Method = "bilinear", antialias: bool = True) -> np.ndarray:
    """MATLAB ``imresize(img, [rows cols], method)`` of a float image ``(H, W)`` or ``(H, W, C)``; float64."""
    rows = resize_matrix(img.shape[0], size[0], method, antialias)
    cols = resize_matrix(img.shape[1], size[1], method, antialias)
    a = np.asarray(img, dtype=np.float64)
    h, w = a.shape[:2]
    t = (rows @ a.reshape(h, -1)).reshape(size[0], w, -1)  # axis 0, on the (H, W*C) view
    t = cols @ t.transpose(1, 0, 2).reshape(w, -1)  # axis 1, on the (W, rows*C) view
    out = t.reshape(size[1], size[0], -1).transpose(1, 0, 2)
    return out[..., 0] if a.ndim == 2 else out
