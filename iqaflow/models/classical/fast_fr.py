"""piq's RGB SSIM, MS-SSIM and pixel-domain VIF for one image pair on the CPU, with separable OpenCV filters.

These are the ``ssim_rgb``, ``ms_ssim_rgb`` and ``vifp`` scorers; the registered ``ssim``, ``ms_ssim``,
``vif`` and ``gmsd`` follow their authors' code instead (``official_fr``, ``vif_wavelet``).

piq convolves with full 2D kernels (11x11, VIF's 17x17) as grouped convolutions, which on a CPU
costs seconds per megapixel. A Gaussian kernel is the outer product of a 1D one, so a row and a
column pass (``cv2.sepFilter2D``) give the same filter for 2 * k instead of k * k multiplications.
Everything else follows piq 0.8 step by step, so the values are piq's (tests hold them to it):

* "valid" convolution: filter with any border, then crop ``k // 2`` pixels from every side;
* SSIM pools by ``f = round(min(H, W) / 256)`` first (Python's round, floor-cropped as ``avg_pool2d``);
* MS-SSIM pads the top and left by ``max(H % 2, W % 2)`` (replicate) before each 2x2 pooling, takes
  ``relu`` of cs (scales 1-4) and SSIM (scale 5) per channel, and averages the weighted products
  over channels;
* VIF works on BT.601 luminance scaled to 0-255, with kernels 17, 9, 5, 3 (sigma = k / 5) and
  downsamples by taking every other pixel of the valid-filtered image.

Everything runs in float32 like piq's scorer path, with sums in float64; VIF subtracts the mean
luminance first (see ``vif``). Inputs are one pair of ``(H, W)`` or ``(H, W, 3)`` arrays in [0, 1]
(clipped here, as ``to_tensor`` does), distorted image first; every function returns a float.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

# SSIM constants and window of Wang et al. (2004): K1, K2, an 11x11 Gaussian with sigma 1.5.
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_WINDOW = 0.01, 0.03, 1.5, 11
# MS-SSIM weights of Wang, Simoncelli & Bovik (2003), as piq uses them.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_SCALES = len(MS_SSIM_WEIGHTS)
# piq's MS-SSIM needs (window - 1) * 2**(scales - 1) + 1 pixels on the short side.
MS_SSIM_MIN_SIDE = (SSIM_WINDOW - 1) * 2 ** (MS_SSIM_SCALES - 1) + 1
# VIF: visual noise variance (0-255 scale), piq's stability constant and its minimum image side.
VIF_SIGMA_N_SQ, VIF_EPS, VIF_MIN_SIDE = 2.0, 1e-8, 41


@lru_cache(maxsize=16)
def gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1D Gaussian whose outer product with itself is piq's ``gaussian_filter(size, sigma)``."""
    coords = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(coords**2) / (2 * sigma**2))
    g /= g.sum()
    g.flags.writeable = False
    return g


def valid_blur(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``a`` filtered with ``outer(kernel, kernel)`` at the positions where the window fits (piq's padding=0)."""
    r = len(kernel) // 2
    out = cv2.sepFilter2D(a, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    return out[r : a.shape[0] - r, r : a.shape[1] - r]


def _as_unit(a: np.ndarray) -> np.ndarray:
    """float32 clipped to [0, 1] like ``to_tensor``; ``(H, W, 1)`` becomes ``(H, W)`` (OpenCV drops that axis)."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    return np.clip(a, 0.0, 1.0)


def _check_pair(x: np.ndarray, y: np.ndarray) -> None:
    if x.shape != y.shape:
        raise ValueError(f"expected image and reference of the same shape, got {x.shape} and {y.shape}")


def _ssim_cs(x: np.ndarray, y: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel means of the SSIM and contrast-structure maps over the valid window positions."""
    k = len(kernel)
    if x.shape[0] < k or x.shape[1] < k:
        raise ValueError(
            f"expected images of at least {k}x{k} px for a {k}-px window, got {x.shape[1]}x{x.shape[0]}. "
            "Fix: score larger images"
        )
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mx, my = valid_blur(x, kernel), valid_blur(y, kernel)
    # Only the sum of the two variances enters SSIM: one filter instead of two.
    sum_sq = valid_blur(x * x + y * y, kernel)
    xy = valid_blur(x * y, kernel)
    mxy = mx * my
    mx *= mx
    my *= my
    mx += my  # mx is now mu_x^2 + mu_y^2
    cs = (2 * (xy - mxy) + c2) / (sum_sq - mx + c2)
    ss = (2 * mxy + c1) / (mx + c1) * cs
    return _channel_means(ss), _channel_means(cs)


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """``avg_pool2d(kernel_size=f)``: means of f x f blocks, incomplete blocks at the bottom/right dropped.

    ``INTER_AREA`` at an integer factor is exactly the block mean (and ~40x faster than a numpy reshape-mean).
    """
    h, w = a.shape[0] // f, a.shape[1] // f
    return cv2.resize(a[: h * f, : w * f], (w, h), interpolation=cv2.INTER_AREA)


def _channel_means(a: np.ndarray) -> np.ndarray:
    """Per-channel means accumulated in float64 (``cv2.mean``; numpy's strided reductions are ~50x slower)."""
    if a.ndim == 2:
        return np.array([cv2.mean(a)[0]])
    c = a.shape[2]
    if c <= 4:
        return np.array(cv2.mean(a)[:c])
    return np.array([cv2.mean(np.ascontiguousarray(a[:, :, i]))[0] for i in range(c)])


def ssim_rgb(img: np.ndarray, ref: np.ndarray, downsample: bool = True) -> float:
    """Mean SSIM averaged over channels: ``piq.ssim(data_range=1, kernel_size=11, kernel_sigma=1.5)``."""
    _check_pair(img, ref)
    x, y = _as_unit(img), _as_unit(ref)
    f = max(1, round(min(x.shape[:2]) / 256))
    if f > 1 and downsample:
        x, y = block_mean(x, f), block_mean(y, f)
    ss, _ = _ssim_cs(x, y, gaussian_1d(SSIM_WINDOW, SSIM_SIGMA))
    return float(np.mean(ss))


def check_ms_ssim_size(height: int, width: int) -> None:
    """Images below 161 px a side are an error, not a measure with fewer (incomparable) scales."""
    if min(height, width) < MS_SSIM_MIN_SIDE:
        raise ValueError(
            f"ms_ssim_rgb needs images of at least {MS_SSIM_MIN_SIDE}x{MS_SSIM_MIN_SIDE} px ({MS_SSIM_SCALES} scales "
            f"of an {SSIM_WINDOW}-px window); got {width}x{height}. Fix: use ssim_rgb for images this small"
        )


def _halve(a: np.ndarray) -> np.ndarray:
    """piq's MS-SSIM downsampling: replicate-pad top/left by max(H % 2, W % 2), then 2x2 average pooling."""
    pad = max(a.shape[0] % 2, a.shape[1] % 2)
    if pad:
        a = cv2.copyMakeBorder(a, pad, 0, pad, 0, cv2.BORDER_REPLICATE)
    return block_mean(a, 2)


def ms_ssim_rgb(img: np.ndarray, ref: np.ndarray) -> float:
    """MS-SSIM with the 5 published weights: ``piq.multi_scale_ssim(data_range=1)`` with our K1, K2, window."""
    _check_pair(img, ref)
    check_ms_ssim_size(*img.shape[:2])
    x, y = _as_unit(img), _as_unit(ref)
    kernel = gaussian_1d(SSIM_WINDOW, SSIM_SIGMA)
    factors = []
    for scale in range(MS_SSIM_SCALES):
        if scale > 0:
            x, y = _halve(x), _halve(y)
        ss, cs = _ssim_cs(x, y, kernel)
        factors.append(cs if scale < MS_SSIM_SCALES - 1 else ss)
    per_scale = np.maximum(np.stack(factors), 0.0)  # (scale, channel)
    weights = np.asarray(MS_SSIM_WEIGHTS, dtype=np.float64)[:, None]
    return float(np.prod(per_scale**weights, axis=0).mean())


def _luminance(a: np.ndarray, scale: float, metric: str) -> np.ndarray:
    """BT.601 Y (YIQ's Y, as piq's ``rgb2yiq`` and ``vif_p``) of a [0, 1] image times ``scale``; gray
    images pass through, scaled."""
    a = _as_unit(a)
    if a.ndim == 3 and a.shape[2] == 3:
        return cv2.transform(a, np.array([[0.299 * scale, 0.587 * scale, 0.114 * scale]], dtype=np.float32))
    if a.ndim != 2:
        raise ValueError(f"{metric} expects gray (H, W) or RGB (H, W, 3) images, got shape {a.shape}")
    return a if scale == 1 else a * np.float32(scale)


def _centred(a: np.ndarray) -> np.ndarray:
    """``a`` minus its mean: (co)variances are shift-invariant, and float32 E[x^2] - E[x]^2 loses digits in
    proportion to the magnitude of x, so this keeps VIFp's variances accurate without float64 filters."""
    a -= np.float32(cv2.mean(a)[0])
    return a


def vifp(img: np.ndarray, ref: np.ndarray) -> float:
    """Pixel-domain VIF, ``piq.vif_p(img, ref, sigma_n_sq=2, data_range=1)``; ``img`` distorted, ``ref`` reference.

    float32, as piq's scorer path, whose E[x^2] - E[x]^2 on 0-255 values puts it up to ~6e-5 from
    piq's float64 value. Here luminance minus its mean goes into the filters, which shrinks that
    cancellation error wherever the image is near its mean; it remains in flat regions far from it
    (black borders: up to ~2e-5 from float64 measured). float64 filters would be exact but ~1.8x slower.
    """
    _check_pair(img, ref)
    if min(img.shape[:2]) < VIF_MIN_SIDE:
        raise ValueError(
            f"vifp needs images of at least {VIF_MIN_SIDE}x{VIF_MIN_SIDE} px, got {img.shape[1]}x{img.shape[0]}. "
            "Fix: score larger images"
        )
    x, y = _centred(_luminance(img, 255, "vifp")), _centred(_luminance(ref, 255, "vifp"))
    eps, zero, num, den = np.float32(VIF_EPS), np.float32(0), 0.0, 0.0
    for scale in range(4):
        size = 2 ** (4 - scale) + 1
        kernel = gaussian_1d(size, size / 5)
        if scale > 0:
            x = _centred(np.ascontiguousarray(valid_blur(x, kernel)[::2, ::2]))
            y = _centred(np.ascontiguousarray(valid_blur(y, kernel)[::2, ::2]))
        mx, my = valid_blur(x, kernel), valid_blur(y, kernel)
        sxx = np.maximum(valid_blur(x * x, kernel) - mx * mx, zero)
        syy = np.maximum(valid_blur(y * y, kernel) - my * my, zero)
        sxy = valid_blur(x * y, kernel) - mx * my
        # piq's sequence of torch.where, condensed: where either variance is below eps the gain is 0.
        g = sxy / (syy + eps)
        sv = sxx - g * sxy
        y_ok, x_ok = syy >= eps, sxx >= eps
        g = np.where(y_ok & x_ok, g, zero)
        sv = np.where(y_ok, sv, sxx)
        sv = np.where(x_ok, sv, zero)
        syy = np.where(y_ok, syy, zero)
        sv = np.where(g >= 0, sv, sxx)
        np.maximum(g, zero, out=g)
        sv = np.maximum(sv, eps)  # piq: where(sv > eps, sv, eps), the same values
        # log1p: log10(1 + t) in float32 rounds 1 + t; sums in float64 (cv2.sumElems).
        num += cv2.sumElems(np.log1p(g * g * syy / (sv + np.float32(VIF_SIGMA_N_SQ))))[0]
        den += cv2.sumElems(np.log1p(syy / np.float32(VIF_SIGMA_N_SQ)))[0]
    return float((num / np.log(10) + VIF_EPS) / (den / np.log(10) + VIF_EPS))


def psnr(img: np.ndarray, ref: np.ndarray) -> float:
    """``piq.psnr(img, ref, data_range=1)`` over all channels, -10 log10(MSE + 1e-8): 80 dB when identical.

    The squared error is summed in float64 by ``cv2.norm`` (one pass, no temporaries)."""
    _check_pair(img, ref)
    x, y = _as_unit(img), _as_unit(ref)
    mse = cv2.norm(x, y, cv2.NORM_L2SQR) / x.size
    return float(-10.0 * np.log10(mse + 1e-8))
