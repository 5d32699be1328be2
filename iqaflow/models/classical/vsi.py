"""VSI (Zhang, Shen & Li 2014) as the authors' ``VSI.m`` computes it, in float64 numpy on the CPU.

What ``VSI.m`` does and ports usually miss: SDSP saliency on a 256x256 MATLAB ``imresize``
(bilinear, antialiased, mirrored edges), the authors' own sRGB->Lab (sRGB/D65 matrix over a D50
white, no chromatic adaptation), ``mat2gray`` of the saliency map resized back, and
``conv2(..., 'same')`` with zero padding for the F x F average (whose window looks forward for an
even F) and for the Scharr gradients. piq shifts that average one pixel (0.008 on TID2013 I19).
No MATLAB output of ``VSI.m`` was available to compare with; each step is tested against MATLAB's
documented semantics. Inputs are RGB in [0, 1]; the maths runs on the 0-255 scale of the constants.
Where MATLAB would divide 0 by 0 (a flat colour channel, no saliency at all) this returns numbers.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import scipy.fft

from iqaflow.models.classical.matlab_compat import imresize

C_VS, C_GM, C_CHROM = 1.27, 386.0, 130.0
ALPHA, LAMBDA = 0.40, 0.020
SIGMA_F, OMEGA0, SIGMA_D, SIGMA_C = 1.34, 0.021, 145.0, 0.001
SALIENCY_SIZE = 256

# sRGB primaries (D65) to XYZ, then normalised by the D50 white: VSI.m's RGB2Lab, not CIE-correct.
_RGB2XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_WHITE_D50 = np.array([0.9642, 1.0, 0.8251])
_LAB_EPS, _LAB_KAPPA = 0.008856, 903.3
_LMN = np.array([[0.06, 0.63, 0.27], [0.30, 0.04, -0.35], [0.34, -0.60, 0.17]])
_SCHARR_X = np.array([[3.0, 0.0, -3.0], [10.0, 0.0, -10.0], [3.0, 0.0, -3.0]]) / 16


def rgb2lab_vsi(rgb255: np.ndarray) -> np.ndarray:
    """VSI.m's ``RGB2Lab``: 0-255 RGB ``(H, W, 3)`` -> Lab, sRGB/D65 matrix against a D50 white."""
    c = rgb255 / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ (_RGB2XYZ / _WHITE_D50[:, None]).T
    f = np.where(xyz > _LAB_EPS, np.cbrt(xyz), (_LAB_KAPPA * xyz + 16.0) / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


@lru_cache(maxsize=4)
def log_gabor(rows: int, cols: int, omega0: float = OMEGA0, sigma_f: float = SIGMA_F) -> np.ndarray:
    """VSI.m's isotropic log-Gabor transfer function, DC at ``[0, 0]``; zero beyond radius 0.5."""
    u1 = (np.arange(1, cols + 1) - (cols // 2 + 1)) / (cols - cols % 2)
    u2 = (np.arange(1, rows + 1) - (rows // 2 + 1)) / (rows - rows % 2)
    radius = np.hypot(*np.meshgrid(u1, u2))
    radius = np.fft.ifftshift(np.where(radius > 0.5, 0.0, radius))
    radius[0, 0] = 1.0
    with np.errstate(divide="ignore"):  # masked radii are 0: log -> -inf -> weight 0, as in MATLAB
        lg = np.exp(-(np.log(radius / omega0) ** 2) / (2 * sigma_f**2))
    lg[0, 0] = 0.0
    lg.flags.writeable = False
    return lg


@lru_cache(maxsize=4)
def _centre_prior(rows: int, cols: int) -> np.ndarray:
    y = np.arange(1, rows + 1) - rows / 2
    x = np.arange(1, cols + 1) - cols / 2
    return np.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / SIGMA_D**2)


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def sdsp(rgb255: np.ndarray) -> np.ndarray:
    """SDSP saliency (VSI.m's parameters) of a 0-255 RGB image, at its size, in [0, 1] (``mat2gray``)."""
    rows, cols = rgb255.shape[:2]
    lab = rgb2lab_vsi(imresize(rgb255, (SALIENCY_SIZE, SALIENCY_SIZE), "bilinear"))
    n = SALIENCY_SIZE
    # The transfer function is real and even, so real(ifft2(fft2(x) .* LG)) is a real-to-real transform.
    planes = np.ascontiguousarray(lab.transpose(2, 0, 1))
    band = scipy.fft.irfft2(scipy.fft.rfft2(planes) * log_gabor(n, n)[:, : n // 2 + 1], s=(n, n))
    sf = np.sqrt((band**2).sum(axis=0))
    colour = 1.0 - np.exp(-(_minmax(lab[..., 1]) ** 2 + _minmax(lab[..., 2]) ** 2) / SIGMA_C**2)
    vs = sf * _centre_prior(SALIENCY_SIZE, SALIENCY_SIZE) * colour
    return _minmax(imresize(vs, (rows, cols), "bilinear"))


def average_subsample(a: np.ndarray, f: int) -> np.ndarray:
    """``conv2(a, fspecial('average', f), 'same')`` sampled at ``(1:f:end, 1:f:end)`` for each plane of
    ``a`` ``(H, W, ...)``: f x f block means of the zero-padded image, the first block starting
    ``f - 1 - f // 2`` pixels before it (conv2's 'same' window for an even f looks forward)."""
    if f == 1:
        return a
    before = f - 1 - f // 2
    rows, cols = (-(-n // f) for n in a.shape[:2])  # ceil: the length of 1:f:n
    after = [max(0, n * f - size - before) for n, size in zip((rows, cols), a.shape[:2], strict=True)]
    if before or any(after):
        a = np.pad(a, [(before, after[0]), (before, after[1])] + [(0, 0)] * (a.ndim - 2))
    out = np.zeros((rows, cols, *a.shape[2:]))
    for i in range(f):  # f*f strided adds: cheaper than a reshape-sum over non-contiguous axes
        for j in range(f):
            out += a[i : i + rows * f : f, j : j + cols * f : f]
    return out / (f * f)


def _gradient(a: np.ndarray) -> np.ndarray:
    """Scharr magnitude with ``conv2(..., 'same')`` (zero padding); correlation with the flipped kernel."""
    kx = np.ascontiguousarray(_SCHARR_X[::-1, ::-1])
    gx = cv2.filter2D(a, cv2.CV_64F, kx, borderType=cv2.BORDER_CONSTANT)
    gy = cv2.filter2D(a, cv2.CV_64F, np.ascontiguousarray(kx.T), borderType=cv2.BORDER_CONSTANT)
    return np.hypot(gx, gy)


def vsi(img: np.ndarray, ref: np.ndarray) -> float:
    """VSI of two same-size RGB images ``(H, W, 3)`` in [0, 1]; 1.0 for identical images.

    Symmetric in its arguments, like the original. Gray images are repeated to three channels.
    """
    if img.shape != ref.shape:
        raise ValueError(f"expected images of the same shape, got {img.shape} and {ref.shape}")
    a, b = (_rgb255(x) for x in (img, ref))
    f = max(1, int(np.floor(min(a.shape[:2]) / 256 + 0.5)))  # MATLAB round: half away from zero
    planes = []
    for x in (a, b):
        # LMN is per-pixel linear, so it commutes with the block mean: convert the smaller image.
        lmn = average_subsample(x, f) @ _LMN.T
        planes.append((average_subsample(sdsp(x), f), lmn[..., 0], lmn[..., 1], lmn[..., 2]))
    (s1, l1, m1, n1), (s2, l2, m2, n2) = planes
    g1, g2 = _gradient(l1), _gradient(l2)
    s_vs = (2 * s1 * s2 + C_VS) / (s1**2 + s2**2 + C_VS)
    s_gm = (2 * g1 * g2 + C_GM) / (g1**2 + g2**2 + C_GM)
    s_m = (2 * m1 * m2 + C_CHROM) / (m1**2 + m2**2 + C_CHROM)
    s_n = (2 * n1 * n2 + C_CHROM) / (n1**2 + n2**2 + C_CHROM)
    # MATLAB's real(z .^ lambda) of a negative z is |z|^lambda * cos(pi * lambda) (principal branch).
    c = s_m * s_n
    chroma = np.abs(c) ** LAMBDA * np.where(c < 0, np.cos(np.pi * LAMBDA), 1.0)
    sim = s_gm**ALPHA * s_vs * chroma
    weight = np.maximum(s1, s2)
    total = weight.sum()
    # No saliency anywhere (flat images): MATLAB returns 0/0 = NaN; a plain mean keeps identity at 1.
    return float((sim * weight).sum() / total) if total > 0 else float(sim.mean())


def _rgb255(x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:
        x = x[..., None]
    out = np.empty((*x.shape[:2], 3))
    out[...] = x[..., :3]  # one float64 copy; a gray plane broadcasts to three channels
    np.clip(out, 0.0, 1.0, out=out)
    return np.multiply(out, 255.0, out=out)
