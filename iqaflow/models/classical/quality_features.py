"""Hand-crafted quality features for the default NR scorer: one pure function, image -> vector.

The groups were kept for what they add to 5-fold cross-validated SRCC on the CLIVE subset at a CPU
cost of ~10-15 ms per 500x500 image (one core), see ``iqaflow evaluate-default --ablation``:

* BRISQUE natural-scene statistics (``iqaflow.models.classical.nss``) of the central regions and of the whole
  image at a quarter scale. People rate the subject, which is usually central: the same statistics of
  the centre half predict MOS better than those of the whole frame.
* Rotation-invariant uniform LBP histograms (8 neighbours, riu2: 10 bins) with a contrast threshold
  (local ternary style) at several scales and regions: micro-texture, which blur flattens and noise
  scrambles.
* Sharpness and noise: Laplacian energy over the frame and its 4x4 tiles (the sharpest tiles find a
  focused subject in front of a soft background), gradient percentiles, the Immerkaer noise response in
  flat areas; at two scales.
* Exposure (luminance percentiles, clipping, entropy), colour (colourfulness, saturation, cast) and
  JPEG blockiness (Wang-Sheikh-Bovik B, A, Z).

Intensities are in 8-bit units as in ``classical_nr``. Images are judged at the scale people saw in
the human study (about 500 px on the shorter side): larger ones are first reduced to it.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import cv2
import numpy as np

from iqaflow.models.classical.nr_extra import blockiness_stats
from iqaflow.models.classical.nss import brisque_features

# Bump when a feature changes: weights record it and refuse to run on a different definition.
FEATURES_VERSION = 1
# The human study showed images at ~500x500; the shorter side of larger images is reduced to this.
WORKING_SIDE = 500
MIN_SIDE = 48  # the centre third must still hold BRISQUE's 16x16 minimum

_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_OPPONENT = np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0], [0.0, 0.0, 0.0]], dtype=np.float32)
_MAX_CACHED = 64 << 20


class _Scratch(threading.local):
    """Per-thread planes reused between images. Fresh megabyte-sized temporaries are returned to the OS
    and faulted in again on every call, which made the features 3-4x slower than their arithmetic."""

    def __init__(self) -> None:
        self.planes: dict[tuple, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        key = (name, shape, np.dtype(dtype).str)
        buf = self.planes.pop(key, None)
        if buf is None:
            buf = np.empty(shape, dtype=dtype)
        self.planes[key] = buf  # most recently used last
        while sum(b.nbytes for b in self.planes.values()) > _MAX_CACHED and len(self.planes) > 1:
            self.planes.pop(next(iter(self.planes)))
        return buf


_SCRATCH = _Scratch()


def _riu2_table() -> np.ndarray:
    """8-bit LBP code -> rotation-invariant uniform class: the number of set bits if at most two 0/1
    transitions round the circle (0-8), else 9."""
    table = np.zeros(256, dtype=np.uint8)
    for code in range(256):
        bits = [(code >> k) & 1 for k in range(8)]
        transitions = sum(bits[k] != bits[(k + 1) % 8] for k in range(8))
        table[code] = sum(bits) if transitions <= 2 else 9
    return table


_RIU2 = _riu2_table()


def lbp_histograms(img255: np.ndarray, thresholds: tuple[float, ...], radius: int = 1) -> np.ndarray:
    """riu2 LBP histograms (10 bins, normalised) of an 8-bit-scaled gray image, one per threshold.

    A neighbour sets its bit when it is at least ``centre + t``: with t > 0 (8-bit units) the codes
    ignore differences smaller than t, so sensor noise and genuine texture fall into different bins.
    """
    h, w = img255.shape
    r = radius
    centre_px = img255[r : h - r, r : w - r]
    shape = centre_px.shape
    if min(shape) < 1:
        return np.full(10 * len(thresholds), np.nan)
    neighbours = [img255[r + dy * r : h - r + dy * r, r + dx * r : w - r + dx * r] for dy, dx in _OFFSETS]
    code, mask = _SCRATCH.get("lbp_code", shape, np.uint8), _SCRATCH.get("lbp_mask", shape, np.uint8)
    ref, cls = _SCRATCH.get("lbp_ref", shape), _SCRATCH.get("lbp_class", shape, np.uint8)
    out = np.empty((len(thresholds), 10))
    for i, t in enumerate(thresholds):
        cv2.add(centre_px, float(t), dst=ref)
        code.fill(0)
        for k, nb in enumerate(neighbours):
            cv2.compare(nb, ref, cv2.CMP_GE, dst=mask)
            cv2.bitwise_or(code, cv2.bitwise_and(mask, 1 << k, dst=mask), dst=code)
        cv2.LUT(code, _RIU2, dst=cls)
        hist = cv2.calcHist([cls], [0], None, [10], [0, 10]).ravel()
        out[i] = hist / max(float(hist.sum()), 1.0)
    return out.ravel()


def _log(x: float) -> float:
    return math.log(max(float(x), 0.0) + 1e-3)


def _tile_means(plane: np.ndarray, n: int = 4) -> np.ndarray:
    h, w = plane.shape
    th, tw = h // n, w // n
    return cv2.resize(plane[: th * n, : tw * n], (n, n), interpolation=cv2.INTER_AREA).ravel()


def sharpness_noise(img255: np.ndarray) -> np.ndarray:
    """10 values: log Laplacian energy (frame; sharpest tile; mean of the 4 sharpest and 4 softest of
    4x4 tiles; tile spread), log gradient (mean, median, p90), log Immerkaer noise response (flat
    quarter of pixels by gradient; all pixels)."""
    shape = img255.shape
    lap, gx, gy = (_SCRATCH.get(n, shape) for n in ("sn_lap", "sn_gx", "sn_gy"))
    flat = _SCRATCH.get("sn_flat", shape, np.uint8)
    cv2.Laplacian(img255, cv2.CV_32F, dst=lap, ksize=1, borderType=cv2.BORDER_REFLECT)
    cv2.multiply(lap, lap, dst=lap)
    energy = cv2.mean(lap)[0]
    tiles = np.sort(np.log(_tile_means(lap) + 1e-3))
    cv2.Sobel(img255, cv2.CV_32F, 1, 0, dst=gx, ksize=3, borderType=cv2.BORDER_REFLECT)
    cv2.Sobel(img255, cv2.CV_32F, 0, 1, dst=gy, ksize=3, borderType=cv2.BORDER_REFLECT)
    cv2.absdiff(gx, 0, dst=gx)
    cv2.absdiff(gy, 0, dst=gy)
    grad = cv2.add(gx, gy, dst=gx)
    sub = grad[::4, ::4].ravel()  # a copy: strided
    ks = (sub.size // 4, sub.size // 2, sub.size * 9 // 10)
    part = np.partition(sub, ks)
    q25, q50, q90 = (float(part[k]) for k in ks)
    resp = cv2.filter2D(img255, cv2.CV_32F, _IMMERKAER, dst=lap, borderType=cv2.BORDER_REFLECT)
    cv2.absdiff(resp, 0, dst=resp)
    cv2.compare(grad, q25, cv2.CMP_LE, dst=flat)
    noise_flat = cv2.mean(resp, mask=flat)[0] if cv2.countNonZero(flat) else 0.0
    return np.array([
        _log(energy), tiles[-1], tiles[-4:].mean(), tiles[:4].mean(), tiles.std(),
        _log(cv2.mean(grad)[0]), _log(q50), _log(q90), _log(noise_flat), _log(cv2.mean(resp)[0]),
    ])


def half(img: np.ndarray, name: str) -> np.ndarray:
    """Area-average downscale by two (odd last rows/columns dropped), into a scratch plane."""
    h, w = img.shape[:2]
    size = (max(1, w // 2), max(1, h // 2))
    dst = _SCRATCH.get(name, (size[1], size[0], *img.shape[2:]), img.dtype.type)
    return cv2.resize(img, size, dst=dst, interpolation=cv2.INTER_AREA)


def centre(img: np.ndarray, fraction: float, name: str) -> np.ndarray:
    """The central ``fraction`` of each side, copied into a contiguous scratch plane."""
    h, w = img.shape[:2]
    dh, dw = round(h * (1 - fraction) / 2), round(w * (1 - fraction) / 2)
    view = img[dh : h - dh, dw : w - dw]
    dst = _SCRATCH.get(name, view.shape, img.dtype.type)
    np.copyto(dst, view)
    return dst


def _scaled255(img: np.ndarray, name: str) -> np.ndarray:
    return cv2.multiply(img, 255.0, dst=_SCRATCH.get(name, img.shape))


class _Views:
    """The planes every group reads, made once per image (scratch planes: valid until the next image)."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.rgb = rgb
        self.g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY, dst=_SCRATCH.get("g", rgb.shape[:2]))
        self.g2 = half(self.g, "g2")
        self.g4 = half(self.g2, "g4")
        self.c = centre(self.g, 0.5, "c")
        self.c3 = centre(self.g, 1 / 3, "c3")
        self.c2 = centre(self.g2, 0.5, "c2")
        self.g255 = _scaled255(self.g, "g255")
        self.g2_255 = _scaled255(self.g2, "g2_255")
        self.c255 = _scaled255(self.c, "c255")
        self.c3_255 = _scaled255(self.c3, "c3_255")
        self.c2_255 = _scaled255(self.c2, "c2_255")


def _colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003), as ``classical_nr_extra.colourfulness``, into a scratch plane."""
    opp = cv2.transform(rgb, _OPPONENT, dst=_SCRATCH.get("opp", rgb.shape))
    mean, std = cv2.meanStdDev(opp)
    mu, sd = mean.ravel()[:2] * 255, std.ravel()[:2] * 255
    return float(math.hypot(sd[0], sd[1]) + 0.3 * math.hypot(mu[0], mu[1]))


def _exposure(v: _Views) -> np.ndarray:
    g8 = cv2.convertScaleAbs(v.g, dst=_SCRATCH.get("g8", v.g.shape, np.uint8), alpha=255)
    hist = cv2.calcHist([g8], [0], None, [256], [0, 256]).ravel()
    cdf = np.cumsum(hist) / max(float(hist.sum()), 1.0)
    pct = np.searchsorted(cdf, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]) / 255
    p32 = hist.reshape(32, 8).sum(1) / max(float(hist.sum()), 1.0)
    entropy = -float((p32[p32 > 0] * np.log(p32[p32 > 0])).sum())
    mean, std = cv2.meanStdDev(v.g)
    cmean, cstd = cv2.meanStdDev(v.c)
    return np.array([mean[0, 0], std[0, 0], *pct, cdf[4], 1 - cdf[249], entropy, cmean[0, 0], cstd[0, 0]])


def _colour(v: _Views) -> np.ndarray:
    hsv = cv2.cvtColor(v.rgb, cv2.COLOR_RGB2HSV, dst=_SCRATCH.get("hsv", v.rgb.shape))
    sat_mean, sat_std = cv2.meanStdDev(hsv[:, :, 1].copy())
    channel = np.array(cv2.mean(v.rgb)[:3])
    return np.array([_colourfulness(v.rgb) / 100, sat_mean[0, 0], sat_std[0, 0], *(channel - channel.mean()),
                     _colourfulness(centre(v.rgb, 0.5, "rgb_c")) / 100])


def _blockiness(v: _Views) -> np.ndarray:
    b = blockiness_stats(v.c)  # the centre holds plenty of 8x8 blocks at a quarter of the cost
    return np.nan_to_num(np.array([b[0], b[1] / 10, _log(b[2]), _log(b[3]), b[4]]))


def _sharpness(v: _Views) -> np.ndarray:
    full, halved = sharpness_noise(v.g255), sharpness_noise(v.g2_255)
    return np.concatenate([full, halved, [full[0] - halved[0]]])


# name -> (function of the views, length). Order is part of the weights' contract (FEATURES_VERSION).
GROUPS: dict[str, tuple[Callable[[_Views], np.ndarray], int]] = {
    "nss_centre": (lambda v: brisque_features(v.c), 36),
    "nss_centre_third": (lambda v: brisque_features(v.c3), 36),
    "nss_centre_half_scale": (lambda v: brisque_features(v.c2)[:18], 18),
    "nss_quarter_scale": (lambda v: brisque_features(v.g4)[:18], 18),
    "lbp_frame_half_scale": (lambda v: lbp_histograms(v.g2_255, (0, 4)), 20),
    "lbp_centre_radius2": (lambda v: lbp_histograms(v.c255, (0, 2), radius=2), 20),
    "lbp_centre_third": (lambda v: lbp_histograms(v.c3_255, (0, 1, 2, 4)), 40),
    "lbp_centre_half_scale": (lambda v: lbp_histograms(v.c2_255, (0, 2, 4)), 30),
    "sharpness": (_sharpness, 21),
    "sharpness_centre": (lambda v: sharpness_noise(v.c255), 10),
    "exposure": (_exposure, 14),
    "colour": (_colour, 7),
    "blockiness": (_blockiness, 5),
}
N_FEATURES = sum(n for _, n in GROUPS.values())


def feature_names() -> list[str]:
    return [f"{name}.{i}" for name, (_, n) in GROUPS.items() for i in range(n)]


def group_slices() -> dict[str, slice]:
    out, start = {}, 0
    for name, (_, n) in GROUPS.items():
        out[name] = slice(start, start + n)
        start += n
    return out


def working_scale(rgb: np.ndarray, side: int = WORKING_SIDE) -> np.ndarray:
    """Reduce (area average) so the shorter side is ``side`` when it is more than 25% larger; else as is."""
    h, w = rgb.shape[:2]
    short = min(h, w)
    if short <= side * 1.25:
        return rgb
    s = side / short
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def quality_features(rgb: np.ndarray) -> np.ndarray:
    """The ``N_FEATURES`` features of an RGB float32 image in [0, 1]; all NaN below ``MIN_SIDE`` pixels."""
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[:, :, None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
    if min(rgb.shape[:2]) < MIN_SIDE:
        return np.full(N_FEATURES, np.nan)
    views = _Views(np.ascontiguousarray(working_scale(rgb)))
    out = np.empty(N_FEATURES)
    start = 0
    for name, (fn, n) in GROUPS.items():
        values = np.asarray(fn(views), dtype=np.float64)
        if values.shape != (n,):
            raise RuntimeError(f"feature group {name!r} returned {values.shape}, expected ({n},)")
        out[start : start + n] = values
        start += n
    return out
