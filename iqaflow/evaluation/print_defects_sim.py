"""The defect catalogue of the print simulator: each function draws one defect on a printed page (float32
RGB 0-255, master coordinates, modified in place) and returns its ``DefectTruth``.

Density change. Per channel, darkness is ``d = 1 - value/255``. A density change of ``x`` (a fraction):
  * darker (more ink/toner, ``x > 0``): ``d' = min(1, d + x * max(d, 1 - d))`` - an absolute change of
    ``x`` of full scale on paper white (d = 0), ``x`` relative where the ink covers half or more;
  * lighter (less ink, ``x < 0``): ``d' = d * (1 + x)`` - relative; paper white stays white (no ink to lose),
    so lighter streaks and bands are only drawn where the page has ink.
A void is ``x = -1`` (paper white); a spot is drawn with a dark toner colour.

Placement: voids go where the page has ink (their footprint's mean darkness >= ``VOID_INK``), spots on
light areas, smears and blurred text over text-like areas (many edges, low mean darkness), lighter
streaks/bands across ink. ``GRADES`` lists each type's size/strength bins the benchmark reports by.
"""

from __future__ import annotations

import cv2
import numpy as np

from iqaflow.evaluation.print_units import DefectTruth, mm_px, px_mm2

VOID_INK = 0.2
GRADES: dict[str, dict[str, tuple[float, float]]] = {
    "void": {"1-4mm2": (1.0, 4.0), "4-25mm2": (4.0, 25.0), "25-180mm2": (25.0, 180.0)},
    "spot": {"1-4mm2": (1.0, 4.0), "4-25mm2": (4.0, 25.0)},
    "streak": {"10-20%": (0.10, 0.20), "20-40%": (0.20, 0.40), "40-65%": (0.40, 0.65)},
    "band": {"10-20%": (0.10, 0.20), "20-30%": (0.20, 0.30)},
    "periodic_band": {"10-15%": (0.10, 0.15), "15-25%": (0.15, 0.25)},
    "smear": {"1-2mm": (1.0, 2.0), "2-4mm": (2.0, 4.0)},
    "colour_shift": {"dE3-5": (3.0, 5.0), "dE5-8": (5.0, 8.0)},
    "misregistration": {"0.2-0.5mm": (0.2, 0.5), "0.5-1mm": (0.5, 1.0)},
    "blurred_text": {"0.15-0.3mm": (0.15, 0.3), "0.3-0.5mm": (0.3, 0.5)},
}


def density(values: np.ndarray, x: float | np.ndarray) -> np.ndarray:
    """Values (0-255) after a density change ``x`` (see the module docstring)."""
    d = 1.0 - values / 255.0
    x = np.asarray(x, np.float32)
    darker = np.minimum(1.0, d + np.maximum(x, 0) * np.maximum(d, 1.0 - d))
    out = np.where(x >= 0, darker, d * (1.0 + np.minimum(x, 0)))
    return (255.0 * (1.0 - out)).astype(np.float32)


def _darkness_map(master: np.ndarray, cell: int) -> np.ndarray:
    gray = cv2.cvtColor(master, cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(gray, (max(1, master.shape[1] // cell), max(1, master.shape[0] // cell)),
                       interpolation=cv2.INTER_AREA)
    return 1.0 - small / 255.0


def _edge_map(master: np.ndarray, cell: int) -> np.ndarray:
    gray = cv2.cvtColor(master, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mag = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    return cv2.resize(mag, (max(1, master.shape[1] // cell), max(1, master.shape[0] // cell)),
                      interpolation=cv2.INTER_AREA)


def _pick(score: np.ndarray, ok: np.ndarray, rng: np.random.Generator, cell: int, margin_cells: int
          ) -> tuple[float, float]:
    """A random cell centre (master px) where ``ok``; the best ``score`` if none is."""
    ok = ok.copy()
    ok[:margin_cells], ok[-margin_cells:], ok[:, :margin_cells], ok[:, -margin_cells:] = False, False, False, False
    idx = np.flatnonzero(ok)
    k = int(rng.choice(idx)) if idx.size else int(np.argmax(score))
    cy, cx = divmod(k, score.shape[1])
    return (cx + 0.5) * cell, (cy + 0.5) * cell


def _uniform(rng: np.random.Generator, kind: str, grade: str | None) -> tuple[str, float]:
    grades = GRADES[kind]
    name = grade if grade is not None else str(rng.choice(sorted(grades)))
    lo, hi = grades[name]
    return name, float(rng.uniform(lo, hi))


def _ellipse_mask(shape: tuple[int, int], cx: float, cy: float, rx: float, ry: float, angle: float) -> np.ndarray:
    """Anti-aliased ellipse coverage in [0, 1] (drawn at 4x sub-pixel precision)."""
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (round(cx * 16), round(cy * 16)), (max(1, round(rx * 16)), max(1, round(ry * 16))), angle,
                0, 360, 255, -1, cv2.LINE_AA, 4)
    return mask.astype(np.float32) / 255.0


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask > 0.5)
    if not xs.size:
        ys, xs = np.nonzero(mask > 0)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _local_ellipse(shape: tuple[int, ...], cx: float, cy: float, rx: float, ry: float
                   ) -> tuple[tuple[slice, slice], np.ndarray, tuple[int, int]]:
    """(region slices, coverage in the region, region origin x, y) of an ellipse: only its box is drawn."""
    x0, y0 = max(0, int(cx - rx) - 2), max(0, int(cy - ry) - 2)
    x1, y1 = min(shape[1], int(np.ceil(cx + rx)) + 3), min(shape[0], int(np.ceil(cy + ry)) + 3)
    a = _ellipse_mask((y1 - y0, x1 - x0), cx - x0, cy - y0, rx, ry, 0.0)
    return (slice(y0, y1), slice(x0, x1)), a, (x0, y0)


def _shifted(box: tuple[int, int, int, int], origin: tuple[int, int]) -> tuple[int, int, int, int]:
    return box[0] + origin[0], box[1] + origin[1], box[2], box[3]


def void(printed: np.ndarray, master: np.ndarray, dpi: int, cx: float, cy: float, rx: float, ry: float,
         grade: str = "") -> DefectTruth:
    """Missing ink in an ellipse (radii in px): the page goes to paper white."""
    sl, a, origin = _local_ellipse(printed.shape, cx, cy, rx, ry)
    dark = 1.0 - master[sl].astype(np.float32).mean(axis=2) / 255.0
    region = printed[sl]
    region[:] = region * (1 - a[..., None]) + 255.0 * a[..., None]
    return DefectTruth("void", _shifted(_bbox(a), origin), px_mm2(float(a.sum()), dpi), 1.0, grade,
                       {"ink_removed_mm2": px_mm2(float((a * dark).sum()), dpi)})


def spot(printed: np.ndarray, dpi: int, cx: float, cy: float, rx: float, ry: float, value: float = 35.0,
         grade: str = "") -> DefectTruth:
    """A dark toner spot (an ellipse of ``value``)."""
    sl, a, origin = _local_ellipse(printed.shape, cx, cy, rx, ry)
    region = printed[sl]
    region[:] = region * (1 - a[..., None]) + value * a[..., None]
    return DefectTruth("spot", _shifted(_bbox(a), origin), px_mm2(float(a.sum()), dpi), 1.0 - value / 255.0, grade)


def streak(printed: np.ndarray, dpi: int, x: float, width: float, y0: int, y1: int, x_change: float,
           grade: str = "") -> DefectTruth:
    """A line along the feed (vertical) from column ``x`` (px, fractional), ``width`` px, rows [y0, y1)."""
    i0, i1 = int(np.floor(x)), int(np.ceil(x + width))
    cols = np.arange(i0, i1)
    weight = np.clip(np.minimum(cols + 1, x + width) - np.maximum(cols, x), 0, 1).astype(np.float32)
    region = printed[y0:y1, i0:i1]
    w = weight[None, :, None]
    region[:] = region * (1 - w) + density(region, x_change) * w
    return DefectTruth("streak", (i0, y0, i1 - i0, y1 - y0), px_mm2(width * (y1 - y0), dpi), x_change, grade)


def band(printed: np.ndarray, dpi: int, y: float, height: float, x_change: float, grade: str = "",
         period_px: float | None = None, y_end: int | None = None) -> DefectTruth:
    """A band across the feed (rows [y, y + height), full width); or, with ``period_px``, a sinusoidal
    density modulation of amplitude ``x_change`` from row ``y`` to ``y_end`` (periodic banding)."""
    h, w = printed.shape[:2]
    if period_px is None:
        y0, y1 = int(round(y)), int(round(y + height))
        printed[y0:y1] = density(printed[y0:y1], x_change)
        return DefectTruth("band", (0, y0, w, y1 - y0), px_mm2(w * (y1 - y0), dpi), x_change, grade)
    y0, y1 = int(round(y)), int(y_end if y_end is not None else h)
    rows = np.arange(y0, y1, dtype=np.float32)
    change = (x_change * np.sin(2 * np.pi * rows / period_px))[:, None, None]
    printed[y0:y1] = density(printed[y0:y1], change)
    return DefectTruth("band", (0, y0, w, y1 - y0), px_mm2(w * (y1 - y0), dpi), abs(x_change), grade,
                       {"period_mm": period_px * 25.4 / dpi, "periodic": True})


def smear(printed: np.ndarray, dpi: int, box: tuple[int, int, int, int], drag_px: float, grade: str = ""
          ) -> DefectTruth:
    """Ink dragged down the feed over ``box`` (x, y, w, h): darkness becomes the max of itself and its
    one-sided running mean over ``drag_px`` above (a trail below every stroke)."""
    x, y, bw, bh = box
    n = max(2, int(round(drag_px)))
    kernel = np.zeros((2 * n + 1, 1), np.float32)
    kernel[:n + 1] = 1.0 / (n + 1)  # rows above (and at) the pixel: ink moves down
    region = printed[y:y + bh, x:x + bw]
    d = 1.0 - region / 255.0
    trail = cv2.filter2D(d, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    region[:] = 255.0 * (1.0 - np.maximum(d, 0.8 * trail))
    return DefectTruth("smear", box, px_mm2(bw * bh, dpi), drag_px * 25.4 / dpi, grade)


def colour_shift(printed: np.ndarray, dpi: int, box: tuple[int, int, int, int], delta_e: float, hue: float,
                 grade: str = "") -> DefectTruth:
    """A chromatic shift of the ink in ``box``: (a*, b*) moves by ``t`` along ``hue`` (radians), weighted by
    ``4 L'(1 - L')`` (L' = L*/100: mid-tones move, paper white and solid black do not), with ``t`` set so
    the median CIEDE2000 over the box's mid-tone pixels (weight >= 0.5) is ``delta_e``."""
    from skimage.color import deltaE_ciede2000

    x, y, bw, bh = box
    region = printed[y:y + bh, x:x + bw]
    lab = cv2.cvtColor(np.clip(region, 0, 255) / 255.0, cv2.COLOR_RGB2Lab)
    weight = np.clip(4 * (lab[..., 0] / 100) * (1 - lab[..., 0] / 100), 0, 1)
    sel = np.flatnonzero(weight.ravel() >= 0.5)
    if sel.size == 0:
        sel = np.arange(weight.size)
    sel = np.random.default_rng(0).choice(sel, min(sel.size, 20000), replace=False)
    ref = lab.reshape(-1, 3)[sel].astype(np.float64)
    wsel = weight.ravel()[sel]
    direction = np.array([0.0, np.cos(hue), np.sin(hue)])

    def shifted(t: float, src: np.ndarray, w: np.ndarray) -> np.ndarray:
        return src + t * w[..., None] * direction

    def rgb_lab(lab_vals: np.ndarray) -> np.ndarray:  # round trip through 8-bit-range RGB (gamut clipping)
        rgb = np.clip(cv2.cvtColor(lab_vals.astype(np.float32)[None], cv2.COLOR_Lab2RGB), 0, 1)
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[0].astype(np.float64)

    lo, hi = 0.0, 60.0
    for _ in range(22):
        mid = (lo + hi) / 2
        de = float(np.median(deltaE_ciede2000(ref, rgb_lab(shifted(mid, ref, wsel)))))
        lo, hi = (mid, hi) if de < delta_e else (lo, mid)
    out = cv2.cvtColor(shifted((lo + hi) / 2, lab.astype(np.float64), weight).astype(np.float32), cv2.COLOR_Lab2RGB)
    region[:] = np.clip(out, 0, 1) * 255.0
    return DefectTruth("colour_shift", box, px_mm2(bw * bh, dpi), delta_e, grade, {"hue": hue})


def misregistration(printed: np.ndarray, dpi: int, channel: int, dx_mm: float, dy_mm: float, grade: str = ""
                    ) -> DefectTruth:
    """One colour plane printed off register by (dx, dy) mm."""
    h, w = printed.shape[:2]
    a = np.float32([[1, 0, mm_px(dx_mm, dpi)], [0, 1, mm_px(dy_mm, dpi)]])
    printed[..., channel] = cv2.warpAffine(np.ascontiguousarray(printed[..., channel]), a, (w, h),
                                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return DefectTruth("misregistration", (0, 0, w, h), px_mm2(w * h, dpi), float(np.hypot(dx_mm, dy_mm)), grade,
                       {"channel": channel, "dx_mm": dx_mm, "dy_mm": dy_mm})


def blurred_text(printed: np.ndarray, dpi: int, box: tuple[int, int, int, int], sigma_mm: float, grade: str = ""
                 ) -> DefectTruth:
    """Text out of focus in ``box``: a Gaussian blur of ``sigma_mm``."""
    x, y, bw, bh = box
    region = printed[y:y + bh, x:x + bw]
    region[:] = cv2.GaussianBlur(np.ascontiguousarray(region), (0, 0), mm_px(sigma_mm, dpi),
                                 borderType=cv2.BORDER_REPLICATE)
    return DefectTruth("blurred_text", box, px_mm2(bw * bh, dpi), sigma_mm, grade)


def _box_at(cx: float, cy: float, bw: int, bh: int, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x = int(np.clip(cx - bw / 2, 0, shape[1] - bw))
    y = int(np.clip(cy - bh / 2, 0, shape[0] - bh))
    return x, y, bw, bh


def apply_defect(printed: np.ndarray, master: np.ndarray, kind: str, rng: np.random.Generator, dpi: int,
                 grade: str | None = None) -> DefectTruth:
    """Draw one ``kind`` defect (random size/strength within ``grade``, random if None) and return its truth."""
    h, w = master.shape[:2]
    cell = max(1, round(mm_px(1.0, dpi)))
    dark = _darkness_map(master, cell)
    edges = _edge_map(master, cell)
    text_like = (edges > np.quantile(edges, 0.7)) & (dark > 0.04) & (dark < 0.4)
    margin = max(1, round(mm_px(8, dpi) / cell))
    if kind in ("void", "spot"):
        grade, area = _uniform(rng, kind, grade)
        aspect = float(rng.uniform(0.6, 1.0))
        r = np.sqrt(area / np.pi / aspect) * dpi / 25.4
        k = max(1, int(round(2 * r / cell)))
        local = cv2.blur(dark, (k, k))
        if kind == "void":
            cx, cy = _pick(local, local >= VOID_INK, rng, cell, margin)
            return void(printed, master, dpi, cx, cy, r, r * aspect, grade)
        cx, cy = _pick(-local, local < 0.1, rng, cell, margin)
        return spot(printed, dpi, cx, cy, r, r * aspect, float(rng.uniform(15, 60)), grade)
    if kind == "streak":
        grade, x_change = _uniform(rng, kind, grade)
        width = mm_px(float(rng.uniform(0.3, 2.0)), dpi)
        y0, y1 = 0, h
        if rng.random() < 0.5:  # a partial streak, at least 50 mm long
            length = int(mm_px(float(rng.uniform(50, 150)), dpi))
            y0 = int(rng.integers(0, h - length))
            y1 = y0 + length
        lighter = rng.random() < 0.3
        if lighter:  # through the most inked columns of its extent
            cols = cv2.resize(dark, (w, dark.shape[0]), interpolation=cv2.INTER_LINEAR)[y0 // cell:y1 // cell + 1]
            score = cols.mean(axis=0)
            good = np.flatnonzero(score >= np.quantile(score, 0.9))
            x = float(rng.choice(good))
        else:
            x = float(rng.uniform(mm_px(5, dpi), w - mm_px(5, dpi)))
        return streak(printed, dpi, x, width, y0, y1, -x_change if lighter else x_change, grade)
    if kind == "band":
        grade, x_change = _uniform(rng, kind, grade)
        height = mm_px(float(rng.uniform(2, 30)), dpi)
        lighter = rng.random() < 0.25
        if lighter:  # across rows with ink
            rows = dark.mean(axis=1)
            y = float(rng.choice(np.flatnonzero(rows >= np.quantile(rows, 0.8)))) * cell - height / 2
        else:
            y = float(rng.uniform(mm_px(5, dpi), h - height - mm_px(5, dpi)))
        y = float(np.clip(y, 0, h - height))
        return band(printed, dpi, y, height, -x_change if lighter else x_change, grade)
    if kind == "periodic_band":
        grade, amp = _uniform(rng, kind, grade)
        period = mm_px(float(rng.uniform(2, 10)), dpi)
        extent = int(h * rng.uniform(0.4, 1.0))
        y0 = int(rng.integers(0, h - extent + 1))
        return band(printed, dpi, y0, 0, amp, grade, period_px=period, y_end=y0 + extent)
    if kind in ("smear", "blurred_text"):
        side = [round(mm_px(float(rng.uniform(12, 40)), dpi)) for _ in range(2)]
        cx, cy = _pick(cv2.blur(text_like.astype(np.float32), (9, 9)), cv2.blur(text_like.astype(np.float32),
                                                                                 (9, 9)) > 0.5, rng, cell, margin)
        box = _box_at(cx, cy, side[0], side[1], master.shape)
        grade, value = _uniform(rng, kind, grade)
        if kind == "smear":
            return smear(printed, dpi, box, mm_px(value, dpi), grade)
        return blurred_text(printed, dpi, box, value, grade)
    if kind == "colour_shift":
        grade, de = _uniform(rng, kind, grade)
        if rng.random() < 0.5:
            box = (0, 0, w, h)
        else:  # a region: the most inked 60x60 mm or so
            side = round(mm_px(60, dpi))
            local = cv2.blur(dark, (max(1, side // cell),) * 2)
            cx, cy = _pick(local, local >= np.quantile(local, 0.95), rng, cell, margin)
            box = _box_at(cx, cy, min(side, w), min(side, h), master.shape)
        return colour_shift(printed, dpi, box, de, float(rng.uniform(0, 2 * np.pi)), grade)
    if kind == "misregistration":
        grade, shift = _uniform(rng, kind, grade)
        theta = float(rng.uniform(0, 2 * np.pi))
        return misregistration(printed, dpi, int(rng.integers(3)), shift * np.cos(theta), shift * np.sin(theta),
                               grade)
    raise ValueError(f"unknown defect type {kind!r}; expected one of {sorted(GRADES)}")
