"""Print audit: defects of a registered scan against its digital master, in master coordinates.

Pure functions on arrays (uint8 RGB or gray, the scan already in the master's frame, e.g. from
``registration.align``). The page is analysed at ``WORK_DPI`` (a 1 mm² spot is still 6x6 px there),
which keeps an A4 page at 300 dpi well under a second.

1. Photometric model (``print_tone``): per-channel tone curves scan = f_c(master) from binned medians
   over flat pixels, the scanner's blur (sigma fitted at edges) and per-channel sub-pixel offsets (phase
   correlation); the prediction is f_c(blur(master)) shifted by its channel's offset, the residual
   ``scan - prediction`` (positive: the scan is lighter than expected, i.e. ink is missing).
2. Noise floor from the page itself: what remains of a clean scan is largest along edges (sub-pixel
   registration, blur mismatch, JPEG), so at each analysis scale (box means over ``SCALES_MM``) the
   residual's robust scale (1.4826 MAD) is tabulated against the local edge energy of the prediction (in
   ``N_BINS`` quantile bins) and the residual is divided by it: a z-map per scale. A void over text
   removes ink at every stroke (a large positive mean over 0.5-1 mm) while clean text averages to ~0.
3. Components of |z| >= ``Z_THRESH`` (and |mean residual| >= ``MIN_LEVEL``) at any scale: lighter ones are
   voids, darker ones spots, or smears where the master has edges (ink dragged beyond its strokes).
   Blurred text (``print_sharpness``): the residual's least-squares gain on an extra-blur template over 6 mm
   windows, in both directions, against the page's median. Streaks and bands come from 1-D profiles (``print_lines``);
   local components they explain are absorbed. A local defect's or streak's density change is the part
   that neither of the page's two tone fits explains (all pixels, flat pixels: they differ in dark photo
   areas), a streak's also capped by its median contrast over its whole extent. Colour: CIEDE2000 after
   the neutral scanner model (``print_colour``). Misregistration: channel offsets differing by more than
   ``MISREG_MM``.
4. Wrong or missing page: the scan's 1 mm means correlate below ``MIN_CORRELATION`` with the master's, or
   the scan has under ``BLANK_SHARE`` of the master's ink (``page_check`` also covers registration failure).

Density change is reported in % of full scale, positive when the scan is darker than expected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from iqaflow.models.printing import bands as print_lines
from iqaflow.models.printing import delta_e as print_colour
from iqaflow.models.printing import sharpness as print_sharpness
from iqaflow.models.printing import tone as print_tone

WORK_DPI = 150.0
SCALES_MM = (0.5, 1.0, 2.0)
N_BINS = 12
Z_THRESH = 7.0
MIN_LEVEL = 10.0  # levels of 255: weaker local changes are not defects
MIN_SCALE = 0.6  # levels: floor of the noise scale
FLAT_EDGE = 6.0  # edge energy (mean |Sobel|/8 of the blurred prediction, levels/px) below which a pixel is flat
SMEAR_EDGE = 4.0  # 1 mm mean edge energy of the master under a darker defect above which it is a smear
MIN_INK_DEPTH = 8.0  # levels: 1 mm mean ink depth below which missing ink is not measured
MIN_INK_LOSS = 0.5  # share of the expected ink lost over INK_LOSS_MM that is a void
INK_LOSS_MM = 2.0
MISREG_MM = 0.1
MIN_CORRELATION = 0.5
BLANK_SHARE = 0.1
MIN_AREA_MM2 = 0.6  # of the thresholded union over scales
MERGE_MM = 0.5  # components closer than this are one defect
HEATMAP_MM = 1.0  # pixel size of the returned z-map
# What is reported, tuned on pages of seeds 1000+ at 150 and 300 dpi and the unit tests' pages (never the
# benchmark's seeds 0..199): a defect must be both far above the page's noise floor and a visible change.
# On clean pages, spurious specks and streaks (photo content along a column) reached |z| x |change %| of 99
# (122 on seeds 3000+ at 300 dpi, until a change either tone fit explains and a streak's contrast over its
# whole extent bound it: none of 80 clean pages then reaches 40); the weakest true ones (a void over 100 dpi
# text, a 10 % streak on ink) 104 and up (seeds 7000+: 391 at 300 dpi, 421 at 150 dpi). Colour regions under
# ΔE2000 2.5 are the scanner's (clean pages: <= 2.2; a ΔE 3 shift measures >= 2.9).
MIN_Z_CHANGE = 100.0  # peak |z| x |density change, % of full scale| of a void, spot, smear or streak
MIN_REGION_DELTA_E = 2.5


@dataclass(frozen=True)
class Defect:
    type: str
    box: tuple[int, int, int, int]  # x, y, w, h in master px (offset added)
    area_mm2: float
    severity: float  # peak |z| (ΔE2000 for colour_shift, shift mm for misregistration)
    density_change: float  # % of full scale, + darker than expected (ΔE: colour; mm: misregistration, extra blur)


@dataclass(frozen=True)
class NoiseModel:
    """Residual scale (levels) against edge energy per analysis scale; pass a job's accepted pages' model on."""

    edges: np.ndarray  # (n_scales, N_BINS) bin centres of edge energy
    scales: np.ndarray  # (n_scales, N_BINS) robust residual scale


@dataclass(frozen=True)
class Inspection:
    defects: tuple[Defect, ...]
    defect_count: int
    worst_type: str | None
    worst_area_mm2: float
    worst_severity: float
    delta_e_p95: float
    delta_e_max: float
    delta_e_box: tuple[int, int, int, int] | None
    z_map: np.ndarray  # float16 max |z| over scales at HEATMAP_MM per pixel
    noise: NoiseModel | None
    tone_luts: np.ndarray | None = None  # (C, 256) scan = f_c(master)
    blur_px: float = 0.0  # scanner blur at the working resolution
    channel_shift_mm: np.ndarray | None = None  # (C, 2) per-channel (dx, dy) offsets
    correlation: float = 1.0
    extras: dict[str, float] = field(default_factory=dict)


def _significant(d: Defect) -> bool:
    if d.type in ("void", "spot", "smear", "streak"):
        return d.severity * abs(d.density_change) >= MIN_Z_CHANGE
    if d.type == "colour_shift":
        return d.severity >= MIN_REGION_DELTA_E
    if d.type == "band":  # a band no column block confirms has a level of 0
        return abs(d.density_change) * 2.55 >= print_lines.MIN_LEVEL
    return True


def _gray(img: np.ndarray) -> np.ndarray:
    """Mean of the channels (np.mean over the last axis is several times slower than this)."""
    if img.ndim == 2:
        return img
    if img.shape[2] == 1:
        return img[..., 0]
    return (img[..., 0] + img[..., 1] + img[..., 2]) * np.float32(1 / 3)


def _odd(n: float) -> int:
    return max(1, int(round(n)) | 1)


def page_check(scan: np.ndarray, master: np.ndarray, dpi: float) -> tuple[str | None, float]:
    """('missing_page' | 'wrong_page' | None, correlation of 1 mm means) for a registered pair."""
    cell = max(1, round(dpi / 25.4))
    size = (max(2, scan.shape[1] // cell), max(2, scan.shape[0] // cell))
    s = cv2.resize(_gray(scan.astype(np.float32)), size, interpolation=cv2.INTER_AREA)
    m = cv2.resize(_gray(master.astype(np.float32)), size, interpolation=cv2.INTER_AREA)
    m_ink = 1 - m / 255.0
    s_ink = 1 - s / max(float(np.percentile(s, 99)), 1.0)
    if m_ink.mean() > 0.01 and np.clip(s_ink - 0.05, 0, None).mean() < BLANK_SHARE * m_ink.mean():
        return "missing_page", 0.0
    corr = float(np.corrcoef(s.ravel(), m.ravel())[0, 1]) if s.std() > 1e-3 and m.std() > 1e-3 else 0.0
    return ("wrong_page" if corr < MIN_CORRELATION else None), corr


def _noise_table(resid: np.ndarray, energy: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, robust scales) of ``resid`` against ``energy`` over quantile bins."""
    r, e = resid[::step, ::step].ravel(), energy[::step, ::step].ravel()
    order = np.argsort(e, kind="stable")
    chunks = np.array_split(order, N_BINS)
    centres = np.array([np.median(e[c]) for c in chunks])
    # Edge residuals are heavy-tailed: along edges the scale is the larger of the MAD's and the 99.5th
    # percentile's Gaussian equivalent, so the z-map's tails along text match those of paper. Flat bins keep
    # the MAD: there a large defect (a void in a colour patch) could otherwise raise its own floor.
    scales = np.array([1.4826 * np.median(np.abs(r[c] - np.median(r[c]))) for c in chunks])
    for i, c in enumerate(chunks):
        if centres[i] >= FLAT_EDGE / 2:
            scales[i] = max(scales[i], np.percentile(np.abs(r[c] - np.median(r[c])), 99.5) / 2.81)
    scales = np.maximum.accumulate(np.maximum(scales, MIN_SCALE))  # more edge never means less noise
    return centres, scales


def _components(mask: np.ndarray, merge: int) -> tuple[int, np.ndarray, np.ndarray]:
    joined = cv2.dilate(mask.astype(np.uint8), np.ones((merge, merge), np.uint8)) if merge > 1 else mask
    n, labels, stats, _ = cv2.connectedComponentsWithStats(joined.astype(np.uint8), connectivity=8)
    return n, labels * mask, stats


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], pad: int = 0) -> float:
    """Share of box ``a``'s area inside box ``b`` grown by ``pad``."""
    x0, y0 = max(a[0], b[0] - pad), max(a[1], b[1] - pad)
    x1, y1 = min(a[0] + a[2], b[0] + b[2] + pad), min(a[1] + a[3], b[1] + b[3] + pad)
    return max(0, x1 - x0) * max(0, y1 - y0) / max(1, a[2] * a[3])


def _explained(level: float, alt: float) -> float:
    """The part of ``level`` that the alternative tone fit's ``alt`` leaves unexplained: the smaller of the
    two when they agree in sign, else 0."""
    return float(np.sign(level) * min(abs(level), abs(alt))) if level * alt > 0 else 0.0


def inspect(scan: np.ndarray, master: np.ndarray, dpi: float, offset: tuple[int, int] = (0, 0),
            noise: NoiseModel | None = None) -> Inspection:
    """Defects and page metrics of a registered ``scan`` against ``master`` (same shape) at ``dpi``.

    ``offset`` (x0, y0) is added to every box (the overlap box's origin from ``align``). ``noise``: a
    noise model from accepted scans of the same job, used instead of the page's own estimate."""
    if scan.shape != master.shape:
        raise ValueError(f"expected a registered scan of the master's shape, got {scan.shape} and {master.shape}")
    k = max(1, int(round(dpi / WORK_DPI)))
    wd = dpi / k
    mm = wd / 25.4
    size = (scan.shape[1] // k, scan.shape[0] // k)

    def small(img: np.ndarray) -> np.ndarray:
        out = cv2.resize(img, size, interpolation=cv2.INTER_AREA) if k > 1 else img
        out = out.astype(np.float32)
        return out if out.ndim == 3 else out[..., None]

    s, m = small(scan), small(master)
    up = float(k)
    px_mm2 = (25.4 / wd) ** 2

    def to_master(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return (int(box[0] * up) + offset[0], int(box[1] * up) + offset[1], int(box[2] * up), int(box[3] * up))

    page, corr = page_check(s, m, wd)
    if page is not None:
        full = to_master((0, 0, size[0], size[1]))
        d = Defect(page, full, size[0] * size[1] * px_mm2, 1.0, 0.0)
        return Inspection((d,), 1, page, d.area_mm2, 1.0, float("nan"), float("nan"), None,
                          np.zeros((1, 1), np.float16), None, correlation=corr)

    # 1. Photometric model.
    mg = _gray(m)
    sob = lambda g: (np.abs(cv2.Sobel(g, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(g, cv2.CV_32F, 0, 1))) / 8  # noqa: E731
    energy0 = sob(cv2.GaussianBlur(mg, (0, 0), 0.7))
    flat = cv2.dilate((energy0 >= FLAT_EDGE).astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
    luts, medians, counts, bin_x = print_tone.fit_tone_curves(s, m, flat)
    sigma = print_tone.estimate_blur(_gray(s), mg, luts.mean(axis=0), ~flat)
    mb = cv2.GaussianBlur(m, (0, 0), sigma) if sigma > 0 else m.copy()
    mb = mb if mb.ndim == 3 else mb[..., None]
    # Thin text has no flat ink pixels: refit the curves against the blurred master on all pixels so the
    # dark end is measured (stroke centres), not extrapolated; the flat fit keeps its role for colour.
    flat_luts = luts
    luts = print_tone.fit_tone_curves(s, mb, np.ones_like(flat))[0]
    pred = print_tone.apply_luts(mb, luts)
    shifts = print_tone.channel_shifts(s, pred) if s.shape[2] == 3 else np.zeros((1, 2))
    # The all-pixel fit's dark end follows text strokes, whose blurred centres scan lighter than flat ink:
    # in dark flat areas (photos) it can sit 10-20 levels above the flat fit. Both are the page's own tone
    # measurements, so a change that either explains is the tone model's uncertainty, not a defect: each
    # line and local defect is also measured against the flat fit's prediction (``alt``).
    alt = print_tone.apply_luts(mb, flat_luts)
    for c in range(s.shape[2]):
        if np.hypot(*shifts[c]) > 0.05:
            pred[..., c] = print_tone.shift_image(np.ascontiguousarray(pred[..., c]), *shifts[c])
            alt[..., c] = print_tone.shift_image(np.ascontiguousarray(alt[..., c]), *shifts[c])
    resid = _gray(s) - _gray(pred)
    tone_gap = _gray(pred) - _gray(alt)  # alternative residual = resid + tone_gap

    # 2. Noise floor against edge energy, per scale.
    energy = sob(_gray(pred))
    step = max(1, int(np.sqrt(resid.size / 150_000)))
    zs, levels, tables = [], [], []
    for i, smm in enumerate(SCALES_MM):
        n = _odd(smm * mm)
        r_s = cv2.blur(resid, (n, n)) if n > 1 else resid
        e_s = cv2.blur(energy, (n, n)) if n > 1 else energy
        centres, scales = _noise_table(r_s, e_s, step)
        if noise is not None:
            centres, scales = noise.edges[i], noise.scales[i]
        tables.append((centres, scales))
        zs.append(r_s / np.interp(e_s, centres, scales).astype(np.float32))
        levels.append(r_s)
    model = NoiseModel(np.array([t[0] for t in tables]), np.array([t[1] for t in tables]))

    # 3a. Lines from profiles.
    lines = (print_lines.find_streaks(resid, flat, wd) + print_lines.find_bands(resid, flat, wd)
             + print_lines.find_periodic(resid, flat, wd))
    defects: list[Defect] = []
    line_boxes = []
    depth = np.maximum(float(np.percentile(_gray(pred), 99.5)) - _gray(pred), 0)  # expected ink, levels
    inked_flat = flat & (depth >= MIN_INK_DEPTH)  # where a lighter line (less ink) can show: once per page
    for ln in lines:
        line_boxes.append(ln.box)
        x, y, bw, bh = ln.box
        area = bw * bh * px_mm2 if ln.kind == "band" else bw * bh * px_mm2
        level = ln.level
        if ln.kind == "streak":
            # A streak is one change along its whole extent: its flat pixels' median against the columns
            # beside it must confirm the profiles' level (photo content that lines up in a column for a
            # segment or two does not: clean pages reach 4 % in the profiles, <= 0.2 % over the extent), in
            # the residual of either tone fit.
            # Less ink shows only where there is ink: a lighter streak is measured over inked flat pixels.
            sel = inked_flat if level > 0 else flat
            level = _explained(level, print_lines.streak_contrast(resid, sel, ln.box))
            level = _explained(level, print_lines.streak_contrast(resid + tone_gap, sel, ln.box))
        elif ln.period_mm is None:
            # A band is a change along the feed: confirmed inside column blocks against the rows beside it,
            # not a step made by which regions a row's flat pixels come from (print_lines.band_contrast).
            sel = inked_flat if level > 0 else flat
            level = _explained(level, print_lines.band_contrast(resid, sel, ln.box, level))
        defects.append(Defect(ln.kind, to_master(ln.box), area, ln.z, -level / 2.55))

    # 3b. Local components.
    pos = np.zeros(resid.shape, bool)
    neg = np.zeros(resid.shape, bool)
    for z, r in zip(zs, levels, strict=True):
        pos |= (z >= Z_THRESH) & (r >= MIN_LEVEL)
        neg |= (z <= -Z_THRESH) & (r <= -MIN_LEVEL)
    # Missing ink: the local least-squares gain of the residual on the expected ink depth, F = <r d> / <d d>
    # over 1 mm (d = paper - prediction): 1 where all ink is gone, ~0 on a clean page. Along text the raw
    # residual is noisy, but a void removes every stroke together, which this matched filter adds up (over
    # INK_LOSS_MM: at 1 mm, thin strokes under a slightly wrong blur estimate scatter too much).
    n1 = _odd(INK_LOSS_MM * mm)
    den = cv2.blur(depth * depth, (n1, n1))
    inked = cv2.blur(depth, (n1, n1)) >= MIN_INK_DEPTH
    gain = np.where(inked, cv2.blur(resid * depth, (n1, n1)) / np.maximum(den, 1e-6), 0).astype(np.float32)
    vals = gain[::step, ::step][inked[::step, ::step]]
    fmask = np.zeros(resid.shape, bool)
    if vals.size > 100:
        centre = float(np.median(vals))
        spread = max(1.4826 * float(np.median(np.abs(vals - centre))), 0.01)
        # ... and a net lighter 2 mm mean: the tail of one blurred edge inside the window is not missing ink.
        fmask = (inked & (gain - centre >= MIN_INK_LOSS) & ((gain - centre) / spread >= Z_THRESH)
                 & (levels[-1] >= MIN_LEVEL / 2))
        pos |= fmask
    zmax = np.max(np.abs(np.stack(zs)), axis=0)
    gap_level = cv2.blur(tone_gap, (_odd(mm), _odd(mm)))
    fine = zs[0]
    merge = _odd(MERGE_MM * mm)
    e_mm = cv2.blur(energy, (_odd(mm), _odd(mm)))
    local: list[tuple[Defect, tuple[int, int, int, int]]] = []
    for sign, mask in ((1, pos), (-1, neg)):
        n, labels, stats = _components(mask, merge)
        for i in range(1, n):
            x, y, bw, bh = (int(v) for v in stats[i][:4])
            sl = (slice(y, y + bh), slice(x, x + bw))
            comp = labels[sl] == i
            peak = float(zmax[sl][comp].max())
            if peak < Z_THRESH:  # missing-ink evidence alone (fmask) shapes a defect but does not make one
                continue
            core = comp & (fine[sl] * sign >= Z_THRESH / 2)
            if core.sum() >= 2:
                ys, xs = np.nonzero(core)
                box = (x + int(xs.min()), y + int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1)
            else:
                box = (x, y, bw, bh)
            # Area: the residual integrated over the component over its typical full contrast - blur spreads a
            # defect but keeps its integral, so small spots are not inflated by their blurred rims.
            contrast = np.clip(resid[sl][comp] * sign, 0, None)
            full = float(np.percentile(contrast, 95)) if contrast.size else 0.0
            area = float(contrast.sum()) / full * px_mm2 if full > 0 else float(comp.sum()) * px_mm2
            r1 = float(np.mean(levels[1][sl][comp]))
            change = -_explained(r1, r1 + float(np.mean(gap_level[sl][comp]))) / 2.55
            if sign > 0:
                kind = "void"
            else:
                kind = "smear" if float(np.median(e_mm[sl][comp])) >= SMEAR_EDGE else "spot"
            if any(_overlaps(box, lb, merge) > 0.5 for lb in line_boxes):
                continue
            local.append((Defect(kind, to_master(box), area, peak, change), box))

    # 3c. Blurred text: the scan's text softer than the page's own scanner blur predicts (``print_sharpness``).
    for br in print_sharpness.find_blurred_text(resid, _gray(pred), mm):
        if any(_overlaps(br.box, b, merge) > 0.2 for _, b in local):
            continue
        local.append((Defect("blurred_text", to_master(br.box), br.area_mm2, br.z, br.extra_mm), br.box))
    defects += [d for d, _ in local]

    # 3d. Misregistration and colour.
    de_p95 = de_max = float("nan")
    de_box = None
    shift_mm = shifts / mm
    if s.shape[2] == 3:
        rel = shift_mm - np.median(shift_mm, axis=0)
        spread_mm = float(max(np.hypot(*(shift_mm[a] - shift_mm[b])) for a in range(3) for b in range(a + 1, 3)))
        if spread_mm > MISREG_MM:
            worst_c = int(np.argmax(np.hypot(rel[:, 0], rel[:, 1])))
            full = to_master((0, 0, size[0], size[1]))
            defects.append(Defect("misregistration", full, size[0] * size[1] * px_mm2, spread_mm,
                                  float(np.hypot(*rel[worst_c]))))
        nluts = print_tone.neutral_luts(*print_tone.fit_neutral(medians, counts, bin_x))
        npred = print_colour.neutral_prediction(mb, nluts)
        for c in range(3):
            if np.hypot(*shifts[c]) > 0.05:
                npred[..., c] = print_tone.shift_image(np.ascontiguousarray(npred[..., c]), *shifts[c])
        col = print_colour.colour_difference(s, npred, m, nluts, wd, flat)
        de_p95, de_max = col.delta_e_p95, col.delta_e_max
        de_box = to_master(col.worst_box) if col.worst_box is not None else None
        for box, mean_de, area in col.regions:
            if any(_overlaps(box, b, merge) > 0.3 for b in [b for _, b in local] + line_boxes):
                continue
            defects.append(Defect("colour_shift", to_master(box), area, mean_de, mean_de))

    defects = [d for d in defects if _significant(d)]
    hm = max(1, round(HEATMAP_MM * mm))
    z_map = cv2.resize(zmax, (max(1, size[0] // hm), max(1, size[1] // hm)), interpolation=cv2.INTER_AREA)
    worst = max(defects, key=lambda d: d.area_mm2 if d.type not in ("misregistration",) else 0.0, default=None)
    return Inspection(tuple(defects), len(defects), worst.type if worst else None,
                      worst.area_mm2 if worst else 0.0, worst.severity if worst else 0.0, de_p95, de_max, de_box,
                      z_map.astype(np.float16), model, luts, sigma, shift_mm, corr)


def unregistered(scan: np.ndarray, master: np.ndarray, dpi: float) -> Inspection:
    """The verdict on a scan that could not be registered: a missing page when it holds no ink, else a wrong page."""
    s = _gray(scan.astype(np.float32))
    blank = float(np.percentile(s, 99.5) - np.percentile(s, 0.5)) < 60
    kind = "missing_page" if blank else "wrong_page"
    full = (0, 0, master.shape[1], master.shape[0])
    d = Defect(kind, full, master.shape[0] * master.shape[1] * (25.4 / dpi) ** 2, 1.0, 0.0)
    return Inspection((d,), 1, kind, d.area_mm2, 1.0, float("nan"), float("nan"), None,
                      np.zeros((1, 1), np.float16), None, correlation=0.0)


def inspect_page(scan: np.ndarray, master: np.ndarray, dpi: float, noise: NoiseModel | None = None,
                 method: str = "tiles") -> Inspection:
    """Register (``registration.align``) then inspect; a scan that cannot be registered (including a degenerate
    homography) is a missing page (no ink) or a wrong page."""
    from iqaflow.models.printing.registration import RegistrationError, align, overlap_box

    try:
        got, ref, reg, _ = align(scan, master, method)  # type: ignore[arg-type]
        x0, y0, _, _ = overlap_box(reg.homography, scan.shape, master.shape)
    except (RegistrationError, np.linalg.LinAlgError, cv2.error):
        return unregistered(scan, master, dpi)
    return inspect(got, ref, dpi, (x0, y0), noise)
