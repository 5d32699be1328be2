"""Register a scan to its digital master: features + RANSAC homography, refined to sub-pixel (tiles or ECC).

Pure functions on arrays. A homography here maps *master* pixel coordinates to *scan* pixel
coordinates (the convention of ``cv2.findTransformECC`` with the master as template), so the scan
is brought into the master's frame with ``WARP_INVERSE_MAP``: the master fixes the resolution.

1. Features: SIFT (ORB where SIFT is missing) on both images shrunk to at most ``WORK_SIDE`` px,
   Lowe's ratio test, then a MAGSAC++ homography (robust to halftone and dust matches).
2. Sub-pixel refinement, one of:
   * ``tiles`` (the default for print audits): phase correlation of textured master tiles against the
     scan warped tile by tile, then a homography fitted (RANSAC) to the tile centres' residual shifts;
     twice. Phase correlation ignores the print's tone curve, and only the tiles are resampled, so an
     A4 page at 300 dpi refines in about 0.3 s on one core with a corner error of about 0.1 px.
   * ``ecc`` (Evangelidis & Psarakis 2008) maximises the correlation coefficient over the 8 homography
     parameters, coarse to fine, at most ``ECC_MAX_SIDE`` px on the long side; as precise, about 4x
     slower on an A4 page at 300 dpi.
3. The overlap: the largest axis-aligned box of the master inside the warped scan's outline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from iqaflow.models.colour import convert

Method = Literal["homography", "tiles", "ecc"]

# Features only seed the refinement, so a small working size is enough: SIFT's cost is mostly its
# scale space, and 768 px with 1500 features registered every simulated A4 page within 1-2 px.
WORK_SIDE = 768  # feature detection at most this many pixels on the long side
N_FEATURES = 1500
ECC_MAX_SIDE = 2048  # ECC's finest level; larger pages are refined at this size
TILE_PASSES = 2  # the second pass starts within ~0.2 px and halves the remaining error
TILE_MIN_STD = 10.0  # 8-bit gray std under which a master tile is blank paper (no phase to correlate)
TILE_MIN_RESPONSE = 0.05  # phase correlation peak under which a tile's shift is noise
MIN_TILES = 6  # fewer textured tiles: keep the feature homography
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
    # Correlation coefficient of master and registered scan: ECC's, or over the refinement tiles
    # (None for features only, or when the refinement failed).
    correlation: float | None


def _gray(img: np.ndarray) -> np.ndarray:
    return convert(img, "gray") if img.dtype != np.float32 or img.ndim == 3 else img


def _gray_u8(img: np.ndarray) -> np.ndarray:
    """8-bit gray; 8-bit RGB takes the direct path (no float copy of a 26-megabyte page)."""
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] in (3, 4):
        return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY if img.shape[2] == 3 else cv2.COLOR_RGBA2GRAY)
    if img.dtype == np.uint8 and img.ndim == 2:
        return img
    return (_gray(img) * 255.0 + 0.5).astype(np.uint8)


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
        return cv2.SIFT_create(nfeatures=N_FEATURES)
    return cv2.ORB_create(nfeatures=2 * N_FEATURES)


def feature_homography(master: np.ndarray, scan: np.ndarray) -> tuple[np.ndarray, int, float]:
    """(homography master -> scan, inlier count, inlier RMSE in scan px) from feature matches."""
    m_gray, s_gray = _gray_u8(master), _gray_u8(scan)
    sm, ss = (min(1.0, WORK_SIDE / max(g.shape)) for g in (m_gray, s_gray))
    det = _detector()
    small_m, to_m = _scaled(m_gray, sm)
    small_s, to_s = _scaled(s_gray, ss)
    kp_m, des_m = det.detectAndCompute(small_m, None)
    kp_s, des_s = det.detectAndCompute(small_s, None)
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


def _tile_grid(shape: tuple[int, ...]) -> tuple[int, int]:
    """(tile side, step) in master px: about a twelfth of the long side, a power of two in 64..256; tiles
    1.5 sides apart, 2 on pages large enough for 256 px tiles (about 24 tiles on A4 at 300 dpi; as precise
    as 54 in the simulations, at 60% of the cost)."""
    side = max(shape[:2]) / 12
    tile = int(min(256, max(64, 2 ** round(np.log2(max(side, 1.0))))))
    return tile, (tile * 2 if tile >= 256 else tile * 3 // 2)


def refine_tiles(master: np.ndarray, scan: np.ndarray, h: np.ndarray, passes: int = TILE_PASSES
                 ) -> tuple[np.ndarray, float | None]:
    """Tile phase-correlation refinement of ``h`` (master -> scan); (h, correlation over the tiles), or
    (h, None) when too few tiles carry texture or agree."""
    m_gray, s_gray = _gray_u8(master), _gray_u8(scan)
    tile, step = _tile_grid(m_gray.shape)
    mh, mw = m_gray.shape
    corners = [(x, y) for y in range(tile // 2, mh - tile - tile // 2 + 1, step)
               for x in range(tile // 2, mw - tile - tile // 2 + 1, step)]
    textured = [(x, y, m_gray[y:y + tile, x:x + tile].astype(np.float32)) for x, y in corners
                if float(m_gray[y:y + tile, x:x + tile].std()) >= TILE_MIN_STD]
    if len(textured) < MIN_TILES:
        return h, None
    window = cv2.createHanningWindow((tile, tile), cv2.CV_32F)
    cc: float | None = None
    for _ in range(passes):
        src, dst, pairs = [], [], []
        for x, y, a in textured:
            # Only the tile is resampled: the scan's pixels under master (x..x+tile, y..y+tile).
            shift = np.array([[1.0, 0.0, x], [0.0, 1.0, y], [0.0, 0.0, 1.0]])
            b = cv2.warpPerspective(s_gray, h @ shift, (tile, tile), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            (dx, dy), response = cv2.phaseCorrelate(a, b, window)
            if response < TILE_MIN_RESPONSE or max(abs(dx), abs(dy)) > tile / 4:
                continue
            centre = (x + (tile - 1) / 2, y + (tile - 1) / 2)
            src.append(centre)
            dst.append((centre[0] + dx, centre[1] + dy))  # where the master's tile centre lies in the warp
            pairs.append((a, b))
        if len(src) < MIN_TILES:
            return h, None
        to_scan = cv2.perspectiveTransform(np.float64([dst]), h)[0]
        fit, mask = cv2.findHomography(np.float64(src), to_scan, cv2.RANSAC, 1.0)
        if fit is None or mask is None or int(mask.sum()) < MIN_TILES:
            return h, None
        h = fit / fit[2, 2]
        kept = [p for p, k in zip(pairs, mask.ravel(), strict=True) if k]
        a_all = np.concatenate([a.ravel() for a, _ in kept])
        b_all = np.concatenate([b.ravel() for _, b in kept])
        cc = float(np.corrcoef(a_all, b_all)[0, 1])  # of the pass's input; the last pass moves < 0.1 px
    return h, cc


def register(master: np.ndarray, scan: np.ndarray, method: Method = "tiles") -> Registration:
    """Register ``scan`` onto ``master`` (any dtype, gray or colour)."""
    m8, s8 = _gray_u8(master), _gray_u8(scan)  # once: features and tiles both work on 8-bit gray
    h, inliers, rmse = feature_homography(m8, s8)
    cc = None
    if method == "ecc":
        h, cc = refine_ecc(master, scan, h)
    elif method == "tiles":
        h, cc = refine_tiles(m8, s8, h)
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


def align(scan: np.ndarray, master: np.ndarray, method: Method = "tiles"
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
