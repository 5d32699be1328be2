"""Classical NR measures against controlled distortions and independent references."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.restoration import estimate_sigma

from iqaflow.evaluation import synth
from iqaflow.models.classical.nr import exposure_stats, laplacian_variance, noise_sigma
from iqaflow.models.colour import convert


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    return [img for _, img in synth.random_crops(synth.skimage_images(), 6, 256, seed=1)]


def gray(img: np.ndarray) -> np.ndarray:
    return convert(img, "gray")


def test_sharpness_falls_monotonically_with_blur(crops: list[np.ndarray]) -> None:
    for img in crops:
        values = [laplacian_variance(gray(img))] + [laplacian_variance(gray(synth.blur(img, s))) for s in (1, 2, 4, 8)]
        assert all(a > b for a, b in zip(values, values[1:], strict=False)), values


def test_sharpness_matches_direct_laplacian() -> None:
    # Independent reference: scipy's 4-neighbour Laplacian on the 8-bit image, reflect borders.
    from scipy import ndimage

    rng = np.random.default_rng(0)
    img = rng.random((64, 80)).astype(np.float32)
    ref = ndimage.laplace(img.astype(np.float64) * 255, mode="reflect").var()
    assert laplacian_variance(img) == pytest.approx(ref, rel=1e-4)


def test_noise_sigma_matches_known_sigma_on_flat_image() -> None:
    rng = np.random.default_rng(0)
    for sigma in (2.0, 5.0, 10.0, 20.0):
        img = np.clip(128 + rng.normal(0, sigma, (256, 256)), 0, 255) / 255
        est = noise_sigma(img.astype(np.float32))
        # Excluding the 10% highest-gradient pixels biases pure-noise estimates low by ~10-15%.
        assert est == pytest.approx(sigma, rel=0.2), (sigma, est)


def test_noise_sigma_agrees_with_wavelet_estimator(crops: list[np.ndarray]) -> None:
    # skimage's estimate_sigma (Donoho's wavelet MAD) is an independent estimator. Noise of
    # sigma 15 (8-bit) is added to the gray image itself (RGB noise would shrink in the luma mix).
    # Both agree within 5%; against the true sigma within 20% (clipping in dark crops lowers it).
    for i, img in enumerate(crops):
        g0 = gray(img)
        rng = np.random.default_rng(i)
        g = np.clip(g0 + rng.normal(0, 15 / 255, g0.shape), 0, 1).astype(np.float32)
        ours = noise_sigma(g)
        ref = estimate_sigma(g.astype(np.float64)) * 255
        assert ours == pytest.approx(ref, rel=0.05), (ours, ref)
        assert ours == pytest.approx(15.0, rel=0.2)


def test_noise_sigma_rises_monotonically_with_noise(crops: list[np.ndarray]) -> None:
    for img in crops:
        values = [noise_sigma(gray(synth.noise(img, s, seed=3))) for s in (0.0, 5.0, 10.0, 20.0, 40.0)]
        assert all(a < b for a, b in zip(values, values[1:], strict=False)), values


def test_exposure_quality_falls_with_under_and_over_exposure(crops: list[np.ndarray]) -> None:
    well_exposed = [img for img in crops if 0.3 <= exposure_stats(gray(img))[1] <= 0.7]
    assert len(well_exposed) >= 4
    for img in well_exposed:
        base_q, base_mean, _, _ = exposure_stats(gray(img))
        under = [exposure_stats(gray(synth.exposure(img, g))) for g in (0.6, 0.3, 0.1)]
        over = [exposure_stats(gray(synth.exposure(img, g))) for g in (1.5, 2.5, 4.0)]
        # Brightness is monotonic in the gain; quality falls away from the base on both sides.
        assert [u[1] for u in under] == sorted((u[1] for u in under), reverse=True)
        assert [o[1] for o in over] == sorted(o[1] for o in over)
        assert under[-1][0] < base_q and over[-1][0] < base_q
        assert under[-1][3] > 0.5 or under[-1][1] < 0.1  # deep under-exposure clips shadows
        assert over[-1][2] > 0.3  # strong over-exposure clips highlights


def test_exposure_stats_exact_on_constructed_image() -> None:
    img = np.full((10, 10), 0.5, dtype=np.float32)
    img[0, :] = 1.0  # 10% clipped highlights
    img[1, :] = 0.0  # 10% clipped shadows
    q, mean, hi, lo = exposure_stats(img)
    assert mean == pytest.approx(0.5)
    assert hi == pytest.approx(0.1) and lo == pytest.approx(0.1)
    assert q == pytest.approx(1.0 - 4 * 0.2)
