"""Register a scan to its digital master: features + RANSAC homography, refined by ECC to sub-pixel.

Pure functions on arrays. A homography here maps *master* pixel coordinates to *scan* pixel
coordinates (the convention of ``cv2.findTransformECC`` with the master as template), so the scan
is brought into the master's frame with ``WARP_INVERSE_MAP``: the master fixes the resolution.

1. Features: SIFT (ORB where SIFT is missing) on both images shrunk to at most ``WORK_SIDE`` px,
   Lowe's ratio test, then a MAGSAC++ homography (robust to halftone and dust matches).
2. ECC (Evangelidis & Psarakis 2008) maximises the correlation coefficient over the 8 homography
   parameters, coarse to fine, at most ``ECC_MAX_SIDE`` px on the long side: sub-pixel on pages,
   and insensitive to the global gain/offset between a print and its file.
3. The overlap: the largest axis-aligned box of the master inside the warped scan's outline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from iqaflow.models.colour import convert

Method = Literal["homography", "ecc"]

WORK_SIDE = 1024  # feature detection at most this many pixels on the long side
ECC_MAX_SIDE = 2048  # ECC's finest level; larger pages are refined at this size
MIN_INLIERS = 12
RATIO = 0.75  # Lowe's ratio test
BORDER_MARGIN = 2  # px cut from the overlap so interpolation at the scan's edge never enters it


class RegistrationError(ValueError):
    """The scan could not be registered to its master."""


@dataclass(frozen=True)
class Registration:
    homography: np.ndarray  # 3x3 float64, master (x, y, 1) -> scan (x, y, 1)
    inliers: int
    rmse: float  # RANSAC inliers' reprojection error, scan pixels
    correlation: float | None  # ECC's correlation coefficient (None when ECC was not run or failed)


def _gray(img: np.ndarray) -> np.ndarray:
    return convert(img, "gray") if img.dtype != np.float32 or img.ndim == 3 else img


def _scaled(img: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``img`` shrunk by about ``scale`` (area averaging) and the matrix mapping its pixel centres there."""
    if scale >= 1.0:
        return img, np.eye(3)
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    sx, sy = size[0] / w, size[1] / h
    # Pixel centres: x' = sx * (x + 0.5) - 0.5.
    matrix = np.array([[sx, 0.0, (sx - 1) / 2], [0.0, sy, (sy - 1) / 2], [0.0, 0.0, 1.0]])
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA), matrix


def _detector() -> cv2.Feature2D:
    if hasattr(cv2, "SIFT_create"):
        return cv2.SIFT_create(nfeatures=5000)
    return cv2.ORB_create(nfeatures=5000)


def feature_homography(master: np.ndarray, scan: np.ndarray) -> tuple[np.ndarray, int, float]:
    """(homography master -> scan, inlier count, inlier RMSE in scan px) from feature matches."""
    m_gray, s_gray = _gray(master), _gray(scan)
    sm, ss = (min(1.0, WORK_SIDE / max(g.shape)) for g in (m_gray, s_gray))
    det = _detector()
    small_m, to_m = _scaled(m_gray, sm)
    small_s, to_s = _scaled(s_gray, ss)
    kp_m, des_m = det.detectAndCompute((small_m * 255).astype(np.uint8), None)
    kp_s, des_s = det.detectAndCompute((small_s * 255).astype(np.uint8), None)
    if des_m is None or des_s is None or len(kp_m) < MIN_INLIERS or len(kp_s) < MIN_INLIERS:
        raise RegistrationError(f"too few features to register (master {len(kp_m)}, scan {len(kp_s)}); "
                                "a blank or featureless page cannot be aligned")
    norm = cv2.NORM_HAMMING if des_m.dtype == np.uint8 else cv2.NORM_L2
    pairs = cv2.BFMatcher(norm).knnMatch(des_m, des_s, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < MIN_INLIERS:
        raise RegistrationError(f"only {len(good)} distinctive feature matches (need {MIN_INLIERS}); "
                                "is this the right master for the scan?")
    pm = cv2.perspectiveTransform(np.float64([[kp_m[g.queryIdx].pt for g in good]]), np.linalg.inv(to_m))[0]
    ps = cv2.perspectiveTransform(np.float64([[kp_s[g.trainIdx].pt for g in good]]), np.linalg.inv(to_s))[0]
    h, mask = cv2.findHomography(pm, ps, cv2.USAC_MAGSAC, 2.0 / ss, maxIters=10000, confidence=0.9999)
    if h is None or mask is None or int(mask.sum()) < MIN_INLIERS:
        raise RegistrationError(f"no homography supported by {MIN_INLIERS} matches; is this the right master?")
    keep = mask.ravel().astype(bool)
    proj = cv2.perspectiveTransform(pm[keep][None], h)[0]
    rmse = float(np.sqrt(np.mean(np.sum((proj - ps[keep]) ** 2, axis=1))))
    return h / h[2, 2], int(keep.sum()), rmse


def refine_ecc(master: np.ndarray, scan: np.ndarray, h: np.ndarray, iterations: int = 100,
               eps: float = 1e-6) -> tuple[np.ndarray, float | None]:
    """ECC refinement of ``h`` (master -> scan), coarse to fine; (h, correlation) or (h, None) if it fails."""
    m_gray, s_gray = _gray(master), _gray(scan)
    top = min(1.0, ECC_MAX_SIDE / max(m_gray.shape))
    levels = [top / 4, top / 2, top] if max(m_gray.shape) * top >= 1024 else [top / 2, top]
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps)
    density = float(np.sqrt(abs(np.linalg.det(h[:2, :2]))))  # scan pixels per master pixel
    # A much finer scan is shrunk to the master's density (ECC converges best near scale 1).
    ratio = 1.0 / density if density > 1.5 else 1.0
    cc: float | None = None
    for f in levels:
        template, to_t = _scaled(m_gray, f)
        moving, to_m = _scaled(s_gray, f * ratio)
        warp = (to_m @ h @ np.linalg.inv(to_t)).astype(np.float32)
        try:
            cc, warp = cv2.findTransformECC(template, moving, warp, cv2.MOTION_HOMOGRAPHY, criteria, None, 5)
        except cv2.error:
            return h, None
        h = np.linalg.inv(to_m) @ warp.astype(np.float64) @ to_t
        h = h / h[2, 2]
    return h, (float(cc) if cc is not None else None)


def register(master: np.ndarray, scan: np.ndarray, method: Method = "ecc") -> Registration:
    """Register ``scan`` onto ``master`` (any dtype, gray or colour)."""
    h, inliers, rmse = feature_homography(master, scan)
    cc = None
    if method == "ecc":
        h, cc = refine_ecc(master, scan, h)
    return Registration(h, inliers, rmse, cc)


def overlap_box(h: np.ndarray, scan_shape: tuple[int, ...], master_shape: tuple[int, ...],
                margin: int = BORDER_MARGIN) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive ends: the master-frame box covered by the whole scan."""
    sh, sw = scan_shape[:2]
    corners = np.float64([[[0, 0], [sw - 1, 0], [sw - 1, sh - 1], [0, sh - 1]]])
    tl, tr, br, bl = cv2.perspectiveTransform(corners, np.linalg.inv(h))[0]
    mh, mw = master_shape[:2]
    x0 = max(0, int(np.ceil(max(tl[0], bl[0]))) + margin)
    y0 = max(0, int(np.ceil(max(tl[1], tr[1]))) + margin)
    x1 = min(mw, int(np.floor(min(tr[0], br[0]))) + 1 - margin)
    y1 = min(mh, int(np.floor(min(bl[1], br[1]))) + 1 - margin)
    if x1 - x0 < 16 or y1 - y0 < 16:
        raise RegistrationError(f"the registered scan overlaps its master in {max(0, x1 - x0)}x{max(0, y1 - y0)} "
                                "px only; expected most of the page")
    return x0, y0, x1, y1


def warp_to_master(scan: np.ndarray, h: np.ndarray, master_shape: tuple[int, ...]) -> np.ndarray:
    """The scan resampled (bilinear) onto the master's pixel grid; outside the scan is 0."""
    mh, mw = master_shape[:2]
    return cv2.warpPerspective(scan, h, (mw, mh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align(scan: np.ndarray, master: np.ndarray, method: Method = "ecc"
          ) -> tuple[np.ndarray, np.ndarray, Registration, float]:
    """(scan in the master's frame, master, both cropped to their overlap; the registration; overlap fraction)."""
    reg = register(master, scan, method)
    x0, y0, x1, y1 = overlap_box(reg.homography, scan.shape, master.shape)
    warped = warp_to_master(scan, reg.homography, master.shape)
    fraction = (x1 - x0) * (y1 - y0) / float(master.shape[0] * master.shape[1])
    return warped[y0:y1, x0:x1], master[y0:y1, x0:x1], reg, fraction


def corner_error(h_est: np.ndarray, h_true: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (px) between the master's corners mapped by ``h_est`` and by ``h_true``."""
    hh, ww = shape[:2]
    corners = np.float64([[[0, 0], [ww - 1, 0], [ww - 1, hh - 1], [0, hh - 1]]])
    a = cv2.perspectiveTransform(corners, h_est)[0]
    b = cv2.perspectiveTransform(corners, h_true)[0]
    return float(np.max(np.linalg.norm(a - b, axis=1)))
