"""VIF of Sheikh & Bovik (2006) in the wavelet domain, as their ``vifvec.m``: one pair (numpy) or a batch (torch).

``vifvec.m`` decomposes ``rgb2gray`` luminance (0-255, see ``matlab_compat.gray255``) with a 4-level
steerable pyramid (``buildSpyr(im, 4, 'sp5Filters', 'reflect1')``) and uses the two orientations of
subbands 4, 7, ..., 25, i.e. bands 1 and 4 of every level; hence only those two band filters run here.
Per subband, cropped to a multiple of M = 3:

* distortion channel (``vifsub_est_M``): box sums of a (2**lev + 1)-wide window (lev 1 coarsest .. 4
  finest) with ``reflect1`` borders at the centre of each 3x3 block give the gain g = cov / var_ref and
  the noise variance vv, with the original's clamps (tol 1e-15);
* reference GSM (``refparams_vecgsm``): the 9x9 covariance Cu of all overlapping 3x3 blocks, its
  eigenvalues, and s = x' Cu^-1 x / 9 per non-overlapping block;
* information: sums over eigenvalues and blocks (less ceil(window radius / 3) blocks at every border) of
  log2(1 + g^2 s lambda / (vv + 0.4)) and log2(1 + s lambda / 0.4); VIF = their ratio over subbands.

Precision: the subbands and their products are float32 (the inputs are exact 0-255 integers); window
sums, the block covariance and every statistic after them are float64 (OpenCV accumulates float32
sums in float64); the torch path does the same in float64 after the float32 filters. The two paths
agree within ~1e-6 (float32 rounding of the filter outputs; tests hold 1e-5). ``reflect1`` (mirror
without repeating the edge) is OpenCV's BORDER_REFLECT_101 and torch's ``reflect`` padding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from iqaflow.models.classical.matlab_compat import gray255
from iqaflow.models.classical.official_fr import gray255_torch

if TYPE_CHECKING:
    import torch

M = 3  # side of the GSM vector block
SIGMA_NSQ = 0.4  # visual noise variance of vifvec.m
TOL = 1e-15
LEVELS = 4
# buildSpyr needs 4 halvings of the image that stay at least the 9-tap lowpass filter wide.
VIF_MIN_SIDE = 9 * 2 ** (LEVELS - 1)

# Taps of sp5Filters.m (matlabPyrTools, E. Simoncelli, MIT licence), to its 8 decimals, stored by
# symmetry. lo0filt (5x5) and lofilt (9x9) are symmetric about both axes and the diagonal: one octant.
_LO0 = ((0.40304148,), (0.15925570, 0.05586982), (-0.03848215, -0.01551246, 0.00341614))
_LO = (
    (0.20193080,), (0.16339236, 0.12852666), (0.07962786, 0.06554076, 0.02793492),
    (0.02005976, 0.00821200, -0.01322234, -0.01046562),
    (-0.01924108, -0.01888864, -0.00775624, -0.00489834, 0.00170808),
)
# Band 1 (7x7, the bfilts column reshaped as MATLAB does): odd in x, even in y. Columns 0-2 of rows
# 0-3 (row 3 the centre); column 3 is 0. Band 4 is minus its transpose.
_B1 = (
    (0.00277643, -0.00986904, -0.01021852),
    (0.00496194, -0.00893064, -0.03075356),
    (0.01026699, 0.01189859, -0.08226445),
    (0.01455399, 0.02755155, -0.11732297),
)


def _octant(rows: tuple[tuple[float, ...], ...]) -> np.ndarray:
    """Square kernel from its octant: ``rows[i][j]`` (j <= i) is the tap at distance (i, j) from the centre."""
    r = len(rows) - 1
    k = np.empty((2 * r + 1, 2 * r + 1))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            i, j = max(abs(dy), abs(dx)), min(abs(dy), abs(dx))
            k[dy + r, dx + r] = rows[i][j]
    return k


def _band1() -> np.ndarray:
    half = np.array(_B1)  # (4, 3): rows 0-3, columns 0-2
    left = np.vstack([half, half[-2::-1]])  # rows 0-6
    return np.hstack([left, np.zeros((7, 1)), -left[:, ::-1]])


LO0_FILT, LO_FILT, BAND1 = _octant(_LO0), _octant(_LO), _band1()
BANDS = (BAND1, -BAND1.T)  # orientations 1 and 4
# Per level from the finest: the distortion window side (2**lev + 1) and the border, in blocks, left out.
WINDOWS = tuple(2 ** (LEVELS - i) + 1 for i in range(LEVELS))
BORDERS = tuple(-(-(w // 2) // M) for w in WINDOWS)
# (column, row) offset of each component of a block vector, in MATLAB's column-major order.
OFFSETS = tuple((j, k) for j in range(M) for k in range(M))


def _check(shape: tuple[int, ...], other: tuple[int, ...]) -> None:
    if shape != other:
        raise ValueError(f"expected image and reference of the same shape, got {shape} and {other}")
    if min(shape[:2]) < VIF_MIN_SIDE:
        raise ValueError(
            f"vif needs images of at least {VIF_MIN_SIDE}x{VIF_MIN_SIDE} px (a 4-level steerable pyramid), "
            f"got {shape[1]}x{shape[0]}. Fix: score larger images"
        )


# ---- numpy, one pair ----


def _corr(a: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return cv2.filter2D(a, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def subbands(img: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two used orientations of each pyramid level of a 0-255 image, finest level first (float32)."""
    lo, out = _corr(img.astype(np.float32), LO0_FILT.astype(np.float32)), []
    for _ in range(LEVELS):
        out.append(tuple(_corr(lo, b.astype(np.float32)) for b in BANDS))
        lo = np.ascontiguousarray(_corr(lo, LO_FILT.astype(np.float32))[::2, ::2])
    return out


def _information(ref: np.ndarray, dist: np.ndarray, window: int, border: int) -> tuple[float, float]:
    """(distorted, reference) information of one pair of float32 subbands."""
    h, w = (ref.shape[0] // M) * M, (ref.shape[1] // M) * M
    x, y = np.ascontiguousarray(ref[:h, :w]), np.ascontiguousarray(dist[:h, :w])
    n = window * window

    def box(a: np.ndarray) -> np.ndarray:  # window sums at the 3x3 block centres (OpenCV sums in float64)
        s = cv2.boxFilter(a, -1, (window, window), normalize=False, borderType=cv2.BORDER_REFLECT_101)
        return s[1::M, 1::M].astype(np.float64)

    sx, sy = box(x), box(y)
    cov = box(x * y) - sx * sy / n
    vx = np.maximum(box(x * x) - sx * sx / n, 0.0)
    vy = np.maximum(box(y * y) - sy * sy / n, 0.0)
    g, vv = _channel(cov, vx, vy, n, np)

    cu = _block_covariance(x)
    # s = b' Cu^-1 b / 9 per non-overlapping block b, from the 9 images of the blocks' components.
    comps = np.stack([x[k::M, j::M] for j, k in OFFSETS]).reshape(M * M, -1).astype(np.float64)
    s = (np.sum((np.linalg.inv(cu) @ comps) * comps, axis=0) / (M * M)).reshape(h // M, w // M)
    inner = (slice(border, -border), slice(border, -border))
    g, vv, s = g[inner], vv[inner], s[inner]
    lam = np.linalg.eigvalsh(cu)
    return float(_log2_terms(g * g * s / (vv + SIGMA_NSQ), lam).sum()), float(_log2_terms(s / SIGMA_NSQ, lam).sum())


def _block_covariance(x: np.ndarray) -> np.ndarray:
    """Covariance (population) of the 9-vectors of all overlapping 3x3 blocks of ``x`` (float64, 9x9).

    E[b_a b_b] needs x at block offset a times x at offset b, summed over all block positions. Pairs
    with the same relative offset (13, up to order) share one product image: the flat image times
    itself shifted by dk rows and dj columns, a contiguous multiply; the entries that wrap around a row
    end are never inside the rectangle a pair sums. OpenCV sums in float64: exact where a float32
    9 x L matrix product is ~1e-6 off, and faster (strided 2D products are 4-6x slower here).
    """
    h, w = x.shape
    x = _aligned_copy(x)  # OpenCV's SIMD sums round differently at other alignments: same input, same bits
    rows, cols = h - M + 1, w - M + 1
    sums = np.array([cv2.sumElems(x[k : k + rows, j : j + cols])[0] for j, k in OFFSETS])
    by_shift: dict[tuple[int, int], list[tuple[int, int, int, int]]] = {}
    for a in range(M * M):
        for b in range(a, M * M):
            (j0, k0), (j1, k1) = OFFSETS[a], OFFSETS[b]
            if (k1, j1) < (k0, j0):  # order the pair: the second offset below, or right on the same row
                (j0, k0), (j1, k1) = (j1, k1), (j0, k0)
            by_shift.setdefault((k1 - k0, j1 - j0), []).append((a, b, k0, j0))
    flat, buf = x.reshape(-1), _aligned_copy(x).reshape(-1)
    gram = np.empty((M * M, M * M))
    for (dk, dj), pairs in by_shift.items():
        lag = dk * w + dj  # >= 0 by the ordering
        np.multiply(flat[: x.size - lag], flat[lag:], out=buf[: x.size - lag])
        q = buf.reshape(h, w)  # q[u, v] = x[u, v] * x[u + dk, v + dj] wherever both exist
        for a, b, k0, j0 in pairs:
            gram[a, b] = gram[b, a] = cv2.sumElems(q[k0 : k0 + rows, j0 : j0 + cols])[0]
    n = rows * cols
    return gram / n - np.outer(sums, sums) / (n * n)


def _aligned_copy(a: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A C-contiguous copy of ``a`` starting on an ``alignment``-byte boundary."""
    raw = np.empty(a.nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    out = raw[start : start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _log2_terms(a, lam):  # noqa: ANN001, ANN202 - numpy and torch arrays alike
    """sum over eigenvalues j of log2(1 + a * lam_j), per element of ``a``, as the log of one product:
    one log per block instead of 9 (the product of 9 factors >= ~1 stays far inside float64's range)."""
    prod = 1 + a * lam[..., 0]
    for j in range(1, lam.shape[-1]):
        prod = prod * (1 + a * lam[..., j])
    return prod.log2() if hasattr(prod, "log2") else np.log2(prod)  # a torch tensor, or numpy


def _channel(cov, vx, vy, n: int, xp):  # noqa: ANN001, ANN202 - numpy and torch arrays alike
    """``vifsub_est_M``'s gain and noise variance from window sums, with its clamps in its order."""
    g = cov / (vx + TOL)
    vv = (vy - g * cov) / n
    flat_x, flat_y = vx < TOL, vy < TOL
    g = xp.where(flat_x | flat_y, 0.0, g)
    vv = xp.where(flat_y, 0.0, xp.where(flat_x, vy, vv))
    vv = xp.where(g < 0, vy, vv)
    g = xp.where(g < 0, 0.0, g)
    return g, xp.where(vv <= TOL, TOL, vv)


def vif(img: np.ndarray, ref: np.ndarray) -> float:
    """Wavelet-domain VIF, ``img`` distorted and ``ref`` reference (``vifvec(ref, img)``); 1 = identical."""
    _check(img.shape, ref.shape)
    num = den = 0.0
    for level, (rb, db) in enumerate(zip(subbands(gray255(ref)), subbands(gray255(img)), strict=True)):
        for r, d in zip(rb, db, strict=True):
            a, b = _information(r, d, WINDOWS[level], BORDERS[level])
            num, den = num + a, den + b
    return num / den


# ---- torch, batches of same-size pairs (the CUDA path) ----


def _corr_t(a: torch.Tensor, kernels: np.ndarray, stride: int = 1) -> torch.Tensor:
    """``(N, 1, H, W)`` correlated with ``(K, kh, kw)`` kernels, reflect101 borders -> ``(N, K, H', W')``
    in ``a``'s dtype (float32, as ``subbands``; TF32 is off, see ``classical_fr.exact_float32``)."""
    import torch
    import torch.nn.functional as F
    r = kernels.shape[-1] // 2
    w = torch.from_numpy(np.ascontiguousarray(kernels)[:, None]).to(a)
    return F.conv2d(F.pad(a, (r, r, r, r), mode="reflect"), w, stride=stride)


def _information_t(ref: torch.Tensor, dist: torch.Tensor, window: int, border: int) -> tuple[torch.Tensor, ...]:
    """``_information`` for ``(N, 1, H, W)`` subbands -> (num, den), each ``(N,)``."""
    import torch
    import torch.nn.functional as F
    h, w = (ref.shape[-2] // M) * M, (ref.shape[-1] // M) * M
    x, y = ref[..., :h, :w], dist[..., :h, :w]
    n, r = window * window, window // 2

    def box(a: torch.Tensor) -> torch.Tensor:  # sums of windows centred on rows/columns 1, 4, 7, ...
        return F.avg_pool2d(F.pad(a.double(), (r, r, r, r), mode="reflect")[..., 1:, 1:], window, stride=M) * n

    sx, sy = box(x), box(y)
    cov = box(x * y) - sx * sy / n
    vx = (box(x * x) - sx * sx / n).clamp_min(0.0)
    vy = (box(y * y) - sy * sy / n).clamp_min(0.0)
    g, vv = _channel(cov, vx, vy, n, torch)

    p = torch.stack([x[:, 0, k : h - (M - 1 - k), j : w - (M - 1 - j)].flatten(1) for j in range(M) for k in range(M)],
                    dim=1)  # (N, 9, L)
    p = p.double()
    p = p - p.mean(dim=2, keepdim=True)
    cu = p @ p.transpose(1, 2) / p.shape[2]
    nb = x.shape[0]
    blocks = x[:, 0].reshape(nb, h // M, M, w // M, M).permute(0, 1, 3, 4, 2).reshape(nb, h // M, w // M, M * M)
    blocks = blocks.double()
    s = torch.einsum("nhwi,nij,nhwj->nhw", blocks, torch.linalg.inv(cu), blocks) / (M * M)
    lam = torch.linalg.eigvalsh(cu)  # (N, 9)
    g, vv = g[:, 0, border:-border, border:-border], vv[:, 0, border:-border, border:-border]
    s = s[:, border:-border, border:-border]
    lam = lam[:, None, None, :]
    num = _log2_terms(g * g * s / (vv + SIGMA_NSQ), lam).sum(dim=(1, 2))
    den = _log2_terms(s / SIGMA_NSQ, lam).sum(dim=(1, 2))
    return num, den


def _subbands_t(img: torch.Tensor) -> list[torch.Tensor]:
    lo, out = _corr_t(img.float(), LO0_FILT[None]), []
    bands = np.stack(BANDS)
    for _ in range(LEVELS):
        out.append(_corr_t(lo, bands))  # (N, 2, H, W)
        lo = _corr_t(lo, LO_FILT[None], stride=2)
    return out


def vif_torch(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``vif`` for ``(N, C, H, W)`` batches in [0, 1], ``x`` distorted, ``y`` reference; float64 ``(N,)``."""
    import torch
    _check(tuple(x.shape[-2:]), tuple(y.shape[-2:]))
    num = den = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
    for level, (rb, db) in enumerate(zip(_subbands_t(gray255_torch(y)), _subbands_t(gray255_torch(x)), strict=True)):
        for band in range(rb.shape[1]):
            a, b = _information_t(rb[:, band : band + 1], db[:, band : band + 1], WINDOWS[level], BORDERS[level])
            num, den = num + a, den + b
    return num / den
