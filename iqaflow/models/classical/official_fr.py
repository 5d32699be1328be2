"""SSIM, MS-SSIM and GMSD as their authors' MATLAB code computes them, for one pair (numpy) or a batch (torch).

The references are Wang's ``ssim.m`` and ``msssim.m`` and Xue's ``GMSD.m``, run on ``rgb2gray`` of the
8-bit images, which is how the published comparison values (TID2013 "ResultsCalibra") were made:

* luminance: MATLAB's ``rgb2gray`` of the 8-bit image, which rounds back to integers. The rounding is
  not cosmetic: for nearly identical images it is a large part of the difference (GMSD 5.2e-4 with it,
  2.8e-4 without). Float inputs are first quantised to 8 bits (``im2uint8``; exact halves go to even);
* SSIM: 11x11 Gaussian (sigma 1.5) over the valid positions, K = (0.01, 0.03), L = 255, at full
  resolution: the values were made without ``ssim.m``'s downsampling by round(short side / 256);
* MS-SSIM: 5 scales, 2x2 mean with ``symmetric`` borders then every other pixel, combined by
  ``msssim.m``'s ``'wtd_sum'`` method (normalised weights: sum of cs at scales 1-4 and SSIM at scale
  5). The reference values fit that method to 4 decimals on all five pairs and not the product form,
  which is 4e-3 lower on the two heavily distorted ones;
* GMSD: 2x2 mean (``conv2 'same'``, zero beyond the bottom/right edge) then every other pixel, Prewitt
  gradients / 3 with zero borders, T = 170, the sample standard deviation (``std2``) of the GMS map.

Everything is float64 on both paths, as MATLAB's ``double``: the CPU and the torch (CUDA) path then give
the same numbers to ~1e-12, and nothing depends on float32 cancellation in variances of 0-255 values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from iqaflow.models.classical.fast_fr import (
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW,
    block_mean,
    gaussian_1d,
    valid_blur,
)
from iqaflow.models.classical.matlab_compat import RGB2GRAY, gray255

if TYPE_CHECKING:
    import torch

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# msssim.m refuses images whose short side / 2**(scales - 1) is below the window.
MS_SSIM_MIN_SIDE = SSIM_WINDOW * 2 ** (len(MS_SSIM_WEIGHTS) - 1)
GMSD_T = 170.0
_C1, _C2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2
_PREWITT_X = np.array([[1.0, 0.0, -1.0]] * 3) / 3  # GMSD.m's dx; dy is its transpose


# ---- luminance ----


def gray255_torch(x: torch.Tensor) -> torch.Tensor:
    """``gray255`` of a batch ``(N, 1|3, H, W)`` in [0, 1] -> ``(N, 1, H, W)`` float64."""
    import torch
    q = (x.float().clamp(0.0, 1.0) * 255.0).round().double()  # round(): ties to even, as cv2
    if q.shape[1] == 1:
        return q
    if q.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {q.shape[1]}")
    c = RGB2GRAY
    return torch.floor(q[:, 0:1] * c[0] + q[:, 1:2] * c[1] + q[:, 2:3] * c[2] + 0.5)


def _check(img: np.ndarray, ref: np.ndarray, min_side: int, metric: str) -> None:
    if img.shape != ref.shape:
        raise ValueError(f"expected image and reference of the same shape, got {img.shape} and {ref.shape}")
    if min(img.shape[:2]) < min_side:
        raise ValueError(
            f"{metric} needs images of at least {min_side}x{min_side} px, got {img.shape[1]}x{img.shape[0]}. "
            "Fix: score larger images" + (" or use ssim" if metric == "ms_ssim" else "")
        )


# ---- numpy, one pair ----


def _ssim_cs(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Means of ``ssim_index_new``'s SSIM and contrast-structure maps (0-255 images, valid positions)."""
    k = gaussian_1d(SSIM_WINDOW, SSIM_SIGMA)  # filter2(window, ., 'valid')
    mx, my = valid_blur(x, k), valid_blur(y, k)
    vx, vy, cxy = valid_blur(x * x, k) - mx * mx, valid_blur(y * y, k) - my * my, valid_blur(x * y, k) - mx * my
    cs = (2 * cxy + _C2) / (vx + vy + _C2)
    return float(np.mean((2 * mx * my + _C1) / (mx * mx + my * my + _C1) * cs)), float(np.mean(cs))


def ssim(img: np.ndarray, ref: np.ndarray) -> float:
    """SSIM of Wang et al. (2004) as ``ssim.m`` on ``rgb2gray`` images, full resolution."""
    _check(img, ref, SSIM_WINDOW, "ssim")
    return _ssim_cs(gray255(img), gray255(ref))[0]


def _halve_symmetric(a: np.ndarray) -> np.ndarray:
    """``imfilter(a, ones(2)/4, 'symmetric', 'same')(1:2:end, 1:2:end)``: 2x2 means, an odd last row/column
    averaged with its mirror (itself)."""
    h, w = a.shape
    if h % 2 or w % 2:
        a = cv2.copyMakeBorder(a, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    return block_mean(a, 2)


def ms_ssim(img: np.ndarray, ref: np.ndarray) -> float:
    """MS-SSIM (Wang, Simoncelli & Bovik 2003) as ``msssim.m(..., 'wtd_sum')`` on ``rgb2gray`` images."""
    _check(img, ref, MS_SSIM_MIN_SIDE, "ms_ssim")
    return float(_weighted_scales(gray255(img), gray255(ref), _halve_symmetric, _ssim_cs))


def _weighted_scales(x, y, halve, ssim_cs):  # noqa: ANN001, ANN202 - numpy images or torch batches alike
    """msssim.m's 'wtd_sum': normalised weights times cs at scales 1-4 and SSIM at scale 5."""
    total, last = 0.0, len(MS_SSIM_WEIGHTS) - 1
    for scale, weight in enumerate(MS_SSIM_WEIGHTS):
        if scale:
            x, y = halve(x), halve(y)
        ss, cs = ssim_cs(x, y)
        total = total + weight / sum(MS_SSIM_WEIGHTS) * (ss if scale == last else cs)
    return total


def _gradient_magnitude(a: np.ndarray) -> np.ndarray:
    gx = cv2.filter2D(a, -1, _PREWITT_X, borderType=cv2.BORDER_CONSTANT)
    gy = cv2.filter2D(a, -1, np.ascontiguousarray(_PREWITT_X.T), borderType=cv2.BORDER_CONSTANT)
    return cv2.magnitude(gx, gy)


def gmsd(img: np.ndarray, ref: np.ndarray) -> float:
    """GMSD (Xue et al. 2014) as ``GMSD.m`` on ``rgb2gray`` images; 0 means identical."""
    _check(img, ref, 2, "gmsd")
    x, y = gray255(img), gray255(ref)
    h, w = x.shape
    if h % 2 or w % 2:  # conv2 'same' with a 2x2 kernel reads zeros past the bottom/right edge
        x = cv2.copyMakeBorder(x, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=0)
        y = cv2.copyMakeBorder(y, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=0)
    gx, gy = _gradient_magnitude(block_mean(x, 2)), _gradient_magnitude(block_mean(y, 2))
    gms = (2 * gx * gy + GMSD_T) / (gx * gx + gy * gy + GMSD_T)
    return float(np.std(gms, ddof=1))


# ---- torch, batches of same-size pairs (the CUDA path) ----


def _valid_t(a: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable valid filtering of ``(N, 1, H, W)``: a column then a row pass."""
    import torch.nn.functional as F
    a = F.conv2d(a, kernel.view(1, 1, -1, 1))
    return F.conv2d(a, kernel.view(1, 1, 1, -1))


def _ssim_cs_t(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    import torch
    k = torch.tensor(gaussian_1d(SSIM_WINDOW, SSIM_SIGMA)).to(x)
    mx, my = _valid_t(x, k), _valid_t(y, k)
    vx, vy, cxy = _valid_t(x * x, k) - mx * mx, _valid_t(y * y, k) - my * my, _valid_t(x * y, k) - mx * my
    cs = (2 * cxy + _C2) / (vx + vy + _C2)
    ss = (2 * mx * my + _C1) / (mx * mx + my * my + _C1) * cs
    return ss.mean(dim=(1, 2, 3)), cs.mean(dim=(1, 2, 3))


def _check_t(x: torch.Tensor, y: torch.Tensor, min_side: int, metric: str) -> None:
    _check(np.empty(x.shape[-2:], np.uint8), np.empty(y.shape[-2:], np.uint8), min_side, metric)


def ssim_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``ssim`` for ``(N, C, H, W)`` batches in [0, 1]; float64 ``(N,)``."""
    _check_t(x, y, SSIM_WINDOW, "ssim")
    return _ssim_cs_t(gray255_torch(x), gray255_torch(y))[0]


def _halve_symmetric_t(a: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F
    h, w = a.shape[-2:]
    if h % 2 or w % 2:
        a = F.pad(a, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(a, 2)


def ms_ssim_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``ms_ssim`` for ``(N, C, H, W)`` batches in [0, 1]; float64 ``(N,)``."""
    _check_t(x, y, MS_SSIM_MIN_SIDE, "ms_ssim")
    return _weighted_scales(gray255_torch(x), gray255_torch(y), _halve_symmetric_t, _ssim_cs_t)


def gmsd_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``gmsd`` for ``(N, C, H, W)`` batches in [0, 1]; float64 ``(N,)``."""
    import torch
    import torch.nn.functional as F
    _check_t(x, y, 2, "gmsd")
    a, b = gray255_torch(x), gray255_torch(y)
    h, w = a.shape[-2:]
    prewitt = torch.from_numpy(np.stack([_PREWITT_X, _PREWITT_X.T])[:, None]).to(a)  # (2, 1, 3, 3)

    def grad(t: torch.Tensor) -> torch.Tensor:
        t = F.avg_pool2d(F.pad(t, (0, w % 2, 0, h % 2)), 2)
        g = F.conv2d(t, prewitt, padding=1)
        return torch.sqrt(g[:, :1] ** 2 + g[:, 1:] ** 2)

    ga, gb = grad(a), grad(b)
    gms = (2 * ga * gb + GMSD_T) / (ga * ga + gb * gb + GMSD_T)
    return gms.flatten(1).std(dim=1)  # unbiased, as std2
