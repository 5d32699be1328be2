"""More cheap classical no-reference measures: JPEG blockiness, colourfulness, contrast.

Pure functions first, then thin registered scorers. Like ``classical_nr``, intensities are reported
in 8-bit units (0-255) where the literature does, so published thresholds keep their meaning.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from iqaflow.models.base import PerImageScorer, ScorerInfo
from iqaflow.models.registry import register

# Wang, Sheikh & Bovik (2002), "No-reference perceptual quality assessment of JPEG compressed images",
# ICIP: S = alpha + beta * B^g1 * A^g2 * Z^g3, fitted to MOS on a 1-10 scale. The paper prints the
# constants rounded (-245.9, 261.9, -0.0240, 0.0160, 0.0064); these are the authors' unrounded ones.
_WSB_ALPHA, _WSB_BETA = -245.8909, 261.9373
_WSB_GAMMA = (-0.02398886, 0.01601664, 0.00642859)
_BLOCK = 8
_EPS = 1e-3  # 8-bit units: keeps a perfectly flat image at 1


def _axis_stats(d: np.ndarray, absd: np.ndarray, along_rows: bool) -> tuple[float, float, float, float, float]:
    """One direction: (grid excess, median profile, B, A, Z), differences in the units of ``d``.

    ``along_rows``: the differences are between horizontal neighbours (columns of ``d`` are positions).
    """
    dim = 0 if along_rows else 1  # cv2.reduce collapses this dimension, leaving one value per position
    profile = cv2.reduce(absd, dim, cv2.REDUCE_AVG, dtype=cv2.CV_64F).ravel()
    # How far each position stands above its two neighbours; the median per phase (position mod 8)
    # ignores isolated strong edges, which a mean would let pose as a grid.
    excess = profile[1:-1] - 0.5 * (profile[:-2] + profile[2:])
    phases = np.arange(1, profile.size - 1) % _BLOCK
    scores = [float(np.median(excess[phases == k])) for k in range(_BLOCK)]
    grid = int(np.argmax(scores))
    # Wang-Sheikh-Bovik at that grid: B, mean |d| at the boundaries; A, inside blocks; Z, sign changes.
    big_b = float(profile[grid::_BLOCK].mean())
    big_a = (_BLOCK * float(profile.mean()) - big_b) / (_BLOCK - 1)
    prod = cv2.multiply(d[:, :-1], d[:, 1:]) if along_rows else cv2.multiply(d[:-1], d[1:])
    big_z = cv2.countNonZero(cv2.compare(prod, 0, cv2.CMP_LT)) / prod.size
    return scores[grid], float(np.median(profile)), big_b, big_a, big_z


def blockiness_stats(gray: np.ndarray) -> tuple[float, float, float, float, float]:
    """(blockiness, Wang-Sheikh-Bovik JPEG quality, B, A, Z) of a gray image in [0, 1].

    Per direction, the mean absolute neighbour difference of every column (row) is compared with
    its two neighbours'; the block grid is the position modulo 8 whose median excess is largest
    (JPEG's own grid for an uncropped file, wherever a crop moved it otherwise). Blockiness is
    1 + that excess over the median column (row) difference, both directions pooled: about 1.00-1.05
    for uncompressed photographs, 1.1-1.3 for JPEG quality 90-75, rising without bound as blocks
    flatten. The JPEG quality is Wang, Sheikh & Bovik's (2002) S from B (mean |difference| across
    the grid), A (inside blocks) and Z (sign-change rate), averaged over directions, B and A in 8-bit
    units: about 1 (worst) to 10 (best); NaN where B, A or Z is 0. All are NaN below 16x16 pixels.
    """
    x = np.asarray(gray, dtype=np.float32)
    h, w = x.shape
    if h < 2 * _BLOCK or w < 2 * _BLOCK:
        return (math.nan,) * 5
    stats = []
    for along_rows, (a, b) in ((True, (x[:, 1:], x[:, :-1])), (False, (x[1:], x[:-1]))):
        stats.append(_axis_stats(cv2.subtract(a, b), cv2.absdiff(a, b), along_rows))
    excess, median, big_b, big_a, big_z = (np.array(v) for v in zip(*stats, strict=True))
    blockiness = 1.0 + float(excess.sum()) * 255 / (float(median.sum()) * 255 + _EPS)
    big_b, big_a, big_z = float(big_b.mean()) * 255, float(big_a.mean()) * 255, float(big_z.mean())
    quality = wsb_quality(big_b, big_a, big_z) if min(big_b, big_a, big_z) > 0 else math.nan
    return blockiness, quality, big_b, big_a, big_z


def wsb_quality(big_b: float, big_a: float, big_z: float) -> float:
    """Wang-Sheikh-Bovik (2002) quality from blockiness B and activity A (8-bit units) and zero-crossing rate Z."""
    g1, g2, g3 = _WSB_GAMMA
    return _WSB_ALPHA + _WSB_BETA * big_b**g1 * big_a**g2 * big_z**g3


# Rows: rg = R - G, yb = (R + G) / 2 - B, and a zero row: OpenCV's 3->3 transform is ~8x faster than 3->2.
_OPPONENT = np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0], [0.0, 0.0, 0.0]], dtype=np.float32)


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness M in 8-bit units: sigma_rgyb + 0.3 * mu_rgyb.

    About 0 for grey images; the paper's scale: 15 slightly, 33 moderately, 45 averagely,
    59 quite, 82 highly, 109 extremely colourful.
    """
    opp = cv2.transform(np.asarray(rgb, dtype=np.float32), _OPPONENT)
    mean, std = cv2.meanStdDev(opp)
    mu, sd = mean.ravel()[:2] * 255, std.ravel()[:2] * 255
    return float(math.hypot(sd[0], sd[1]) + 0.3 * math.hypot(mu[0], mu[1]))


def contrast_stats(gray: np.ndarray, q: float = 0.01) -> tuple[float, float]:
    """(RMS contrast, robust Michelson contrast) of a gray image in [0, 1].

    RMS contrast is the standard deviation of intensity in [0, 1] (Peli 1990): 0 for a flat image,
    0.5 at most. Michelson contrast (Imax - Imin) / (Imax + Imin) uses the ``q`` and ``1 - q``
    quantiles of the 8-bit image instead of the extremes, which a single hot pixel would decide.
    """
    g = np.asarray(gray, dtype=np.float32)
    _, std = cv2.meanStdDev(g)
    hist = cv2.calcHist([cv2.convertScaleAbs(g, alpha=255)], [0], None, [256], [0, 256]).ravel()
    cdf = np.cumsum(hist)
    lo = int(np.searchsorted(cdf, q * cdf[-1]))
    hi = int(np.searchsorted(cdf, (1 - q) * cdf[-1]))
    michelson = (hi - lo) / (hi + lo) if hi + lo > 0 else 0.0
    return float(std.ravel()[0]), michelson


@register
class Blockiness(PerImageScorer):
    info = ScorerInfo(
        name="blockiness",
        kind="nr",
        higher_is_better=False,
        score_range=(None, None),
        description="JPEG 8x8 blockiness: 1 + how far the 8x8 grid's edges stand above their neighbours; "
        "~1.0 none, 1.1-1.3 JPEG q90-75, more below. Plus Wang-Sheikh-Bovik 2002 JPEG quality.",
        colour="gray",
        extra_outputs=("jpeg_quality",),
        extra_descriptions={
            "jpeg_quality": "Wang-Sheikh-Bovik (2002) NR JPEG quality, about 1 (worst) to 10 (best); higher is better",
        },
    )

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return blockiness_stats(image)[:2]


@register
class Colourfulness(PerImageScorer):
    info = ScorerInfo(
        name="colourfulness",
        kind="nr",
        higher_is_better=True,
        score_range=(0.0, None),
        description="Hasler-Suesstrunk 2003 colourfulness (8-bit units): 0 grey, 33 moderate, 59 quite, 109 extreme.",
        colour="rgb",
    )

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (colourfulness(image),)


@register
class Contrast(PerImageScorer):
    info = ScorerInfo(
        name="contrast",
        kind="nr",
        higher_is_better=True,
        score_range=(0.0, 0.5),
        description="RMS contrast: standard deviation of luminance in [0,1]; low means flat or washed out.",
        colour="gray",
        extra_outputs=("michelson",),
        extra_descriptions={"michelson": "Michelson contrast (p99-p1)/(p99+p1) of 8-bit luminance, in [0,1]"},
    )

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return contrast_stats(image)
