"""Cheap dataset-hygiene measures: low information, blank frames, grayscale stored as colour.

They cover cleanvision's ``low_information`` and ``grayscale`` checks (its dark, light and blurry
checks are the ``exposure`` and ``sharpness`` scorers; aspect ratio and pixel count come from the
exact width/height columns in the collection pass). cleanvision's grayscale check reads only the
file's mode ("L"), so it misses grey pixels stored as RGB, which ``colour_spread`` finds. Each
measure is one scorer with one column, so that its direction is declared data a gate can use. All
work on the 8-bit image (rounded from the float input) through OpenCV histograms: about 2.3 ms for
all three on a 1024x768 image, one thread.
"""

from __future__ import annotations

import cv2
import numpy as np

from iqaflow.models.base import PerImageScorer, ScorerInfo
from iqaflow.models.registry import register

# Half-width, in 8-bit levels, of the luminance band that ``blank_fraction`` counts: wide enough to
# hold sensor noise of sigma ~4 levels on a lens-cap or blank-page frame, narrow enough that a
# photograph's sky or wall rarely fills it.
BLANK_TOLERANCE = 10
# The chroma percentile that ``colour_spread`` reports: a coloured logo or stamp on under 1% of a
# grayscale frame does not make it colour, and a grey frame with a few rounding-error pixels stays grey.
SPREAD_PERCENTILE = 99.0

# Suggested gate thresholds, stated in the scorers' descriptions. Measured on the shared sets
# (kodak 24, clive-subset 400): luminance entropy 5.6-7.6 and 2.6-7.9 bits, blank_fraction at most
# 0.71 and 0.96 (night shots of a black sky), colour_spread at least 48 and 10 (a dark fireworks
# shot); grayscale stored as RGB measures exactly 0, also after JPEG q40-95 at 4:4:4 or 4:2:0.
# cleanvision flags low information below 3 bits (0.1 * PIL entropy < 0.3): exactly this measure on
# gray images, ~1.6 bits lower on colour ones, whose 768-bin RGB histogram it reads instead.
LOW_INFORMATION_BITS = 3.0  # entropy below: low information (1 of 400 clive, a black tunnel shot)
BLANK_AT_LEAST = 0.98  # blank_fraction at or above: blank (none of kodak or clive; noise sigma <= 4 still 0.98+)
GRAYSCALE_SPREAD_AT_MOST = 2.0  # colour_spread at or below: grayscale stored as colour


def _to_u8(image: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8, rounded and saturated (an 8-bit source round-trips exactly)."""
    return cv2.convertScaleAbs(np.asarray(image, dtype=np.float32), alpha=255.0)


def _histogram(u8: np.ndarray) -> np.ndarray:
    return cv2.calcHist([u8], [0], None, [256], [0, 256]).ravel().astype(np.float64)


def luminance_entropy(gray: np.ndarray) -> float:
    """Shannon entropy, in bits, of the 256-bin histogram of the 8-bit gray image: 0 to 8."""
    hist = _histogram(_to_u8(gray))
    p = hist[hist > 0] / hist.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))  # max: -0.0 for a one-level image


def blank_fraction(gray: np.ndarray, tolerance: int = BLANK_TOLERANCE) -> float:
    """Largest fraction of pixels inside any band of ``2 * tolerance + 1`` consecutive 8-bit levels.

    1 for a constant frame, and still about 1 for a noisy one (unlike entropy, which noise inflates);
    at least ``(2 * tolerance + 1) / 256`` (a uniform histogram).
    """
    hist = _histogram(_to_u8(gray))
    cdf = np.concatenate(([0.0], np.cumsum(hist)))
    width = 2 * tolerance + 1
    return float((cdf[width:] - cdf[:-width]).max() / cdf[-1])


def colour_spread(rgb: np.ndarray, percentile: float = SPREAD_PERCENTILE) -> float:
    """The ``percentile`` of per-pixel chroma max(R,G,B) - min(R,G,B), in 8-bit levels: 0 to 255.

    Exactly 0 for a grayscale image stored as RGB, also after JPEG re-encoding (its chroma planes stay
    neutral); dark photographs measure lowest, since chroma scales with brightness.
    """
    r, g, b = cv2.split(_to_u8(rgb))
    chroma = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    cdf = np.cumsum(_histogram(chroma))
    # The smallest level with at least ``percentile`` % of the pixels at or below it.
    return float(np.searchsorted(cdf, percentile / 100.0 * cdf[-1]))


@register
class Entropy(PerImageScorer):
    info = ScorerInfo(
        name="entropy",
        kind="nr",
        higher_is_better=True,
        score_range=(0.0, 8.0),
        description="Shannon entropy of the 8-bit luminance histogram in bits (0-8); low means little "
        f"information. Suggested gate: entropy < {LOW_INFORMATION_BITS:g} flags low information "
        "(cleanvision's default); photographs measure 5.5-7.9, very dark ones down to 2.5.",
        colour="gray",
    )

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (luminance_entropy(image),)


@register
class BlankFraction(PerImageScorer):
    info = ScorerInfo(
        name="blank_fraction",
        kind="nr",
        higher_is_better=False,
        score_range=(0.0, 1.0),
        description=f"Largest fraction of pixels within +-{BLANK_TOLERANCE} 8-bit levels of one luminance "
        "(0.08-1; 1 = constant frame, also when noisy). Suggested gate: blank_fraction >= "
        f"{BLANK_AT_LEAST:g} flags a blank or near-constant image; photographs measure 0.12-0.8, "
        "night shots up to 0.96.",
        colour="gray",
    )

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (blank_fraction(image),)


@register
class ColourSpread(PerImageScorer):
    info = ScorerInfo(
        name="colour_spread",
        kind="nr",
        higher_is_better=True,
        score_range=(0.0, 255.0),
        description="99th percentile of per-pixel chroma max(R,G,B)-min(R,G,B) in 8-bit levels (0-255); "
        f"~0 means grayscale stored as colour. Suggested gate: colour_spread <= {GRAYSCALE_SPREAD_AT_MOST:g} "
        "flags it (exactly 0, also after JPEG re-encoding); colour photographs measure 10-255, mostly 40+.",
        colour="rgb",
    )

    def score_one(self, image: np.ndarray) -> tuple[float, ...]:
        return (colour_spread(image),)
