"""Photometric model of a scan against its master: tone curves, scanner blur and colour-plane offsets.

Pure functions on float32 arrays at the inspector's working resolution (values 0-255).

* ``fit_tone_curves``: per channel, scan = f_c(master) as the median scan value in each 4-level bin of
  the master (a joint histogram, so medians are exact and cheap), over *flat* master pixels only (edges
  differ by blur), made monotone and interpolated over empty bins. A median per bin is robust to defects
  covering under half of a bin's pixels. The counts come back too: ``fit_neutral`` reuses them.
* ``fit_neutral``: the constrained model of a neutral scanner, f_c(v) = w_c (b + (1 - b) (v/255)^g): one
  curve shape (gamma g, black level b) for all channels, scaled by each channel's paper white w_c: the
  scanner variation a colour measurement must calibrate away, and nothing else (a chromatic shift of the
  print does not fit it, so it stays in the colour difference). Per-channel black offsets are not modelled.
* ``estimate_blur``: the Gaussian sigma (working px) that, applied to the master before its tone curve,
  best predicts the scan at edges (median absolute residual over edge pixels) - the scanner's optics.
* ``channel_shifts``: each channel's sub-pixel offset of the scan against its prediction by phase
  correlation; a plane printed off register shows as one channel offset from the others.
"""

from __future__ import annotations

import cv2
import numpy as np

BIN = 4  # master levels per tone-curve bin
N_BINS = 256 // BIN
MIN_COUNT = 30  # pixels a bin needs to count
BLUR_CANDIDATES = (0.0, 0.35, 0.55, 0.75, 0.95, 1.2, 1.5)  # working px
GAMMAS = np.arange(0.6, 1.6, 0.01)
BLACKS = np.arange(0.0, 0.1001, 0.005)
OUTLIER_LEVELS = 1.5  # levels: bins off the neutral model by more than this are down-weighted


def fit_tone_curves(scan: np.ndarray, master: np.ndarray, flat: np.ndarray, step: int = 2
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(luts (C, 256) float32, bin medians, bin counts, bin mean master values (each (C, N_BINS))) from
    flat pixels (every ``step``-th row) of float images (H, W, C). A bin's x is the mean master value in
    it, not its centre: masters have few distinct values (paper is exactly 255)."""
    sel = flat[::step]
    n_c = scan.shape[2]
    luts = np.empty((n_c, 256), np.float32)
    medians = np.full((n_c, N_BINS), np.nan)
    counts = np.zeros((n_c, N_BINS))
    xs = np.full((n_c, N_BINS), np.nan)
    for c in range(n_c):
        m = master[::step, :, c][sel]
        s = scan[::step, :, c][sel]
        mb = np.clip(m, 0, 255).astype(np.int32) // BIN
        sv = np.clip(s + 0.5, 0, 255).astype(np.int32)
        hist = np.bincount(mb * 256 + sv, minlength=N_BINS * 256).reshape(N_BINS, 256)
        cnt = hist.sum(axis=1)
        cum = np.cumsum(hist, axis=1)
        ok = cnt >= MIN_COUNT
        # Median to a fraction of a level: interpolate within the level where the cumulative count crosses half.
        half = cnt / 2.0
        k = np.argmax(cum >= half[:, None], axis=1)
        below = np.where(k > 0, cum[np.arange(N_BINS), np.maximum(k - 1, 0)], 0)
        inside = np.maximum(hist[np.arange(N_BINS), k], 1)
        med = k - 0.5 + (half - below) / inside
        mean_x = np.bincount(mb, weights=m, minlength=N_BINS) / np.maximum(cnt, 1)
        medians[c, ok] = med[ok]
        counts[c] = cnt
        xs[c, ok] = mean_x[ok]
        if ok.sum() >= 2:
            x, y = mean_x[ok], np.maximum.accumulate(med[ok])  # monotone: more ink never scans lighter
            luts[c] = np.interp(np.arange(256), x, y)
            # Outside the fitted range continue with unit slope (better than a flat extension).
            lo, hi = x[0], x[-1]
            luts[c, : int(lo)] = y[0] - (lo - np.arange(int(lo)))
            luts[c, int(hi) + 1:] = y[-1] + (np.arange(int(hi) + 1, 256) - hi)
        else:
            luts[c] = np.arange(256) + (np.nanmedian(s - m) if s.size else 0.0)
    return luts, medians, counts, xs


def apply_lut(values: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """A 256-entry curve applied to float values 0-255 (rounded to whole levels: cv2.LUT speed; the half
    level lost is far below scanner noise)."""
    idx = np.clip(values + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(idx, lut.astype(np.float32).reshape(256, 1))


def apply_luts(img: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """Per-channel curves (C, 256) applied to float (H, W, C)."""
    return np.stack([apply_lut(np.ascontiguousarray(img[..., c]), luts[c]) for c in range(img.shape[2])], axis=2)


def fit_neutral(medians: np.ndarray, counts: np.ndarray, xs: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(gamma, black, whites (C,)) of the neutral scanner model s_c = w_c (b + (1 - b) (v/255)^gamma) fitted to
    the tone curves' bin medians (``xs``: the bins' mean master values).

    Each bin weighs by sqrt(count), so paper white pins each channel's w_c; gamma and the black level b are
    shared by all channels (a grid), so a chromatic shift of the print cannot be absorbed by them."""
    ok = np.isfinite(medians) & np.isfinite(xs)
    base_w = np.where(ok, counts, 0.0)  # (sqrt(count))^2
    y = np.nan_to_num(medians)
    base = (np.nan_to_num(xs) / 255.0)[None, None]  # (1, 1, C, bins)
    g = GAMMAS[:, None, None, None]
    b = BLACKS[None, :, None, None]
    shape = b + (1 - b) * base**g  # (G, B, C, bins)
    w2 = base_w
    for _ in range(3):  # reweighted: bins the neutral model cannot explain (a shifted colour) lose their say
        whites = (w2 * shape * y).sum(-1) / np.maximum((w2 * shape**2).sum(-1), 1e-12)  # (G, B, C)
        err = (w2 * (whites[..., None] * shape - y) ** 2).sum(axis=(-1, -2))
        i, j = np.unravel_index(int(np.argmin(err)), err.shape)
        res = whites[i, j][:, None] * shape[i, j] - y
        w2 = base_w / (1.0 + (res / OUTLIER_LEVELS) ** 2)
    return float(GAMMAS[i]), float(BLACKS[j]), whites[i, j]


def neutral_luts(gamma: float, black: float, whites: np.ndarray) -> np.ndarray:
    v = np.arange(256) / 255.0
    return np.stack([w * (black + (1 - black) * v**gamma) for w in whites]).astype(np.float32)


def estimate_blur(scan_gray: np.ndarray, master_gray: np.ndarray, lut: np.ndarray, edges: np.ndarray,
                  step: int = 3) -> float:
    """The scanner's Gaussian blur (working px) that best explains the scan at the master's edges."""
    sel = edges[::step, ::step]
    if sel.sum() < 50:
        return 0.5
    target = scan_gray[::step, ::step][sel]
    best, best_err = 0.0, np.inf
    for sigma in BLUR_CANDIDATES:
        blurred = cv2.GaussianBlur(master_gray, (0, 0), sigma) if sigma > 0 else master_gray
        err = float(np.median(np.abs(apply_lut(blurred[::step, ::step][sel], lut) - target)))
        if err < best_err:
            best, best_err = sigma, err
    return best


def channel_shifts(scan: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(C, 2) offsets (dx, dy) in px of each scan channel against its prediction (phase correlation on a
    central DFT-friendly crop, halved when large: sub-pixel precision is kept, the cost quartered)."""
    f = 2 if min(scan.shape[:2]) > 1000 else 1
    h, w = scan.shape[0] // f, scan.shape[1] // f
    ch, cw = cv2.getOptimalDFTSize(h) , cv2.getOptimalDFTSize(w)
    ch, cw = (ch if ch <= h else _smaller_dft(h)), (cw if cw <= w else _smaller_dft(w))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    win = cv2.createHanningWindow((cw, ch), cv2.CV_32F)
    out = np.zeros((scan.shape[2], 2))
    for c in range(scan.shape[2]):
        pair = []
        for img in (pred, scan):
            chan = np.ascontiguousarray(img[..., c])
            if f > 1:
                chan = cv2.resize(chan, (scan.shape[1] // f, scan.shape[0] // f), interpolation=cv2.INTER_AREA)
            pair.append(np.ascontiguousarray(chan[y0:y0 + ch, x0:x0 + cw]))
        (dx, dy), response = cv2.phaseCorrelate(pair[0], pair[1], win)
        if response > 0.05 and abs(dx) < cw / 4 and abs(dy) < ch / 4:
            out[c] = refine_shift(np.ascontiguousarray(scan[..., c]), np.ascontiguousarray(pred[..., c]),
                                  (dx * f, dy * f))
    return out


def refine_shift(scan: np.ndarray, pred: np.ndarray, start: tuple[float, float], iterations: int = 3,
                 step: int = 2) -> tuple[float, float]:
    """Gauss-Newton (Lucas-Kanade) refinement of a translation of ``pred`` onto ``scan``: phase correlation's
    sub-pixel peak is biased by a few tenths of a pixel on smooth pages. Residuals beyond 3 robust sigmas
    (defects) are left out of each step."""
    d = np.array(start, np.float64)
    for _ in range(iterations):
        p = shift_image(pred, float(d[0]), float(d[1]))[::step, ::step]
        e = scan[::step, ::step] - p
        gx = cv2.Sobel(p, cv2.CV_32F, 1, 0) / 8
        gy = cv2.Sobel(p, cv2.CV_32F, 0, 1) / 8
        mad = 1.4826 * float(np.median(np.abs(e))) + 1e-3
        keep = (np.abs(e) < 3 * mad).astype(np.float32)
        gxy = float(np.sum(keep * gx * gy))
        a = np.array([[np.sum(keep * gx * gx), gxy], [gxy, np.sum(keep * gy * gy)]], np.float64)
        b = np.array([np.sum(keep * gx * e), np.sum(keep * gy * e)], np.float64)
        if np.linalg.cond(a) > 1e6:
            break
        delta = -np.linalg.solve(a, b)
        d += np.clip(delta, -1, 1)
        if np.hypot(*delta) < 0.01:
            break
    return float(d[0]), float(d[1])


def _smaller_dft(n: int) -> int:
    """The largest 2^a 3^b 5^c not above ``n``."""
    best = 1
    for a in range(0, 14):
        for b in range(0, 9):
            for c in range(0, 6):
                v = 2**a * 3**b * 5**c
                if best < v <= n:
                    best = v
    return best


def shift_image(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``img`` moved by (dx, dy) px (bilinear, edges replicated)."""
    a = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, a, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
