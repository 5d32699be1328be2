"""Streaks along the feed, bands across it and periodic banding, from 1-D profiles of the residual.

Input: the photometrically normalised residual ``scan - f(master)`` (gray, levels 0-255, positive =
scan lighter) at the working resolution and the master's flat mask (edges differ by blur, so only flat
pixels count). The feed runs from top to bottom of the master: streaks are columns, bands rows.

* Bands: the median of the residual over each row's flat pixels, detrended by a running median over
  ``BAND_TREND_MM`` (longer than the tallest band, 30 mm), scored by a robust z (median, 1.4826 MAD).
  Rows above ``LINE_Z`` and ``MIN_LEVEL`` levels form a band.
* Streaks may cover part of the page only, so columns are profiled in segments of ``SEG_MM`` down the
  page (a streak of >= 2 segments' length fills at least one), detrended across by a running median over
  ``STREAK_TREND_MM`` (wider than the widest streak, 2 mm) and z-scored with the scale pooled over all
  segments; flagged columns of consecutive segments that overlap join into one streak.
* Periodic banding: the spectrum of the (detrended) row profile; a peak at a period of ``PERIOD_MM``
  whose power exceeds ``PERIODIC_RATIO`` times the median power of the neighbouring periods, with an
  amplitude of at least ``MIN_LEVEL``, is banding; its extent is where the band-passed profile's envelope
  exceeds ``EXTENT_LEVEL`` of its peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, median_filter, uniform_filter1d

BAND_TREND_MM = 70.0
STREAK_TREND_MM = 6.0
SEG_MM = 25.0
LINE_Z = 7.0
MIN_LEVEL = 5.0  # levels (of 255): a line fainter than this is not reported
LOCAL_MM = 20.0  # window of the local robust scale of a profile
MIN_SCALE = 0.4  # levels: floor of a profile's noise scale
PERIOD_MM = (1.8, 11.0)
PERIODIC_RATIO = 40.0
EXTENT_LEVEL = 0.35
MIN_FLAT = 0.05  # share of flat pixels a row/column needs; fewer takes the profile's median
BAND_BLOCKS = 8  # column blocks in which a band's change is confirmed (band_contrast)
BLOCK_MIN_PX = 30  # flat pixels a block needs inside and on each side of a band to measure it
BESIDE_PX = 30  # rows on each side of a band it is compared with (at most; fewer for a thinner band)


@dataclass(frozen=True)
class Line:
    kind: str  # "streak" or "band"
    box: tuple[int, int, int, int]  # x, y, w, h (working px)
    level: float  # mean residual across the line, levels (positive: scan lighter)
    z: float
    period_mm: float | None = None


def _profile(values: np.ndarray, flat: np.ndarray, axis: int) -> np.ndarray:
    """Median of ``values`` over ``flat`` pixels along ``axis``; too-sparse entries take the median.

    (A sort with the other pixels as +inf, then the middle of each line's flat count: np.nanmedian loops
    in Python over lines.)"""
    masked = np.where(flat, values, np.inf).astype(np.float32)
    masked.sort(axis=axis)
    n = flat.sum(axis=axis)
    mid = np.maximum(n - 1, 0) // 2
    idx = np.expand_dims(mid, axis)
    lo = np.take_along_axis(masked, idx, axis=axis).squeeze(axis)
    hi = np.take_along_axis(masked, np.expand_dims(np.maximum(n, 1) // 2, axis), axis=axis).squeeze(axis)
    prof = np.where(n % 2 == 1, lo, (lo + hi) / 2).astype(np.float64)
    few = (n < MIN_FLAT * values.shape[axis]) | ~np.isfinite(prof)
    prof[few] = np.median(prof[~few]) if (~few).any() else 0.0
    return prof


def _detrend(prof: np.ndarray, window: int) -> np.ndarray:
    window = max(3, min(window, prof.size) | 1)
    return prof - median_filter(prof, size=window, mode="nearest")


def _robust(z: np.ndarray) -> tuple[float, float]:
    centre = float(np.median(z))
    return centre, max(1.4826 * float(np.median(np.abs(z - centre))), MIN_SCALE)


def _local_scale(prof: np.ndarray, centre: float, scale: float, window: int) -> np.ndarray:
    """Robust scale of a profile around each sample (busy content such as photos varies more than paper),
    never below the profile's global scale."""
    window = max(3, min(window, prof.size) | 1)
    return np.maximum(1.4826 * median_filter(np.abs(prof - centre), size=window, mode="nearest"), scale)


def _runs(on: np.ndarray, gap: int = 0) -> list[tuple[int, int]]:
    """[start, stop) of the True runs of ``on``, joining runs ``gap`` or fewer apart."""
    idx = np.flatnonzero(on)
    runs: list[list[int]] = []
    for i in idx:
        if runs and i - runs[-1][1] <= gap:
            runs[-1][1] = int(i) + 1
        else:
            runs.append([int(i), int(i) + 1])
    return [(a, b) for a, b in runs]


def find_bands(residual: np.ndarray, flat: np.ndarray, dpi: float) -> list[Line]:
    """Bands across the feed (full-width rows)."""
    prof = _detrend(_profile(residual[:, ::2], flat[:, ::2], axis=1), round(BAND_TREND_MM * dpi / 25.4))
    centre, scale = _robust(prof)
    z = (prof - centre) / _local_scale(prof, centre, scale, round(LOCAL_MM * dpi / 25.4))
    on = (np.abs(z) >= LINE_Z) & (np.abs(prof - centre) >= MIN_LEVEL)
    out = []
    for a, b in _runs(on, gap=1):
        lev = float(np.mean(prof[a:b] - centre))
        out.append(Line("band", (0, a, residual.shape[1], b - a), lev, float(np.max(np.abs(z[a:b])))))
    return out


def find_periodic(residual: np.ndarray, flat: np.ndarray, dpi: float) -> list[Line]:
    """Periodic banding along the feed (one Line covering its extent, or none)."""
    prof = _detrend(_profile(residual[:, ::2], flat[:, ::2], axis=1), round(3 * PERIOD_MM[1] * dpi / 25.4))
    prof = prof - prof.mean()
    n = prof.size
    spec = np.fft.rfft(prof * np.hanning(n))
    power = np.abs(spec) ** 2
    periods = np.full(power.size, np.inf)
    periods[1:] = n / np.arange(1, power.size) * 25.4 / dpi
    band = (periods >= PERIOD_MM[0]) & (periods <= PERIOD_MM[1])
    wide = (periods >= 1.0) & (periods <= 3 * PERIOD_MM[1])
    if band.sum() < 3:
        return []
    k = int(np.flatnonzero(band)[np.argmax(power[band])])
    peak = float(power[max(0, k - 1):k + 2].sum())  # the peak spreads over neighbouring bins (window)
    floor = float(np.median(power[wide])) * 3
    # Amplitude of a sinusoid from its windowed spectrum: |X| ~ A n / 4 with a Hann window.
    amp = 4 * float(np.sqrt(peak / 1.5)) / n
    if peak < PERIODIC_RATIO * floor or amp < MIN_LEVEL:
        return []
    keep = np.zeros_like(spec)
    lo, hi = max(1, int(k * 0.8)), int(np.ceil(k * 1.2)) + 1
    keep[lo:hi] = spec[lo:hi]
    passed = np.fft.irfft(keep, n)
    period_px = n / k
    env = maximum_filter1d(np.abs(passed), max(3, int(period_px)))
    env = uniform_filter1d(env, max(3, int(period_px)))
    runs = _runs(env >= EXTENT_LEVEL * env.max(), gap=int(period_px))
    a, b = max(runs, key=lambda r: r[1] - r[0])
    return [Line("band", (0, a, residual.shape[1], b - a), amp, float(peak / max(floor, 1e-12)),
                 period_px * 25.4 / dpi)]


def find_streaks(residual: np.ndarray, flat: np.ndarray, dpi: float) -> list[Line]:
    """Streaks along the feed, full or partial length."""
    h, w = residual.shape
    seg = max(8, round(SEG_MM * dpi / 25.4))
    starts = list(range(0, max(1, h - seg // 2), seg))
    window = round(STREAK_TREND_MM * dpi / 25.4)
    profs = np.stack([_detrend(_profile(residual[s:s + seg], flat[s:s + seg], axis=0), window) for s in starts])
    centre, scale = _robust(profs)
    local = round(LOCAL_MM * dpi / 25.4)
    z = (profs - centre) / np.stack([_local_scale(p, centre, scale, local) for p in profs])
    on = (np.abs(z) >= LINE_Z) & (np.abs(profs - centre) >= MIN_LEVEL)
    # Chains of column runs over consecutive segments: (x0, x1, first segment, last segment, sign).
    chains: list[list[int]] = []
    for i in range(len(starts)):
        for sign in (1, -1):
            for a, b in _runs(on[i] & (np.sign(z[i]) == sign), gap=1):
                for ch in chains:
                    if ch[3] == i - 1 and ch[4] == sign and a < ch[1] + 1 and b > ch[0] - 1:
                        ch[0], ch[1], ch[3] = min(ch[0], a), max(ch[1], b), i
                        break
                else:
                    chains.append([a, b, i, i, sign])
    out = []
    for x0, x1, s0, s1, _ in chains:
        y0, y1 = starts[s0], min(h, starts[s1] + seg)
        y0, y1 = _extent(residual, x0, x1, y0, y1, seg)
        zz = z[s0:s1 + 1, x0:x1]
        lev = float(np.mean(profs[s0:s1 + 1, x0:x1] - centre))
        out.append(Line("streak", (x0, y0, x1 - x0, y1 - y0), lev, float(np.max(np.abs(zz)))))
    return out


def streak_contrast(img: np.ndarray, flat: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Median of ``img`` over a streak's ``flat`` pixels less that over those of the columns beside it (the
    streak's change over its whole extent, which a profile's segment can overstate)."""
    x, y, w, h = box
    pad = max(3, w)
    inside = img[y:y + h, x:x + w][flat[y:y + h, x:x + w]]
    cols = np.r_[max(0, x - 2 * pad):max(0, x - pad), x + w + pad:min(img.shape[1], x + w + 2 * pad)]
    beside = img[y:y + h, cols][flat[y:y + h, cols]]
    if inside.size == 0 or beside.size == 0:
        return 0.0
    return float(np.median(inside) - np.median(beside))


def band_contrast(img: np.ndarray, flat: np.ndarray, box: tuple[int, int, int, int], level: float) -> float:
    """A band's change within the columns it is measured in: per block of columns, the median of ``img`` over
    the band's ``flat`` pixels less that over the rows just above it, and less that just below it; the
    smaller of the two where they agree (a band differs from both sides). Returns the block change that best
    confirms ``level`` (same sign, largest), else 0.

    A row profile is a median over whatever flat pixels a row has, so it also steps where the *mix* of
    regions changes: a patch whose tone the model misses by a few levels, alone in the rows where text takes
    the rest of the width, moves the profile without any row of the print changing, and the patch's own
    edge is a step on one side only. A band, a change along the feed, shows in every block that has flat
    pixels of the kind it alters, against both sides."""
    _, y, _, h = box
    gap, width = 3, max(6, min(h, BESIDE_PX))
    above = slice(max(0, y - gap - width), max(0, y - gap))
    below = slice(y + h + gap, y + h + gap + width)
    edges = np.linspace(0, img.shape[1], BAND_BLOCKS + 1).astype(int)
    best = 0.0
    for x0, x1 in zip(edges[:-1], edges[1:], strict=True):
        inside = img[y:y + h, x0:x1][flat[y:y + h, x0:x1]]
        sides = [img[rows, x0:x1][flat[rows, x0:x1]] for rows in (above, below)]
        if inside.size < BLOCK_MIN_PX or min(side.size for side in sides) < BLOCK_MIN_PX:
            continue
        centre = float(np.median(inside))
        up, down = (centre - float(np.median(side)) for side in sides)
        change = float(np.sign(up) * min(abs(up), abs(down))) if up * down > 0 else 0.0
        if change * level > 0 and abs(change) > abs(best):
            best = change
    return best


def _extent(residual: np.ndarray, x0: int, x1: int, y0: int, y1: int, seg: int) -> tuple[int, int]:
    """Refine a streak's rows: where its contrast to the neighbouring columns (smoothed along it) stays above
    ``EXTENT_LEVEL`` of its median, searched up to a segment beyond the flagged segments."""
    h, w = residual.shape
    a, b = max(0, y0 - seg), min(h, y1 + seg)
    pad = max(3, x1 - x0)
    left, right = residual[a:b, max(0, x0 - 2 * pad):max(0, x0 - pad)], residual[a:b, x1 + pad:min(w, x1 + 2 * pad)]
    around = np.concatenate([left, right], axis=1)
    base = np.median(around, axis=1) if around.shape[1] else 0.0
    contrast = uniform_filter1d(residual[a:b, x0:x1].mean(axis=1) - base, max(3, seg // 8), mode="nearest")
    core = contrast[y0 - a:y1 - a]
    level = float(np.median(core)) if core.size else 0.0
    if abs(level) < 1e-6:
        return y0, y1
    runs = _runs(contrast * np.sign(level) > EXTENT_LEVEL * abs(level), gap=seg // 4)
    best = max(runs, key=lambda r: min(r[1], y1 - a) - max(r[0], y0 - a), default=(y0 - a, y1 - a))
    return a + best[0], a + best[1]
