"""Blurred text: where the scan is softer than the page's own scanner blur predicts.

Pure functions on working-resolution gray arrays of a registered scan (see ``defects.inspect``): the
prediction ``pred`` (the master through the page's tone curves and its fitted scanner blur) and the
residual ``resid = scan - pred``.

The defect model: over a region of text (or any detailed content) the print is out of focus, i.e. the scan
is the prediction blurred further. To first order, an extra Gaussian blur of ``TEMPLATE_MM`` changes the
prediction by the template ``t = G(pred) - pred`` (a Laplacian along every edge), and a region blurred by an
extra sigma ``e`` shows ``resid ~ (e / TEMPLATE_MM)^2 t``. So the evidence is the local least-squares gain of
the residual on the template, ``<resid t> / <t t>`` over ``WINDOW_MM`` windows: ~0 on a clean page, ~1 where
the extra blur is ``TEMPLATE_MM``. Per page, its median over detailed windows is removed (the page's blur
estimate being a little off shifts every window alike).

Two properties of the model keep clean pages clean:
* blur is isotropic: the gain is measured separately with the horizontal and the vertical half of the
  template, and a window counts only where both are measured (``MIN_TEMPLATE`` levels rms each) and both
  exceed ``MIN_GAIN``. A single long edge (a colour patch's border, whose residual follows the scanner's
  per-channel offsets and tone there) has only one half and is never blurred text.
* a region: the print's focus fails over text blocks, not single strokes, so the evidence is integrated
  over ``WINDOW_MM`` (the catalogue's smallest blurred region is 12 mm square), and a region needs
  ``MIN_AREA_MM2`` of window centres and a peak of ``MIN_Z`` times the page's spread of the gain (where
  details are faint, e.g. a soft photo, the gain is noisy and 0.8 means nothing).

Tuned on simulated pages of seeds 1000-1059 and 3000-3099 (clean, 150 dpi: the directional gain's page
maximum 0.68) and 7000-7023 (0.15-0.3 mm blur; its minimum in the defect's box 0.94), never the benchmark's.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

TEMPLATE_MM = 0.2  # extra blur (Gaussian sigma) of the template
WINDOW_MM = 6.0  # side of the windows the gain is integrated over
MIN_TEMPLATE = 2.0  # levels rms of each half of the template in a window that is measured
MIN_GAIN = 0.8  # both halves' gain above the page's median: ~ (0.18 mm / TEMPLATE_MM)^2 extra blur
MIN_PIXELS = 100  # measured windows (centres) a page needs for its median
JOIN_MM = 3.0  # blurred windows closer than this are one region
MIN_Z = 4.0  # a region's peak gain over the page's robust spread of the gain (noisy where details are faint)
MIN_AREA_MM2 = 1.0  # of a region's window centres


@dataclass(frozen=True)
class BlurRegion:
    box: tuple[int, int, int, int]  # x, y, w, h in working px
    area_mm2: float  # of the windows' centres above MIN_GAIN
    gain: float  # peak of the smaller directional gain above the page median
    z: float  # the peak gain over the page's robust spread of the gain (1.4826 MAD over measured windows)
    extra_mm: float  # extra blur sigma, mm, of the linear model at the peak gain


def _odd(n: float) -> int:
    return max(1, int(round(n)) | 1)


def directional_gains(resid: np.ndarray, pred: np.ndarray, mm: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(gain, measured) maps: the smaller of the horizontal and vertical template gains above their page
    medians, and where both halves of the template are measured."""
    s = TEMPLATE_MM * mm
    k = _odd(6 * s)
    n = (_odd(WINDOW_MM * mm),) * 2
    gains, measured = [], np.ones(resid.shape, bool)
    for t in (cv2.GaussianBlur(pred, (k, 1), s, sigmaY=0) - pred,
              cv2.GaussianBlur(pred, (1, k), 0, sigmaY=s) - pred):
        den = cv2.blur(t * t, n)
        gains.append(cv2.blur(resid * t, n) / np.maximum(den, 1e-6))
        measured &= den >= MIN_TEMPLATE * MIN_TEMPLATE
    if measured.sum() < MIN_PIXELS:
        return np.zeros(resid.shape, np.float32), np.zeros(resid.shape, bool)
    gx, gy = (g - float(np.median(g[measured])) for g in gains)
    return np.where(measured, np.minimum(gx, gy), 0).astype(np.float32), measured


def find_blurred_text(resid: np.ndarray, pred: np.ndarray, mm: float) -> list[BlurRegion]:
    """Regions whose scan is softer than the prediction ``pred`` (gray; ``resid`` = scan - pred; ``mm``: px
    per mm), each the windows' centres with gain >= ``MIN_GAIN`` within ``JOIN_MM`` of each other."""
    gain, measured = directional_gains(resid, pred, mm)
    mask = (measured & (gain >= MIN_GAIN)).astype(np.uint8)
    k = _odd(JOIN_MM * mm)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(mask, np.ones((k, k), np.uint8)),
                                                           connectivity=8)
    labels *= mask
    out: list[BlurRegion] = []
    if n > 1:
        vals = gain[measured]
        spread = max(1.4826 * float(np.median(np.abs(vals - np.median(vals)))), 1e-3)
    for i in range(1, n):
        x, y, w, h = (int(v) for v in stats[i][:4])
        own = labels[y:y + h, x:x + w] == i
        ys, xs = np.nonzero(own)
        box = (x + int(xs.min()), y + int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
        peak = float(gain[y:y + h, x:x + w][own].max())
        area = float(own.sum()) / (mm * mm)
        if peak < MIN_Z * spread or area < MIN_AREA_MM2:
            continue
        out.append(BlurRegion(box, area, peak, peak / spread,
                              TEMPLATE_MM * float(np.sqrt(peak))))
    return out
