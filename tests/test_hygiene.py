"""Hygiene measures against independent references (scipy, scikit-image, PIL, brute force) and images
with known answers, and the suggested gate thresholds against the shared photographs."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from PIL import Image
from skimage.measure import shannon_entropy

from iqaflow.models import hygiene
from iqaflow.models.base import Scorer
from iqaflow.models.classical.nss_fit import read_images
from iqaflow.models.colour import convert
from iqaflow.models.hygiene import blank_fraction, colour_spread, luminance_entropy
from iqaflow.models.registry import create_scorer

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
NAMES = ("entropy", "blank_fraction", "colour_spread")


@pytest.fixture(scope="module")
def kodak() -> list[np.ndarray]:
    assert (DATA / "kodak").is_dir(), f"shared data expected beside the checkout at {DATA}"
    return read_images(DATA / "kodak")


def _gray_u8(rgb_u8: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb_u8).convert("L"))


@functools.cache
def _scorer(name: str) -> Scorer:
    return create_scorer(name)


def _hygiene(u8: np.ndarray) -> np.ndarray:
    """All three columns through the registered scorers, each fed the colour space it declares."""
    return np.array([_scorer(n).score([convert(u8, _scorer(n).info.colour)])[0, 0] for n in NAMES])


# -- entropy -------------------------------------------------------------------------------------------


def test_entropy_matches_scipy_skimage_and_pil(kodak: list[np.ndarray]) -> None:
    for img in kodak[::3]:
        g8 = _gray_u8(img)
        ours = luminance_entropy(convert(g8, "gray"))
        hist = np.bincount(g8.ravel(), minlength=256)
        assert ours == pytest.approx(scipy.stats.entropy(hist, base=2), abs=1e-9)
        assert ours == pytest.approx(shannon_entropy(g8, base=2), abs=1e-9)
        assert ours == pytest.approx(Image.fromarray(g8).entropy(), abs=1e-4)  # what cleanvision reads for "L"


@pytest.mark.parametrize(
    ("levels", "bits"),
    [((128,), 0.0), ((0, 255), 1.0), ((10, 20, 30, 40), 2.0), (tuple(range(256)), 8.0)],
)
def test_entropy_of_equal_level_populations(levels: tuple[int, ...], bits: float) -> None:
    img = np.repeat(np.array(levels, dtype=np.uint8), 64).reshape(-1, 64)
    assert luminance_entropy(convert(img, "gray")) == pytest.approx(bits, abs=1e-12)


# -- blank_fraction ------------------------------------------------------------------------------------


def _brute_blank(g8: np.ndarray, tol: int) -> float:
    v = g8.astype(np.int64).ravel()
    return max(np.count_nonzero(np.abs(v - c) <= tol) for c in range(tol, 256 - tol)) / v.size


def test_blank_fraction_matches_brute_force(kodak: list[np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    images = [_gray_u8(img)[:128, :160] for img in kodak[::6]] + [rng.integers(0, 256, (64, 96), dtype=np.uint8)]
    for g8 in images:
        for tol in (0, 3, hygiene.BLANK_TOLERANCE):
            assert blank_fraction(convert(g8, "gray"), tol) == pytest.approx(_brute_blank(g8, tol), abs=1e-12)


def test_blank_fraction_known_images() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8), (8, 1))  # every level equally often: the minimum
    width = 2 * hygiene.BLANK_TOLERANCE + 1
    assert blank_fraction(convert(ramp, "gray")) == pytest.approx(width / 256)
    for level in (0, 128, 255):  # a constant frame at either end of the range still fits a band
        assert blank_fraction(np.full((40, 50), level / 255, np.float32)) == 1.0
    half = np.zeros((40, 50), np.float32)
    half[:, 25:] = 1.0
    assert blank_fraction(half) == 0.5


def test_noisy_blank_frame_is_blank_although_its_entropy_is_not() -> None:
    rng = np.random.default_rng(0)
    for sigma in (2.0, 4.0):  # a lens-cap or blank-page frame with sensor noise, 8-bit units
        frame = np.clip(np.rint(40 + rng.normal(0, sigma, (480, 640))), 0, 255).astype(np.uint8)
        g = convert(frame, "gray")
        assert blank_fraction(g) >= hygiene.BLANK_AT_LEAST
        assert luminance_entropy(g) > hygiene.LOW_INFORMATION_BITS  # why entropy alone is not enough


# -- colour_spread -------------------------------------------------------------------------------------


def _reference_spread(rgb_u8: np.ndarray) -> float:
    chroma = np.ptp(rgb_u8.astype(np.int64), axis=2)
    return float(np.percentile(chroma, hygiene.SPREAD_PERCENTILE, method="inverted_cdf"))


def test_colour_spread_matches_numpy_percentile(kodak: list[np.ndarray]) -> None:
    for img in kodak[::3]:
        assert colour_spread(convert(img, "rgb")) == _reference_spread(img)


def test_colour_spread_known_images(kodak: list[np.ndarray]) -> None:
    flat = np.empty((30, 40, 3), np.uint8)
    flat[:] = (200, 100, 50)
    assert colour_spread(convert(flat, "rgb")) == 150.0
    g8 = _gray_u8(kodak[0])
    assert colour_spread(convert(g8, "rgb")) == 0.0  # a gray file, replicated by the pipeline
    stamped = np.repeat(g8[:, :, None], 3, axis=2)  # gray stored as RGB with a red stamp
    h, w = g8.shape
    n_rows = int(0.005 * h * w) // w + 1  # ~0.5% of the frame: still grayscale
    stamped[:n_rows] = (255, 0, 0)
    assert colour_spread(convert(stamped, "rgb")) == 0.0
    stamped[: 3 * n_rows] = (255, 0, 0)  # ~1.5%: colour
    assert colour_spread(convert(stamped, "rgb")) == 255.0


@pytest.mark.parametrize(("quality", "subsampling"), [(40, 2), (75, 2), (95, 0)])
def test_gray_stored_as_rgb_jpeg_is_flagged(kodak: list[np.ndarray], quality: int, subsampling: int) -> None:
    for img in kodak[::4]:
        buf = io.BytesIO()
        Image.fromarray(_gray_u8(img)).convert("RGB").save(buf, "JPEG", quality=quality, subsampling=subsampling)
        decoded = np.asarray(Image.open(buf))
        assert decoded.ndim == 3
        assert colour_spread(convert(decoded, "rgb")) <= hygiene.GRAYSCALE_SPREAD_AT_MOST


# -- scorers and gate thresholds -----------------------------------------------------------------------


def test_scorers_on_known_images(kodak: list[np.ndarray]) -> None:
    black = np.zeros((64, 64, 3), np.uint8)
    assert _hygiene(black).tolist() == [0.0, 1.0, 0.0]
    noise = np.random.default_rng(2).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    ent, blank, spread = _hygiene(noise)
    assert ent > 7.5 and blank < 0.2 and spread > 150
    ent, blank, spread = _hygiene(_gray_u8(kodak[0]))  # a gray file reaches colour_spread replicated
    assert ent > hygiene.LOW_INFORMATION_BITS and blank < hygiene.BLANK_AT_LEAST and spread == 0.0


def _flags(values: np.ndarray) -> np.ndarray:
    ent, blank, spread = values.T
    return np.stack(
        [ent < hygiene.LOW_INFORMATION_BITS, blank >= hygiene.BLANK_AT_LEAST,
         spread <= hygiene.GRAYSCALE_SPREAD_AT_MOST], axis=1,
    )


def test_suggested_gates_pass_every_kodak_photograph(kodak: list[np.ndarray]) -> None:
    assert not _flags(np.array([_hygiene(img) for img in kodak])).any()


def test_suggested_gates_flag_few_clive_photographs() -> None:
    folder = DATA / "clive-subset" / "images"
    assert folder.is_dir(), f"shared data expected beside the checkout at {folder}"
    values = np.array([_hygiene(img) for img in read_images(folder)[::2]])
    rates = _flags(values).mean(axis=0)
    # Authentic consumer photographs, some very dark: each check flags at most 1%, grayscale none.
    assert (rates <= 0.01).all() and rates[2] == 0.0, rates
