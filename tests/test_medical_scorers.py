"""MRIQC-style measures against values known by construction (phantoms with set signal and noise).

Tolerances: the masks lose a few edge pixels and the noise is sampled, so measures of sigma agree
with the set sigma to 5% on 128x128 phantoms (thousands of pixels a region); EFC's limits are exact.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from medkit import phantom, rayleigh_std
from scipy.ndimage import gaussian_filter

from iqaflow.models import medical
from iqaflow.models.registry import create_scorer


def test_masks_find_the_disc_and_keep_the_air_away_from_it() -> None:
    img, disc = phantom()
    fg, air = medical.masks(img)
    assert (fg & disc).sum() / disc.sum() > 0.98 and (fg & ~disc).sum() / disc.sum() < 0.02
    assert not (air & disc).any() and air.sum() > 0.4 * img.size


def test_snr_and_dietrich_snr_recover_mean_over_sigma() -> None:
    mu, sigma = 0.5, 0.02
    img, disc = phantom(mu=mu, sigma=sigma)
    fg, air = medical.masks(img)
    inside = img[disc]
    assert medical.snr(img, fg) == pytest.approx(inside.mean() / inside.std(ddof=1), rel=0.05)
    assert medical.snr(img, fg) == pytest.approx(mu / sigma, rel=0.05)
    # The air's standard deviation is Rayleigh's, sigma sqrt((4 - pi) / 2); Dietrich's factor undoes it.
    assert medical.sigma_air(img, air) == pytest.approx(rayleigh_std(sigma), rel=0.05)
    assert medical.snr_dietrich(img, fg, air) == pytest.approx(mu / sigma, rel=0.05)
    assert medical.noise_air(img, air) == pytest.approx(sigma * 255, rel=0.05)


def test_cnr_of_two_tissues() -> None:
    mu, contrast, sigma = 0.4, 0.2, 0.02
    img, _ = phantom(mu=mu, sigma=sigma, contrast=contrast)
    expected = contrast / math.sqrt(rayleigh_std(sigma) ** 2 + 2 * sigma**2)
    assert medical.cnr(img, *medical.masks(img)) == pytest.approx(expected, rel=0.05)


def test_fber_is_the_energy_ratio() -> None:
    mu, sigma = 0.5, 0.02
    img, _ = phantom(mu=mu, sigma=sigma)
    # E|F|^2 = mu^2 + 2 sigma^2 (two Gaussian components); E|B|^2 = 2 sigma^2 (Rayleigh's second moment).
    expected = (mu**2 + 2 * sigma**2) / (2 * sigma**2)
    assert medical.fber(img, *medical.masks(img)) == pytest.approx(expected, rel=0.05)
    clean = np.where(phantom()[1], 0.5, 0.0)
    assert math.isnan(medical.fber(clean, *medical.masks(clean)))  # no noise floor to compare with


def test_efc_limits_and_ordering() -> None:
    assert medical.efc(np.full((64, 64), 0.3)) == pytest.approx(1.0, abs=1e-12)
    one = np.zeros((64, 64))
    one[10, 10] = 1.0
    assert medical.efc(one) == pytest.approx(0.0, abs=1e-12)
    img, _ = phantom()
    blurred = gaussian_filter(img, 4)  # blur spreads the energy: EFC rises
    assert 0.0 < medical.efc(img) < medical.efc(blurred) < 1.0


@pytest.mark.parametrize("s", [1.5, 2.5])
def test_fwhm_of_smoothed_white_noise(s: float) -> None:
    noise = gaussian_filter(np.random.default_rng(1).normal(size=(256, 256)), s)
    assert medical.fwhm(noise) == pytest.approx(2 * math.sqrt(2 * math.log(2)) * s, rel=0.07)


def test_registered_scorers_order_noise_and_blur() -> None:
    clean, _ = phantom(sigma=0.01, seed=2)
    noisy, _ = phantom(sigma=0.05, seed=2)
    blurred = gaussian_filter(clean, 2)
    scores = {n: create_scorer(n).score([clean, noisy, blurred])[:, 0] for n in
              ("snr", "snrd", "cnr", "efc", "fber", "fwhm", "noise_air")}
    assert scores["snrd"][0] > 3 * scores["snrd"][1] and scores["noise_air"][1] > 3 * scores["noise_air"][0]
    assert scores["fwhm"][2] > scores["fwhm"][0] + 1
    assert all(np.isfinite(v).all() for k, v in scores.items() if k != "cnr")
