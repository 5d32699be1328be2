"""BRISQUE with the published LIVE model, computed as OpenCV's contrib ``quality`` module does.

The model files (``brisque_model_live.yml``: an RBF epsilon-SVR over 774 support vectors;
``brisque_range_live.yml``: each feature's min/max) are the ones OpenCV ships (Apache-2.0). They were
trained on the features of the BRISQUE C++ release, which OpenCV's ``QualityBRISQUE`` reproduces, not
on those of the MATLAB release: MATLAB-style features (``nss.brisque_features``) fed to this SVR are
off by up to 15 points. So the features here follow OpenCV step by step, through the same OpenCV calls,
because its float32 arithmetic decides the result on images with flat areas:

* gray from 8-bit RGB with ``cvtColor`` (fixed-point, rounded), then float32 in [0, 1] and C = 1/255;
* the second scale is ``cv2.resize(INTER_CUBIC)`` to (W//2, H//2): not antialiased, unlike MATLAB;
* 7x7 Gaussian blur (sigma 7/6) with replicated borders, and sigma = pow(E[x^2] - mu^2, 0.5) with no
  absolute value: a negative float32 variance (flat windows) gives NaN, and then so does the score;
* the MSCN map gets an AGGD fit too (shape, and the mean of the two side variances);
* neighbour products pair each pixel with the one at (+dy, +dx), zero where that falls outside;
* features are float32, scaled to [-1, 1] in float32 arithmetic (the SVR is sensitive to that rounding
  at the 1e-3 level), and the output is clamped to [0, 100].

Differences: the SVR is evaluated in float64 (OpenCV's float32 kernel puts ~1e-3 of noise on its
outputs), and an image with no statistics to fit (a side of the MSCN histogram empty, e.g. a flat
image) scores NaN here, where OpenCV's NaN features end as 0, its best score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.special import gamma as gamma_fn

# OpenCV's shape search: gam = 0.2, then += 0.001 while gam < 10 (an accumulated, not a computed, grid).
_STEPS = np.full(9801, 0.001)
_STEPS[0] = 0.2
_GRID = np.cumsum(_STEPS)  # sequential, as the C loop
_GRID = _GRID[_GRID < 10]
_RATIO = gamma_fn(2 / _GRID) ** 2 / (gamma_fn(1 / _GRID) * gamma_fn(3 / _GRID))  # increasing in the shape
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))
FEATURES = 36


def gray_u8(rgb: np.ndarray) -> np.ndarray:
    """RGB or gray in [0, 1] -> uint8 gray as ``cvtColor(BGR2GRAY)`` gives for the 8-bit image."""
    u8 = cv2.convertScaleAbs(np.asarray(rgb, dtype=np.float32), alpha=255)  # rounded, saturated 8-bit pixels
    return cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY) if u8.ndim == 3 else u8


def _shape(rhatnorm: float) -> float:
    """The grid shape OpenCV's search stops at: nearest ratio, the larger shape on a tie."""
    if not np.isfinite(rhatnorm):
        return float("nan")
    i = int(np.clip(np.searchsorted(_RATIO, rhatnorm), 1, len(_RATIO) - 1))
    return float(_GRID[i] if abs(_RATIO[i] - rhatnorm) <= abs(rhatnorm - _RATIO[i - 1]) else _GRID[i - 1])


def _aggd(x: np.ndarray, scratch: np.ndarray) -> tuple[float, float, float]:
    """(left std, right std, shape) with OpenCV's reductions: NaNs are counted as non-zero and poison sums."""
    pos, neg = cv2.max(x, 0.0), cv2.min(x, 0.0)
    pos_sq = cv2.sumElems(cv2.multiply(pos, pos, dst=scratch))[0]
    neg_sq = cv2.sumElems(cv2.multiply(neg, neg, dst=scratch))[0]
    cv2.patchNaNs(cv2.absdiff(x, 0.0, dst=scratch), 0)
    abs_sum = cv2.sumElems(scratch)[0]
    n_pos, n_neg, n = cv2.countNonZero(pos), cv2.countNonZero(neg), x.size
    neg_sq, pos_sq, abs_sum = np.float64(neg_sq), np.float64(pos_sq), np.float64(abs_sum)
    with np.errstate(divide="ignore", invalid="ignore"):  # a side with no values: NaN, not an exception
        left, right = np.sqrt(neg_sq / n_neg), np.sqrt(pos_sq / n_pos)
        g = left / right
        rhat = (abs_sum / n) ** 2 / ((neg_sq + pos_sq) / n)
        rhatnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    return float(left), float(right), _shape(float(rhatnorm))


def _scale(img: np.ndarray) -> list[float]:
    """The 18 features of one scale (float32 ``img`` in [0, 1])."""
    mu = cv2.GaussianBlur(img, (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
    sigma = cv2.GaussianBlur(cv2.multiply(img, img), (7, 7), 7 / 6, borderType=cv2.BORDER_REPLICATE)
    sigma = cv2.subtract(sigma, cv2.multiply(mu, mu))
    sigma = cv2.add(cv2.pow(sigma, 0.5), 1 / 255)
    m = cv2.divide(cv2.subtract(img, mu), sigma)
    scratch, prod = np.empty_like(m), np.empty_like(m)
    left, right, alpha = _aggd(m, scratch)
    out = [alpha, (left * left + right * right) / 2]
    h, w = m.shape
    for dy, dx in _SHIFTS:
        prod.fill(0)
        rows, cols = slice(max(-dy, 0), h - max(dy, 0)), slice(0, w - dx)
        src_rows, src_cols = slice(max(dy, 0), h + min(dy, 0)), slice(dx, w)
        cv2.multiply(m[rows, cols], m[src_rows, src_cols], dst=prod[rows, cols])
        left, right, alpha = _aggd(prod, scratch)
        with np.errstate(invalid="ignore"):
            g1, g2, g3 = gamma_fn(1 / alpha), gamma_fn(2 / alpha), gamma_fn(3 / alpha)
        mean = (right - left) * (g2 / g1) * np.sqrt(g1) / np.sqrt(g3)
        out += [alpha, mean, left**2, right**2]
    return out


def features(gray: np.ndarray) -> np.ndarray:
    """OpenCV's 36 BRISQUE features (float32) of a uint8 gray image."""
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError(f"expected a uint8 gray image (H, W), got {gray.dtype} {gray.shape}")
    img = gray.astype(np.float32) * np.float32(1 / 255)  # convertTo(CV_32F, 1/255): a float32 product
    half = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_CUBIC)
    return np.array(_scale(img) + _scale(half), dtype=np.float32)


@dataclass(frozen=True)
class LiveSvr:
    """An OpenCV ``ml::SVM`` epsilon-SVR with an RBF kernel, and the feature ranges it was trained on."""

    support: np.ndarray  # (n, 36), float32 values
    dual: np.ndarray  # (n,) alpha_i
    rho: float
    gamma: float
    lo: np.ndarray  # (36,) float32
    hi: np.ndarray

    @classmethod
    def from_files(cls, model: str | Path, ranges: str | Path) -> LiveSvr:
        fs = cv2.FileStorage(str(model), cv2.FILE_STORAGE_READ)
        try:
            svm = fs.getNode("opencv_ml_svm")
            if svm.empty() or svm.getNode("svmType").string() != "EPS_SVR" or \
                    svm.getNode("kernel").getNode("type").string() != "RBF":
                raise ValueError(f"{model}: expected an OpenCV EPS_SVR model with an RBF kernel")
            n_var = int(svm.getNode("var_count").real())
            sv = svm.getNode("support_vectors")
            support = np.array([[sv.at(i).at(j).real() for j in range(n_var)] for i in range(sv.size())])
            df = svm.getNode("decision_functions").at(0)
            alpha = df.getNode("alpha")
            dual = np.array([alpha.at(i).real() for i in range(alpha.size())])
            index = df.getNode("index")
            if not index.empty():  # only the listed support vectors take part
                support = support[[int(index.at(i).real()) for i in range(index.size())]]
            gamma, rho = svm.getNode("kernel").getNode("gamma").real(), df.getNode("rho").real()
        finally:
            fs.release()
        rs = cv2.FileStorage(str(ranges), cv2.FILE_STORAGE_READ)
        try:
            rng = rs.getNode("range").mat()
        finally:
            rs.release()
        if rng is None or rng.shape != (2, n_var) or support.shape[0] != dual.size:
            raise ValueError(f"{model} / {ranges}: inconsistent support vectors, coefficients or ranges")
        f32 = np.float32
        return cls(support.astype(f32).astype(np.float64), dual, float(rho), float(gamma),
                   rng[0].astype(f32), rng[1].astype(f32))

    def scaled(self, feats: np.ndarray) -> np.ndarray:
        """Features to [-1, 1] in float32, as OpenCV's ``quality_utils::scale`` (and so its rounding)."""
        x = np.asarray(feats, dtype=np.float32)
        return np.float32(-1) + np.float32(2) * (x - self.lo) / (self.hi - self.lo)

    def predict(self, feats: np.ndarray) -> np.ndarray:
        """Raw SVR output ``sum_i alpha_i exp(-gamma |x - s_i|^2) - rho`` for ``(N, 36)`` features (NaN stays NaN)."""
        x = np.atleast_2d(self.scaled(feats)).astype(np.float64)
        s = self.support
        d2 = np.square(x).sum(1)[:, None] + np.square(s).sum(1)[None, :] - 2 * x @ s.T
        return np.exp(-self.gamma * np.maximum(d2, 0)) @ self.dual - self.rho

    def score(self, feats: np.ndarray) -> np.ndarray:
        """OpenCV's BRISQUE score: the SVR output clamped to [0, 100] (NaN stays NaN)."""
        return np.clip(self.predict(feats), 0.0, 100.0)
