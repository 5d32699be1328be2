"""Cheap classical no-reference measures: pure functions, then thin registered scorers.

All functions take float32 images in [0, 1] and report in 8-bit units (0-255) where the
literature does, so thresholds such as ``sharpness >= 120`` keep their usual meaning.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from iqaflow.models.base import PerImageScorer, ScorerInfo
from iqaflow.models.registry import register

# Immerkaer (1996) noise-estimation mask: the difference of two Laplacians, blind to
# linear and quadratic intensity ramps, so image structure leaks in less than with a Laplacian.
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_CLIP_LOW, _CLIP_HIGH = 5 / 255, 250 / 255
# Clipped pixels carry no information; a quarter of the frame clipped zeroes the exposure quality.
_CLIP_WEIGHT = 4.0


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the 8-bit-scaled image (Pech-Pacheco et al. 2000)."""
    lap = cv2.Laplacian(gray * np.float32(255), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
    return float(lap.var(dtype=np.float64))


def exposure_stats(gray: np.ndarray) -> tuple[float, float, float, float]:
    """(exposure quality in [0,1], mean luminance, clipped-highlight fraction, clipped-shadow fraction).

    Quality is 1 for a mid-grey mean with no clipping and falls linearly with the distance of
    the mean from 0.5 and with the fraction of clipped pixels (zero at a quarter of the frame).
    """
    mean = float(gray.mean(dtype=np.float64))
    n = gray.size
    hi = float(np.count_nonzero(gray >= _CLIP_HIGH)) / n
    lo = float(np.count_nonzero(gray <= _CLIP_LOW)) / n
    quality = max(0.0, 1.0 - 2.0 * abs(mean - 0.5)) * max(0.0, 1.0 - _CLIP_WEIGHT * (hi + lo))
    return quality, mean, hi, lo


def noise_sigma(gray: np.ndarray, exclude_edges: float = 0.1) -> float:
    """Gaussian noise sigma in 8-bit units: Immerkaer's estimator over non-edge pixels.

    The strongest-gradient ``exclude_edges`` fraction of pixels is left out (Tai & Yang 2008)
    so that texture and edges are not mistaken for noise.
    """
    img = gray * np.float32(255)
    h, w = img.shape
    if h < 3 or w < 3:
        return float("nan")
    resp = np.abs(cv2.filter2D(img, cv2.CV_32F, _IMMERKAER, borderType=cv2.BORDER_REFLECT))[1:-1, 1:-1]
    if exclude_edges > 0:
        gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)[1:-1, 1:-1]
        gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)[1:-1, 1:-1]
        mag = np.abs(gx) + np.abs(gy)
        # Threshold from a strided subsample: the same quantile to within noise, ~16x cheaper.
        thresh = np.quantile(mag[::4, ::4], 1.0 - exclude_edges)
        keep = mag <= thresh
        n = int(np.count_nonzero(keep))
        if n == 0:
            return 0.0
        total = float(resp[keep].sum(dtype=np.float64))
    else:
        n = resp.size
        total = float(resp.sum(dtype=np.float64))
    return math.sqrt(math.pi / 2) * total / (6.0 * n)


@register
class Sharpness(PerImageScorer):
    info = ScorerInfo(
        name="sharpness",
        kind="nr",
        higher_is_better=True,
        score_range=(0.0, None),
        description="Variance of the Laplacian (8-bit units); low means blurred. Also rises with noise.",
        colour="gray",
    )

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (laplacian_variance(image),)


@register
class Exposure(PerImageScorer):
    info = ScorerInfo(
        name="exposure",
        kind="nr",
        higher_is_better=True,
        score_range=(0.0, 1.0),
        description="1 for mid-grey mean and no clipping; falls with under/over-exposure and clipping.",
        colour="gray",
        extra_outputs=("brightness", "clipped_highlights", "clipped_shadows"),
        extra_descriptions={
            "brightness": "mean luminance in [0,1]",
            "clipped_highlights": "fraction of pixels >= 250/255",
            "clipped_shadows": "fraction of pixels <= 5/255",
        },
    )

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return exposure_stats(image)


@register
class Noise(PerImageScorer):
    info = ScorerInfo(
        name="noise",
        kind="nr",
        higher_is_better=False,
        score_range=(0.0, None),
        description="Estimated Gaussian noise sigma in 8-bit units (Immerkaer, edges excluded).",
        colour="gray",
    )

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (noise_sigma(image),)
