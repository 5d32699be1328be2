"""Colour accuracy of a scan against its master: CIEDE2000 after neutral scanner calibration.

A per-channel tone curve fitted freely would absorb a global colour shift, so colour is measured
against the *neutral* scanner model (``print_tone.fit_neutral``: one gamma, per-channel gain/offset,
i.e. paper white and black level): what it cannot explain is a colour difference of the print.

Both the scan and the master's prediction under the neutral model (blurred like the scan, planes at
the scan's offsets) are averaged over ``CELL_MM`` cells, mapped back through the inverse neutral curve
into the master's RGB, converted to CIELAB (sRGB, D65) and compared with ``deltaE_ciede2000``. The map
is smoothed over ``SMOOTH_CELLS`` cells (inked cells only) so scanner noise and paper texture do not
dominate; ``delta_e_p95`` and ``delta_e_max`` are read over inked cells (the master not paper white:
some channel below ``INK_LEVEL``, and at least ``MIN_FLAT`` of the cell flat). A region above ``DE_FLAG``
whose difference is mostly chromatic (|Δa*b*| > |ΔL*|: density defects change lightness) is reported as a
colour shift.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from iqaflow.models.printing.tone import apply_luts

CELL_MM = 1.0
SMOOTH_CELLS = 3
INK_LEVEL = 225.0
DE_FLAG = 2.0  # ΔE2000 of a smoothed region reported as a colour shift
MIN_REGION_MM2 = 60.0  # flagged cells a region needs
JOIN_MM = 7.0
MIN_FLAT = 0.6  # share of a cell's pixels that must be flat: text cells mix ink and paper through the scanner's
# blur, JPEG chroma subsampling and a nonlinear curve, which leaves a chroma error unrelated to the ink's colour


@dataclass(frozen=True)
class ColourResult:
    delta_e_p95: float
    delta_e_max: float
    worst_box: tuple[int, int, int, int] | None  # x, y, w, h in working px
    regions: list[tuple[tuple[int, int, int, int], float, float]]  # (box, mean ΔE, area mm²) chromatic regions
    delta_e_map: np.ndarray  # (rows, cols) smoothed ΔE per cell, NaN where not inked


def _inverse(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Invert a monotone 256-entry curve by interpolation."""
    lut = np.maximum.accumulate(lut + np.arange(256) * 1e-4)
    return np.interp(values, lut, np.arange(256, dtype=np.float64)).astype(np.float32)


def colour_difference(scan: np.ndarray, pred: np.ndarray, master: np.ndarray, luts: np.ndarray, dpi: float,
                      flat: np.ndarray | None = None) -> ColourResult:
    """ΔE2000 between ``scan`` and ``pred`` (its neutral prediction), RGB float (H, W, 3) at ``dpi``; cells
    less than ``MIN_FLAT`` flat (``flat``: the master's flat pixels) are left out."""
    from skimage.color import deltaE_ciede2000

    cell = max(1, round(CELL_MM * dpi / 25.4))
    h, w = scan.shape[:2]
    size = (max(1, w // cell), max(1, h // cell))
    cs = cv2.resize(scan[: size[1] * cell, : size[0] * cell], size, interpolation=cv2.INTER_AREA)
    cp = cv2.resize(pred[: size[1] * cell, : size[0] * cell], size, interpolation=cv2.INTER_AREA)
    cm = cv2.resize(master[: size[1] * cell, : size[0] * cell], size, interpolation=cv2.INTER_AREA)
    lab = []
    for img in (cs, cp):
        rgb = np.stack([_inverse(img[..., c], luts[c]) for c in range(3)], axis=2) / 255.0
        lab.append(cv2.cvtColor(np.clip(rgb, 0, 1).astype(np.float32), cv2.COLOR_RGB2Lab).astype(np.float64))
    de = deltaE_ciede2000(lab[1], lab[0]).astype(np.float32)
    inked = cm.min(axis=2) < INK_LEVEL
    if flat is not None:
        crop = flat[: size[1] * cell, : size[0] * cell].astype(np.float32)
        inked &= cv2.resize(crop, size, interpolation=cv2.INTER_AREA) >= MIN_FLAT
    inked = inked.astype(np.float32)
    k = (SMOOTH_CELLS, SMOOTH_CELLS)
    norm = cv2.blur(inked, k)
    smooth = np.where((inked > 0) & (norm > 0.3), cv2.blur(de * inked, k) / np.maximum(norm, 1e-6), np.nan)
    vals = smooth[np.isfinite(smooth)]
    if vals.size == 0:
        return ColourResult(0.0, 0.0, None, [], smooth)
    p95, peak = float(np.percentile(vals, 95)), float(vals.max())
    diff = lab[0] - lab[1]
    chroma = cv2.blur(np.hypot(diff[..., 1], diff[..., 2]).astype(np.float32), k)
    light = cv2.blur(np.abs(diff[..., 0]).astype(np.float32), k)
    flag = (np.nan_to_num(smooth) >= DE_FLAG).astype(np.uint8)
    # Flagged cells are sparse (text cells do not count): cells within JOIN_MM are one region.
    join = max(1, round(JOIN_MM / CELL_MM)) | 1
    n, labels, _, _ = cv2.connectedComponentsWithStats(cv2.dilate(flag, np.ones((join, join), np.uint8)),
                                                       connectivity=8)
    labels = labels * flag
    regions = []
    cell_mm2 = (cell * 25.4 / dpi) ** 2
    for i in range(1, n):
        sel = labels == i
        ys, xs = np.nonzero(sel)
        if not xs.size:
            continue
        x, y, bw, bh, area = int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1, int(xs.size)
        if area * cell_mm2 < MIN_REGION_MM2 or float(np.median(chroma[sel])) <= float(np.median(light[sel])):
            continue
        regions.append(((x * cell, y * cell, bw * cell, bh * cell), float(np.mean(smooth[sel])), area * cell_mm2))
    iy, ix = np.unravel_index(int(np.nanargmax(smooth)), smooth.shape)
    worst = (int(ix * cell), int(iy * cell), cell, cell)
    for box, _, _ in regions:
        if box[0] <= ix * cell < box[0] + box[2] and box[1] <= iy * cell < box[1] + box[3]:
            worst = box
    return ColourResult(p95, peak, worst, regions, smooth)


def neutral_prediction(master_blurred: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """The master as a neutral scanner would see it (float RGB)."""
    return apply_luts(master_blurred, luts)
