"""MRIQC-style image quality metrics (IQMs) for medical images, on one 2D slice at a time.

MRIQC (Esteban et al. 2017) computes these on 3D volumes with a head mask and tissue segmentation
from its preprocessing. Here a slice is split by Otsu's threshold into foreground (the subject:
the largest connected component above the threshold, closed, holes filled) and air (below it, at
least ``AIR_MARGIN`` px away from the foreground, so partial-volume edges stay out); the foreground
is split again by Otsu into a darker and a brighter tissue class, standing in for GM and WM.
Volumes are scored per slice and aggregated (mean or worst) by the scoring task.

Definitions (F foreground, B air, T1/T2 the two tissue classes; mu mean, sigma standard deviation):

* ``snr``: mu_F / (sigma_F sqrt(n / (n - 1))), n = |F|, F eroded by 2 px (as MRIQC erodes tissue
  masks; so is F for ``cnr``). Higher is better.
* ``snrd`` (Dietrich et al. 2007, eq. A.12): mu_F / (sqrt(2 / (4 - pi)) sigma_B); the factor
  corrects the Rayleigh-distributed magnitude noise of the air. Higher is better.
* ``cnr`` (Magnotta & Friedman 2006): |mu_T2 - mu_T1| / sqrt(sigma_B^2 + sigma_T1^2 + sigma_T2^2).
* ``efc`` (Atkinson et al. 1997): the Shannon entropy of x_j / x_max, x_max = sqrt(sum x_j^2),
  normalised by its maximum (all pixels equal), so 1 is a flat image and 0 all energy in one
  pixel; ghosting and blur raise it. Lower is better. Whole slice, like MRIQC.
* ``fber`` (Shehzad et al. 2015): mean(|F|^2) / mean(|B|^2). Higher is better; null when the
  air is exactly zero (masked or skull-stripped images have no noise floor to compare with).
* ``fwhm`` (Forman et al. 1995; AFNI 3dFWHMx's classic estimator): smoothness in pixels from the
  variance of first differences, sqrt(-2 ln 2 / ln(1 - var(dx) / (2 var(x)))) per axis, averaged
  over x and y, within F. Image structure adds to it, so compare like with like. Lower is sharper.
* ``noise_air``: the noise sigma behind the air's Rayleigh distribution, sigma_B sqrt(2 / (4 - pi)),
  in 8-bit units like ``noise``.

Inputs are gray float images in [0, 1] as decoded (DICOM after its VOI/window, NIfTI scaled by
its range): the ratios do not depend on a linear scale, but a window that clips the air to 0
leaves no noise to measure (``snrd``, ``fber``, ``noise_air`` become null).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from iqaflow.models.base import PerImageScorer, ScorerInfo
from iqaflow.models.registry import register

AIR_MARGIN = 3  # px between the foreground and the air mask (at least; grows with the image)
MIN_PIXELS = 16  # fewer pixels in a mask and the measures that need it are null
RAYLEIGH = math.sqrt(2.0 / (4.0 - math.pi))
NAN = float("nan")


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximum between-class variance) of ``values``."""
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def masks(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, air) boolean masks of a gray slice."""
    smooth = ndi.uniform_filter(img.astype(np.float64), 3)
    raw = smooth > otsu_threshold(smooth)
    labels, n = ndi.label(raw)
    if n > 1:
        sizes = ndi.sum_labels(raw, labels, index=np.arange(1, n + 1))
        raw = labels == int(np.argmax(sizes)) + 1
    fg = ndi.binary_fill_holes(ndi.binary_closing(raw, iterations=2))
    margin = max(AIR_MARGIN, round(min(img.shape) / 64))
    air = ~ndi.binary_dilation(fg, iterations=margin)
    return fg, air


def _enough(mask: np.ndarray) -> bool:
    return int(mask.sum()) >= MIN_PIXELS


def _core(fg: np.ndarray) -> np.ndarray:
    """The foreground without its edge (partial volume with the air), as MRIQC erodes tissue masks."""
    core = ndi.binary_erosion(fg, iterations=2)
    return core if _enough(core) else fg


def snr(img: np.ndarray, fg: np.ndarray) -> float:
    if not _enough(fg):
        return NAN
    values = img[_core(fg)].astype(np.float64)
    sigma = float(values.std(ddof=1))
    return float(values.mean()) / sigma if sigma > 0 else NAN


def sigma_air(img: np.ndarray, air: np.ndarray) -> float:
    """Standard deviation of the air; NaN when there is too little air or it is exactly constant."""
    if not _enough(air):
        return NAN
    sigma = float(img[air].astype(np.float64).std())
    return sigma if sigma > 0 else NAN


def snr_dietrich(img: np.ndarray, fg: np.ndarray, air: np.ndarray) -> float:
    if not _enough(fg):
        return NAN
    return float(img[fg].mean(dtype=np.float64)) / (RAYLEIGH * sigma_air(img, air))


def noise_air(img: np.ndarray, air: np.ndarray) -> float:
    return RAYLEIGH * sigma_air(img, air) * 255.0


def cnr(img: np.ndarray, fg: np.ndarray, air: np.ndarray) -> float:
    if not _enough(fg):
        return NAN
    values = img[_core(fg)].astype(np.float64)
    split = otsu_threshold(values)
    dark, bright = values[values <= split], values[values > split]
    if dark.size < MIN_PIXELS or bright.size < MIN_PIXELS:
        return NAN
    noise = math.sqrt(sigma_air(img, air) ** 2 + dark.var() + bright.var())
    return abs(float(bright.mean() - dark.mean())) / noise if noise > 0 else NAN


def efc(img: np.ndarray) -> float:
    x = np.abs(img.astype(np.float64)).ravel()
    n = x.size
    energy = math.sqrt(float(np.sum(x * x)))
    if n < 2 or energy == 0:
        return NAN
    p = x / energy
    entropy = -float(np.sum(p[p > 0] * np.log(p[p > 0])))
    max_entropy = -n * (1 / math.sqrt(n)) * math.log(1 / math.sqrt(n))
    return entropy / max_entropy


def fber(img: np.ndarray, fg: np.ndarray, air: np.ndarray) -> float:
    if not _enough(fg) or not _enough(air):
        return NAN
    x = img.astype(np.float64)
    background = float(np.mean(x[air] ** 2))
    return float(np.mean(x[fg] ** 2)) / background if background > 0 else NAN


def fwhm(img: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean FWHM (pixels) over x and y from first differences within ``mask`` (whole image if None)."""
    x = img.astype(np.float64)
    m = np.ones(x.shape, bool) if mask is None else mask
    if not _enough(m):
        return NAN
    var = float(x[m].var())
    if var <= 0:
        return NAN
    widths = []
    for axis in (0, 1):
        d = np.diff(x, axis=axis)
        both = m[1:, :] & m[:-1, :] if axis == 0 else m[:, 1:] & m[:, :-1]
        if not _enough(both):
            return NAN
        rho = 1.0 - float(d[both].var()) / (2.0 * var)
        # rho <= 0: no correlation between neighbours (white noise), the estimator's limit is 0.
        widths.append(0.0 if rho <= 0.0 else math.sqrt(-2.0 * math.log(2.0) / math.log(rho)) if rho < 1.0 else NAN)
    return float(np.mean(widths))


def _info(name: str, higher: bool, rng: tuple[float | None, float | None], description: str) -> ScorerInfo:
    return ScorerInfo(name=name, kind="nr", higher_is_better=higher, score_range=rng, description=description,
                      colour="gray")


@register
class SNR(PerImageScorer):
    info = _info("snr", True, (0.0, None), "MRIQC SNR: foreground mean over its standard deviation (Otsu mask).")

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (snr(image, masks(image)[0]),)


@register
class SNRDietrich(PerImageScorer):
    info = _info("snrd", True, (0.0, None), "Dietrich SNR: foreground mean over the Rayleigh-corrected air noise.")

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (snr_dietrich(image, *masks(image)),)


@register
class CNR(PerImageScorer):
    info = _info("cnr", True, (0.0, None),
                 "Contrast-to-noise ratio of two Otsu tissue classes in the foreground against air and tissue noise.")

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (cnr(image, *masks(image)),)


@register
class EFC(PerImageScorer):
    info = _info("efc", False, (0.0, 1.0), "Entropy focus criterion (normalised); ghosting and blur raise it.")

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (efc(image),)


@register
class FBER(PerImageScorer):
    info = _info("fber", True, (0.0, None), "Foreground-background energy ratio: mean |F|^2 over mean |air|^2.")

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (fber(image, *masks(image)),)


@register
class FWHM(PerImageScorer):
    info = _info("fwhm", False, (0.0, None), "Smoothness (blur) in pixels from first-difference variance, foreground.")

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (fwhm(image, masks(image)[0]),)


@register
class NoiseAir(PerImageScorer):
    info = _info("noise_air", False, (0.0, None), "Noise sigma from the air's Rayleigh distribution, 8-bit units.")

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (noise_air(image, masks(image)[1]),)
