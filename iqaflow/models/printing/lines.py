"""Print defects of a registered scan against its master: streaks along the feed, banding across it.

A streak (a clogged nozzle, a scratched drum, dirt on the scanner glass) is a thin line running
the length of the page in the feed direction; banding is a band across it. Both shift the
difference ``scan - master`` along whole columns (streaks, for a feed from top to bottom of the
master) or whole rows (banding). So the detector takes the median of the difference down each
column (across each row) over the master's flat pixels only (edges differ between a print and its
file by blur and residual misregistration, and a page's margins and frames run its whole length),
removes the slow trend (uneven lighting: a running median over ``TREND_WINDOW`` samples), and
scores each column by a robust z-score (median and 1.4826 x MAD of the profile); a line a few
pixels wide stands out by tens of sigmas. A page fed sideways shows its streaks as banding.

Outputs per image: the peak |z| and the bounding box of the strongest line, with the box's extent
along the line where the line's contrast stays above a third of its median (gaps up to
``ALONG_GAP`` bridged); boxes are null below ``MIN_Z``. Images are gray in [0, 1], of the same size (register first).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import cv2
import numpy as np
from scipy.ndimage import median_filter, uniform_filter1d

from iqaflow.models.base import Scorer, ScorerInfo
from iqaflow.models.registry import register

TREND_WINDOW = 31  # samples of the running median removed from a profile (slow shading, not lines)
MIN_SCALE = 0.5 / 255  # floor of the profile's noise scale: a perfect print must not divide by ~0
MIN_Z = 6.0  # peaks below this are not located (their boxes are null)
ALONG_SMOOTH = 9  # px of smoothing along the line before finding its extent
ALONG_LEVEL = 1 / 3  # the line's extent: where its contrast exceeds this fraction of its median contrast
ALONG_GAP = 16  # px: runs of the line closer than this are one
FLAT_GRADIENT = 0.06  # Sobel magnitude (gray units a pixel, after a sigma-1 blur) below which the master is flat
EDGE_MARGIN = 2  # px around the master's edges left out
MIN_FLAT = 0.05  # a column with fewer flat pixels than this fraction takes the profile's median

NAN_BOX = (float("nan"),) * 4


def flat_mask(ref: np.ndarray) -> np.ndarray:
    """Pixels where the master is locally flat (no edge within ``EDGE_MARGIN`` px)."""
    smooth = cv2.GaussianBlur(ref.astype(np.float32), (0, 0), 1.0)
    mag = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3)) / 4
    edges = (mag >= FLAT_GRADIENT).astype(np.uint8)
    return cv2.dilate(edges, np.ones((2 * EDGE_MARGIN + 1,) * 2, np.uint8)) == 0


def profile_z(diff: np.ndarray, axis: int) -> np.ndarray:
    """Robust z-scores of the median of ``diff`` (NaN where not flat) along ``axis`` (0: one value per column)."""
    counts = np.sum(np.isfinite(diff), axis=axis)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        profile = np.nanmedian(diff, axis=axis)
    few = (counts < MIN_FLAT * diff.shape[axis]) | ~np.isfinite(profile)
    profile[few] = np.median(profile[~few]) if (~few).any() else 0.0
    if profile.size >= 3:
        profile = profile - median_filter(profile, size=min(TREND_WINDOW, profile.size | 1), mode="nearest")
    centre = float(np.median(profile))
    scale = max(1.4826 * float(np.median(np.abs(profile - centre))), MIN_SCALE)
    return (profile - centre) / scale


def _band(z: np.ndarray) -> tuple[float, int, int]:
    """(peak |z|, start, stop) of the run of same-sign values above a third of the peak around it."""
    i = int(np.argmax(np.abs(z)))
    peak = float(z[i])
    level = abs(peak) / 3
    start, stop = i, i + 1
    while start > 0 and z[start - 1] * np.sign(peak) > level:
        start -= 1
    while stop < z.size and z[stop] * np.sign(peak) > level:
        stop += 1
    return abs(peak), start, stop


def _extent(diff: np.ndarray, start: int, stop: int) -> tuple[int, int]:
    """Extent along a column band [start, stop): where its contrast to the neighbouring columns is strong.

    All pixels count here: the neighbouring columns share each row's content, so it cancels."""
    n = diff.shape[1]
    pad = max(3, stop - start)
    around = np.concatenate([diff[:, max(0, start - pad) : start], diff[:, stop : min(n, stop + pad)]], axis=1)
    contrast = diff[:, start:stop].mean(axis=1) - (np.median(around, axis=1) if around.shape[1] else 0.0)
    contrast = uniform_filter1d(contrast, ALONG_SMOOTH, mode="nearest")
    peak = float(np.median(contrast))
    if abs(peak) < 1e-9:
        return 0, diff.shape[0]
    on = contrast * np.sign(peak) > abs(peak) * ALONG_LEVEL
    runs: list[list[int]] = []
    for k in np.flatnonzero(on):
        if runs and k - runs[-1][1] <= ALONG_GAP:  # a short gap (dark content under a light streak) joins runs
            runs[-1][1] = int(k)
        else:
            runs.append([int(k), int(k)])
    if not runs:
        return 0, diff.shape[0]
    first, last = max(runs, key=lambda r: r[1] - r[0])
    return first, last + 1


def detect_lines(img: np.ndarray, ref: np.ndarray, axis: int) -> tuple[float, float, float, float, float]:
    """(peak |z|, x0, y0, x1, y1) of the strongest line: ``axis`` 0 finds columns (streaks), 1 rows (banding)."""
    if img.shape != ref.shape:
        raise ValueError(f"expected image and reference of the same shape, got {img.shape} and {ref.shape}")
    diff = img.astype(np.float64) - ref.astype(np.float64)
    flat = np.where(flat_mask(ref), diff, np.nan)
    if axis == 1:
        diff, flat = diff.T, flat.T
    peak, start, stop = _band(profile_z(flat, axis=0))
    if not np.isfinite(peak) or peak < MIN_Z:
        return (peak, *NAN_BOX)
    a0, a1 = _extent(diff, start, stop)
    box = (start, a0, stop, a1) if axis == 0 else (a0, start, a1, stop)
    return (peak, *(float(v) for v in box))


@register
class Streaks(Scorer):
    info = ScorerInfo(
        name="streaks",
        kind="fr",
        higher_is_better=False,
        score_range=(0.0, None),
        description="Print streaks along the feed (top to bottom of the master): peak robust z-score of the "
                    "column profile of scan - master (register first); above ~8 a line is visible.",
        colour="gray",
        extra_outputs=("streak_x0", "streak_y0", "streak_x1", "streak_y1", "banding", "banding_x0", "banding_y0",
                       "banding_x1", "banding_y1"),
        extra_descriptions={
            "streak_x0": "left edge of the strongest streak, pixels (null below z 6)",
            "streak_y0": "top of the strongest streak, pixels",
            "streak_x1": "right edge (exclusive) of the strongest streak, pixels",
            "streak_y1": "bottom (exclusive) of the strongest streak, pixels",
            "banding": "bands across the feed: peak robust z-score of the row profile of scan - master",
            "banding_x0": "left end of the strongest band, pixels (null below z 6)",
            "banding_y0": "top edge of the strongest band, pixels",
            "banding_x1": "right end (exclusive) of the strongest band, pixels",
            "banding_y1": "bottom edge (exclusive) of the strongest band, pixels",
        },
    )

    def score_pairs(self, images: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(images), len(self.info.outputs)), dtype=np.float64)
        for i, (img, ref) in enumerate(zip(images, references, strict=True)):
            out[i] = (*detect_lines(img, ref, 0), *detect_lines(img, ref, 1))
        return out
