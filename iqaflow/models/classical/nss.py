"""Natural-scene statistics: MSCN coefficients, GGD/AGGD fits, BRISQUE and NIQE.

Conventions follow the authors' published MATLAB code (Mittal, Moorthy & Bovik, BRISQUE, IEEE TIP
2012; Mittal, Soundararajan & Bovik, NIQE, IEEE SPL 2013), so that fitted parameters mean the same:

* luminance in 8-bit units, rounded as MATLAB's ``rgb2gray`` on uint8 does;
* local mean/deviation with a 7x7 Gaussian window (sigma 7/6) and C = 1; BRISQUE pads with
  zeros (``filter2 'same'``), NIQE replicates edges (``imfilter 'replicate'``);
* neighbour products use circular shifts: over the whole image (BRISQUE) and within each patch (NIQE);
* the second scale is MATLAB's ``imresize(x, 0.5)``: antialiased bicubic (a = -0.5), mirrored edges;
* shape parameters are the nearest point of the grid 0.2:0.001:10 by moment ratio.

Every fit needs only per-tile sums (of x, max(x, 0), their squares and the count of positives), so
features come from whole-array OpenCV/BLAS passes into reused scratch planes, with no per-patch
Python loop: 12-20 ms for a 1024x768 image on one core, depending on the CPU. Scratch memory is
~9 float32 planes of the image (~0.9 GB at 24 MP), per thread.

The scorers built on these features are in ``nss_scorers``.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np
from scipy.special import gammaln

GAMMA_GRID = np.linspace(0.2, 10.0, 9801)
_LG1, _LG2, _LG3 = gammaln(1 / GAMMA_GRID), gammaln(2 / GAMMA_GRID), gammaln(3 / GAMMA_GRID)
# GGD: E[x^2] / E[|x|]^2 as a function of the shape (decreasing); AGGD uses its inverse (increasing).
GGD_RATIO = np.exp(_LG1 + _LG3 - 2 * _LG2)
AGGD_RATIO = np.exp(2 * _LG2 - _LG1 - _LG3)
SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))
NIQE_PATCH = 96
NIQE_FEATURES = 36
BRISQUE_FEATURES = 36


def _gauss_kernel(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    k = np.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).astype(np.float32)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic')."""
    ax = np.abs(x)
    outer = np.where(ax <= 2, -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2, 0)
    return np.where(ax <= 1, 1.5 * ax**3 - 2.5 * ax**2 + 1, outer)


_WINDOW = _gauss_kernel()
_BOX = np.ones((7, 7), dtype=np.uint8)
# imresize(x, 0.5): output j (0-based) sits at input 2j + 0.5; the antialiased kernel is cubic(d / 2) / 2
# over taps 2j-3 .. 2j+4, normalised.
_HALF = _cubic(0.5 * (0.5 - np.arange(-3, 5)))
_HALF = (_HALF / _HALF.sum()).astype(np.float32)
_MAX_CACHED = 256 << 20
_FEW_ZEROS = 4096


class _Workspace(threading.local):
    """Per-thread scratch planes by shape, kept between images (most recent first, at most
    ``_MAX_CACHED`` bytes): fresh multi-megabyte temporaries cost more in page faults than the arithmetic."""

    def __init__(self) -> None:
        self.buffers: dict[tuple[int, ...], np.ndarray] = {}

    def get(self, shape: tuple[int, ...], n: int) -> np.ndarray:
        key = (n, *shape)
        buf = self.buffers.pop(key, None)
        if buf is None:
            buf = np.empty(key, dtype=np.float32)
        self.buffers[key] = buf
        while sum(b.nbytes for b in self.buffers.values()) > _MAX_CACHED:
            self.buffers.pop(next(iter(self.buffers)))  # oldest first; may drop ``buf`` itself, still returned
        return buf


_WS = _Workspace()


def to_luma255(gray: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Gray in [0, 1] -> float32 8-bit luminance rounded like MATLAB's uint8 ``rgb2gray``."""
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2:
        raise ValueError(f"expected a gray image (H, W), got shape {gray.shape}")
    out = np.multiply(gray, np.float32(255), out=out)
    return np.rint(out, out=out)


def imresize_half(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)`` (bicubic, antialiased, symmetric edges); output ceil(H/2) x ceil(W/2)."""
    img = np.asarray(img, dtype=np.float32)
    t = cv2.filter2D(img, cv2.CV_32F, _HALF[None, :], anchor=(3, 0), borderType=cv2.BORDER_REFLECT)
    t = cv2.filter2D(np.ascontiguousarray(t[:, ::2]), cv2.CV_32F, _HALF[:, None], anchor=(0, 3),
                     borderType=cv2.BORDER_REFLECT)
    return np.ascontiguousarray(t[::2])


def flat_windows(img: np.ndarray, border: int = cv2.BORDER_CONSTANT, integral: bool = False) -> np.ndarray:
    """uint8 mask, 255 where the whole 7x7 window (padding included) holds one value.

    ``integral``: the values are whole numbers in 0..255, so the cheaper uint8 morphology gives the same answer.
    """
    if integral:
        img = img.astype(np.uint8)
    hi = cv2.dilate(img, _BOX, borderType=border, borderValue=0)
    lo = cv2.erode(img, _BOX, borderType=border, borderValue=0)
    return cv2.compare(hi, lo, cv2.CMP_EQ)


def _mscn_into(img: np.ndarray, border: int, c: float, ws: np.ndarray, integral: bool) -> tuple[np.ndarray, ...]:
    """MSCN into ws[3] and local deviation into ws[2]; ws[0:2] are scratch. OpenCV ops: no temporaries."""
    t, mu, sigma, out = ws[0], ws[1], ws[2], ws[3]
    cv2.multiply(img, img, dst=t)
    cv2.sepFilter2D(img, cv2.CV_32F, _WINDOW, _WINDOW, dst=mu, borderType=border)
    cv2.sepFilter2D(t, cv2.CV_32F, _WINDOW, _WINDOW, dst=sigma, borderType=border)
    cv2.multiply(mu, mu, dst=t)
    cv2.absdiff(sigma, t, dst=sigma)  # |E[x^2] - E[x]^2|, as the reference codes
    cv2.sqrt(sigma, dst=sigma)
    cv2.subtract(img, mu, dst=out)
    cv2.add(sigma, c, dst=t)
    cv2.divide(out, t, dst=out)
    flat = flat_windows(img, border, integral)
    if cv2.countNonZero(flat):
        cv2.subtract(out, out, dst=out, mask=flat)  # exact zeros where flat, in one masked pass
    return out, sigma


def mscn(img: np.ndarray, border: int = cv2.BORDER_CONSTANT, c: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalised coefficients and the local deviation map of an 8-bit-scaled image.

    Where the window is flat the coefficient is set to exactly 0: filtering leaves rounding residue
    there (about 1e-5 in float32, 1e-14 in float64) whose random sign the AGGD fits would otherwise
    count as data. The reference codes count that residue; this is the one deliberate difference.
    """
    img = np.ascontiguousarray(img, dtype=np.float32)
    integral = bool(np.array_equal(img, np.rint(img)) and img.min() >= 0 and img.max() <= 255)
    m, sigma = _mscn_into(img, border, c, np.empty((4, *img.shape), dtype=np.float32), integral)
    return m.copy(), sigma.copy()


def _nearest_shape(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Grid shape whose ``table`` value (increasing) is nearest to each value; NaN stays NaN."""
    v = np.asarray(values, dtype=np.float64)
    idx = np.clip(np.searchsorted(table, v), 1, len(table) - 1)
    lower = np.abs(v - table[idx - 1]) <= np.abs(table[idx] - v)  # ties go to the smaller shape, as argmin
    out = GAMMA_GRID[np.where(lower, idx - 1, idx)]
    return np.where(np.isnan(v), np.nan, out)


def ggd_from_moments(mean_abs: np.ndarray, mean_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-mean GGD (shape, variance) by moment matching: rho = E[x^2] / E[|x|]^2."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.asarray(mean_sq, dtype=np.float64) / np.square(mean_abs)
    return _nearest_shape(-rho, -GGD_RATIO), np.asarray(mean_sq, dtype=np.float64)


def aggd_from_moments(
    n_neg: np.ndarray, n_pos: np.ndarray, sq_neg: np.ndarray, sq_pos: np.ndarray, mean_abs: np.ndarray,
    mean_sq: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD (shape, left std, right std) from counts and sums of squares of each side (Lasmar et al. 2009)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.sqrt(sq_neg / n_neg)
        right = np.sqrt(sq_pos / n_pos)
        g = left / right
        r = np.square(mean_abs) / mean_sq
        r_norm = r * (g**3 + 1) * (g + 1) / np.square(g**2 + 1)
    return _nearest_shape(r_norm, AGGD_RATIO), left, right


def ggd_fit(x: np.ndarray) -> tuple[float, float]:
    """(shape, variance) of a zero-mean generalised Gaussian fitted to ``x``."""
    x = np.asarray(x, dtype=np.float64).ravel()
    alpha, var = ggd_from_moments(np.abs(x).mean(), np.square(x).mean())
    return float(alpha), float(var)


def aggd_fit(x: np.ndarray) -> tuple[float, float, float]:
    """(shape, left std, right std) of an asymmetric generalised Gaussian fitted to ``x``."""
    x = np.asarray(x, dtype=np.float64).ravel()
    neg, pos = x[x < 0], x[x > 0]
    alpha, left, right = aggd_from_moments(
        neg.size, pos.size, np.square(neg).sum(), np.square(pos).sum(), np.abs(x).mean(), np.square(x).mean()
    )
    return float(alpha), float(left), float(right)


def circshift(a: np.ndarray, dy: int, dx: int, block: tuple[int, int] | None = None) -> np.ndarray:
    """``np.roll(a, (dy, dx), axis=(0, 1))`` applied inside each ``block`` tile (dy, dx in -1..1)."""
    bh, bw = block or a.shape
    out = a
    if dx:
        out, src = np.empty_like(a), out
        if dx > 0:
            out[:, 1:], out[:, ::bw] = src[:, :-1], src[:, bw - 1 :: bw]
        else:
            out[:, :-1], out[:, bw - 1 :: bw] = src[:, 1:], src[:, ::bw]
    if dy:
        out, src = np.empty_like(a), out
        if dy > 0:
            out[1:], out[::bh] = src[:-1], src[bh - 1 :: bh]
        else:
            out[:-1], out[bh - 1 :: bh] = src[1:], src[::bh]
    return out


def _pair_product(m: np.ndarray, dy: int, dx: int, bh: int, bw: int, out: np.ndarray) -> np.ndarray:
    """``m * circshift(m, dy, dx, (bh, bw))`` without the shifted copy (dx in 0..1)."""
    h, w = m.shape
    ys, ys_src = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h - max(dy, 0))
    cv2.multiply(m[ys, dx:], m[ys_src, : w - dx], dst=out[ys, dx:])  # numpy is 4x slower on offset views
    # Tile edges whose partner wraps round inside the tile: first columns, then first/last rows.
    if dx:
        np.multiply(m[:, ::bw], circshift(m[:, bw - 1 :: bw], dy, 0, (bh, 1)), out=out[:, ::bw])
    if dy:
        row, src = (0, bh - 1) if dy > 0 else (bh - 1, 0)
        np.multiply(m[row::bh], circshift(m[src::bh], 0, dx, (1, bw)), out=out[row::bh])
    return out


def _tile_sums(planes: np.ndarray, bh: int, bw: int) -> np.ndarray:
    k, h, w = planes.shape
    rows = _ones(bh) @ planes.reshape(k * (h // bh), bh, w)  # BLAS: faster than ndarray.sum over axis 1
    return rows.reshape(k, h // bh, w // bw, bw).sum(axis=3, dtype=np.float64)


def _ones(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.float32)


def _tile_moments(
    x: np.ndarray, stack: np.ndarray, bh: int, bw: int, zeros: np.ndarray | bool
) -> tuple[np.ndarray, ...]:
    """Per ``bh`` x ``bw`` tile of ``x``: (n_neg, n_pos, sum_sq_neg, sum_sq_pos, mean_abs, mean_sq).

    Exact zeros count on neither side. ``zeros``: False if x has none, per-tile counts if known,
    True to count them here. Planes written to ``stack``: max(x, 0), and for tiles smaller than
    the image [x > 0] and, when counting zeros, [x < 0].
    """
    h, w = x.shape
    n = bh * bw
    pos = cv2.threshold(x, 0, 0, cv2.THRESH_TOZERO, dst=stack[0])[1]
    if (bh, bw) == (h, w):  # one tile: OpenCV reductions with double accumulators, no extra plane
        s_x, s_pos = np.array([[cv2.sumElems(x)[0]]]), np.array([[cv2.sumElems(pos)[0]]])
        s_x2, s_pos2 = np.array([[cv2.norm(x, cv2.NORM_L2SQR)]]), np.array([[cv2.norm(pos, cv2.NORM_L2SQR)]])
        n_pos = np.array([[float(cv2.countNonZero(pos))]])
        n_neg = (cv2.countNonZero(x) if zeros is not False else n) - n_pos
    else:
        cv2.threshold(x, 0, 1, cv2.THRESH_BINARY, dst=stack[1])
        k = 2
        if zeros is True:
            cv2.threshold(x, -1e-30, 1, cv2.THRESH_BINARY_INV, dst=stack[2])
            k = 3
        s = _tile_sums(stack[:k], bh, bw)
        s_pos, n_pos = s[0], s[1]
        n_neg = s[2] if k == 3 else n - n_pos - (0 if zeros is False else zeros)
        s_x = _tile_sums(x[None], bh, bw)[0]
        s_x2, s_pos2 = _tile_sq_sums(x, bh, bw), _tile_sq_sums(pos, bh, bw)
    return n_neg, n_pos, s_x2 - s_pos2, s_pos2, (2 * s_pos - s_x) / n, s_x2 / n


def _tile_sq_sums(x: np.ndarray, bh: int, bw: int) -> np.ndarray:
    h, w = x.shape
    x3 = x.reshape(h // bh, bh, w)
    return np.einsum("ijk,ijk->ik", x3, x3).reshape(h // bh, w // bw, bw).sum(axis=2, dtype=np.float64)


def _zero_counts(
    zr: np.ndarray, zc: np.ndarray, shape: tuple[int, int], bh: int, bw: int, shift: tuple[int, int] | None
) -> np.ndarray:
    """Per-tile count of zeros in ``m`` (``shift`` None) or in ``m * circshift(m, shift)``, from the
    (row, col) positions of m's zeros: a product is 0 where either factor is. Rare, so index arithmetic."""
    h, w = shape
    rows, cols = zr, zc
    if shift is not None:
        dy, dx = shift  # the product at p is 0 if m[p] == 0 or m at p's partner (p - shift, in-tile) is 0
        pr = zr - zr % bh + (zr % bh + dy) % bh
        pc = zc - zc % bw + (zc % bw + dx) % bw
        rows, cols = np.concatenate([zr, pr]), np.concatenate([zc, pc])
    flat = np.unique(rows * w + cols)
    tiles = (flat // w // bh) * (w // bw) + (flat % w) // bw
    return np.bincount(tiles, minlength=(h // bh) * (w // bw)).reshape(h // bh, w // bw).astype(np.float64)


def _scale_features(
    img: np.ndarray, border: int, bh: int, bw: int, niqe: bool, integral: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The 18 features of one scale for every tile, ``(18, H/bh, W/bw)``, and the local-deviation map
    (a scratch plane: valid until the next call)."""
    ws = _WS.get(img.shape, 8)
    m, sigma = _mscn_into(img, border, 1.0, ws, integral)
    prod, stack = ws[4], ws[5:8]
    # Exact zeros (flat windows, or a pixel equal to its local mean): a few are located and counted
    # per tile by index; many (flat skies, clipped areas) are counted from a plane instead.
    n_zeros = m.size - cv2.countNonZero(m)
    zr, zc = np.nonzero(m == 0) if 0 < n_zeros <= _FEW_ZEROS else (None, None)

    def zeros(shift: tuple[int, int] | None) -> np.ndarray | bool:
        if n_zeros == 0 or (bh, bw) == m.shape:
            return n_zeros > 0
        return _zero_counts(zr, zc, m.shape, bh, bw, shift) if zr is not None else True

    moments = [_tile_moments(m, stack, bh, bw, zeros(None))]
    for dy, dx in SHIFTS:
        pair = _pair_product(m, dy, dx, bh, bw, prod)
        moments.append(_tile_moments(pair, stack, bh, bw, zeros((dy, dx))))
    # One vectorised fit for the MSCN and its four neighbour products (row 0 and rows 1-4).
    n_neg, n_pos, sq_neg, sq_pos, mean_abs, mean_sq = (np.stack(v) for v in zip(*moments, strict=True))
    alpha, left, right = aggd_from_moments(n_neg, n_pos, sq_neg, sq_pos, mean_abs, mean_sq)
    g1, g2, g3 = gammaln(1 / alpha), gammaln(2 / alpha), gammaln(3 / alpha)
    if niqe:  # AGGD scale parameters beta = std * sqrt(G(1/a) / G(3/a)), and the mean they imply
        k = np.exp(0.5 * (g1 - g3))
        bl, br = left * k, right * k
        first = [alpha[0], (bl[0] + br[0]) / 2]
        pairs = [alpha[1:], (br - bl)[1:] * np.exp(g2 - g1)[1:], bl[1:], br[1:]]
    else:  # BRISQUE: a GGD (shape, variance) for the MSCN; side variances and the same mean for products
        first = list(ggd_from_moments(mean_abs[0], mean_sq[0]))
        pairs = [alpha[1:], (right - left)[1:] * np.exp(g2 - 0.5 * (g1 + g3))[1:], left[1:] ** 2, right[1:] ** 2]
    # Order per shift: shape, mean, left, right.
    return np.concatenate([np.stack(first), np.stack(pairs, axis=1).reshape(16, *alpha.shape[1:])]), sigma


def brisque_features(gray: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features (18 per scale, 2 scales) of a gray image in [0, 1]; NaN below 16x16 pixels."""
    img = to_luma255(gray, _WS.get(np.shape(gray), 1)[0])
    if min(img.shape) < 16:
        return np.full(BRISQUE_FEATURES, np.nan)
    f1, _ = _scale_features(img, cv2.BORDER_CONSTANT, *img.shape, niqe=False, integral=True)
    half = imresize_half(img)
    f2, _ = _scale_features(half, cv2.BORDER_CONSTANT, *half.shape, niqe=False, integral=False)
    return np.concatenate([f1.ravel(), f2.ravel()])


def niqe_patch_features(gray: np.ndarray, patch: int = NIQE_PATCH) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch NIQE features ``(P, 36)`` and patch sharpness ``(P,)`` (mean local deviation at scale 1).

    The image is cropped to whole ``patch`` x ``patch`` tiles, as the reference code does; an image
    smaller than one tile has no patches.
    """
    return niqe_patch_features_255(to_luma255(gray, _WS.get(np.shape(gray), 1)[0]), patch)


def niqe_patch_features_255(img: np.ndarray, patch: int = NIQE_PATCH) -> tuple[np.ndarray, np.ndarray]:
    """``niqe_patch_features`` of a float32 luminance image already in 8-bit units (whole numbers 0-255)."""
    if patch % 2 or patch < 8:
        raise ValueError(f"NIQE patch size must be even and >= 8 (it is halved at the second scale), got {patch}")
    nby, nbx = img.shape[0] // patch, img.shape[1] // patch
    if nby == 0 or nbx == 0:
        return np.empty((0, NIQE_FEATURES)), np.empty(0)
    img = img[: nby * patch, : nbx * patch]  # a view: OpenCV and numpy take the row stride
    f1, sigma = _scale_features(img, cv2.BORDER_REPLICATE, patch, patch, niqe=True, integral=True)
    sharp = _tile_sums(sigma[None], patch, patch)[0].ravel() / patch**2
    b = patch // 2
    f2, _ = _scale_features(imresize_half(img), cv2.BORDER_REPLICATE, b, b, niqe=True, integral=False)
    return np.concatenate([f1, f2]).reshape(NIQE_FEATURES, -1).T, sharp


def _pinv(a: np.ndarray) -> np.ndarray:
    # MATLAB's pinv tolerance: max(size) * eps(norm(a)).
    return np.linalg.pinv(a, rcond=max(a.shape) * np.finfo(np.float64).eps)


def niqe_distance(features: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> float:
    """NIQE: distance between the pristine MVG (mu, cov) and the MVG of an image's patch features.

    Patches with an undefined feature (flat patches) are left out; with fewer than two patches the
    image's own covariance is taken as zero; with none the score is NaN.
    """
    f = features[~np.isnan(features).any(axis=1)]
    if len(f) == 0:
        return float("nan")
    cov_d = np.cov(f, rowvar=False) if len(f) > 1 else np.zeros_like(cov)
    d = mu - f.mean(axis=0)
    return float(np.sqrt(max(0.0, d @ _pinv((cov + cov_d) / 2) @ d)))


def rbf_predict(features: np.ndarray, model: dict[str, np.ndarray]) -> np.ndarray:
    """Kernel regression ``bias + sum_i dual_i exp(-gamma |x - s_i|^2)`` on min/max-scaled features."""
    x = np.atleast_2d(features)
    lo, hi = model["lo"], model["hi"]
    x = 2 * (x - lo) / np.where(hi > lo, hi - lo, 1.0) - 1
    s = model["support"]
    d2 = np.square(x).sum(1)[:, None] + np.square(s).sum(1)[None, :] - 2 * x @ s.T
    return model["bias"] + np.exp(-model["gamma"] * np.maximum(d2, 0)) @ model["dual"]
