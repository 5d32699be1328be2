"""Blockiness, colourfulness and contrast against independent float64 references and controlled distortions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqaflow.evaluation import synth
from iqaflow.models.classical.nr_extra import blockiness_stats, colourfulness, contrast_stats
from iqaflow.models.classical.nss_fit import read_images
from iqaflow.models.colour import convert
from iqaflow.models.registry import create_scorer

KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    return [img for _, img in synth.random_crops(synth.skimage_images(), 6, 256, seed=3)]


@pytest.fixture(scope="module")
def kodak_crops() -> list[np.ndarray]:
    # Lossless film scans. (scikit-image's rocket and immunohistochemistry carry JPEG blocks of their
    # own, which the blockiness measure duly finds.) 256x256 is a multiple of 8, where the published
    # block positions and ours coincide.
    assert KODAK.is_dir(), f"shared data expected beside the checkout at {KODAK}"
    return [img[:256, 128:384] for img in read_images(KODAK)[::4]]


def gray(img: np.ndarray) -> np.ndarray:
    return convert(img, "gray")


# -- blockiness ----------------------------------------------------------------------------------------


def _wsb_reference(img: np.ndarray) -> tuple[float, float, float, float]:
    """Wang, Sheikh & Bovik (ICIP 2002) as published, float64, on the aligned 8x8 grid: (S, B, A, Z)."""
    x = gray(img).astype(np.float64) * 255
    m, n = x.shape
    d_h = x[:, 1:] - x[:, :-1]
    b_h = np.abs(d_h[:, 7 : 8 * (n // 8) - 1 : 8]).mean()
    a_h = (8 * np.abs(d_h).mean() - b_h) / 7
    z_h = (d_h[:, :-1] * d_h[:, 1:] < 0).mean()
    d_v = x[1:] - x[:-1]
    b_v = np.abs(d_v[7 : 8 * (m // 8) - 1 : 8]).mean()
    a_v = (8 * np.abs(d_v).mean() - b_v) / 7
    z_v = (d_v[:-1] * d_v[1:] < 0).mean()
    b, a, z = (b_h + b_v) / 2, (a_h + a_v) / 2, (z_h + z_v) / 2
    # The paper prints its constants rounded; these are the authors' code's (gammas / 10^4).
    return -245.8909 + 261.9373 * b ** (-239.8886e-4) * a ** (160.1664e-4) * z ** (64.2859e-4), b, a, z


@pytest.mark.parametrize("quality", [60, 25, 10])
def test_blockiness_matches_published_wsb(kodak_crops: list[np.ndarray], quality: int) -> None:
    for img in kodak_crops:
        jpg = synth.jpeg(img, quality)
        _, s, b, a, z = blockiness_stats(gray(jpg))
        ref_s, ref_b, ref_a, ref_z = _wsb_reference(jpg)
        # Visible blocking: the detected grid must be JPEG's own, and then B, A, Z are the paper's
        # (float32 vs float64 sums: 1e-5 relative; Z counts exactly).
        assert b == pytest.approx(ref_b, rel=1e-5) and a == pytest.approx(ref_a, rel=1e-5)
        assert z == pytest.approx(ref_z, abs=1e-12)
        assert s == pytest.approx(ref_s, abs=1e-4)


def test_blockiness_rises_as_jpeg_quality_falls(kodak_crops: list[np.ndarray]) -> None:
    scorer = create_scorer("blockiness")
    for img in kodak_crops:
        out = scorer.score([gray(img)] + [gray(synth.jpeg(img, q)) for q in (90, 50, 20, 10, 5)])
        blockiness, wsb = out[:, 0], out[:, 1]
        # Uncompressed Kodak crops measure 1.01-1.05; the margin allows other content.
        assert 0.97 < blockiness[0] < 1.08, blockiness
        assert np.all(np.diff(blockiness[1:]) > 0), blockiness
        assert np.all(np.diff(wsb[1:]) < 0), wsb


def test_blockiness_finds_a_shifted_grid(kodak_crops: list[np.ndarray]) -> None:
    # A crop that moves the 8x8 grid by (3, 5) pixels keeps its blockiness (within 5%) and its
    # JPEG quality (within 0.1 on the 1-10 scale).
    for img in kodak_crops:
        g = gray(synth.jpeg(img, 15))
        full, shifted = blockiness_stats(g), blockiness_stats(g[3:, 5:])
        assert shifted[0] == pytest.approx(full[0], rel=0.05)
        assert shifted[1] == pytest.approx(full[1], abs=0.1)


def test_blockiness_edge_cases() -> None:
    assert np.isnan(blockiness_stats(np.zeros((10, 100), dtype=np.float32))).all()  # < 16 rows
    flat = blockiness_stats(np.full((64, 64), 0.5, dtype=np.float32))
    assert flat[0] == pytest.approx(1.0) and np.isnan(flat[1])  # no differences: ratio 1, S undefined


# -- colourfulness -------------------------------------------------------------------------------------


def _hasler_reference(img: np.ndarray) -> float:
    x = img.astype(np.float64)
    rg = x[..., 0] - x[..., 1]
    yb = 0.5 * (x[..., 0] + x[..., 1]) - x[..., 2]
    return np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())


def test_colourfulness_matches_float64_formula(crops: list[np.ndarray]) -> None:
    for img in crops:
        # Same formula in float64 on the uint8 pixels: 1e-5 relative (float32 transform, double sums).
        assert colourfulness(convert(img, "rgb")) == pytest.approx(_hasler_reference(img), rel=1e-5)


def test_colourfulness_known_values() -> None:
    grey = np.full((32, 32, 3), 0.4, dtype=np.float32)
    assert colourfulness(grey) == pytest.approx(0.0, abs=1e-4)
    red = np.zeros((32, 32, 3), dtype=np.float32)
    red[..., 0] = 1.0  # rg = 255, yb = 127.5, no spread: 0.3 * hypot(255, 127.5)
    assert colourfulness(red) == pytest.approx(0.3 * np.hypot(255, 127.5), rel=1e-5)


def test_colourfulness_rises_with_saturation(crops: list[np.ndarray]) -> None:
    for img in crops:
        rgb = convert(img, "rgb")
        luma = rgb.mean(axis=2, keepdims=True)
        values = [colourfulness(np.clip(luma + s * (rgb - luma), 0, 1)) for s in (0.0, 0.5, 1.0)]
        assert values[0] < 1e-3 and values[0] < values[1] < values[2], values


# -- contrast ------------------------------------------------------------------------------------------


def test_contrast_matches_numpy(crops: list[np.ndarray]) -> None:
    for img in crops:
        g = gray(img)
        rms, michelson = contrast_stats(g)
        assert rms == pytest.approx(g.astype(np.float64).std(), rel=1e-5)
        lo, hi = np.percentile(np.rint(g.astype(np.float64) * 255), [1, 99], method="inverted_cdf")
        # Quantiles of the 8-bit image; OpenCV's rounding may move a pixel across a level: 1e-2.
        assert michelson == pytest.approx((hi - lo) / (hi + lo), abs=1e-2)


def test_contrast_scales_with_a_contrast_reduction(crops: list[np.ndarray]) -> None:
    scorer = create_scorer("contrast")
    for img in crops:
        g = gray(img)
        reduced = (0.5 + 0.25 * (g - 0.5)).astype(np.float32)
        out = scorer.score([g, reduced])
        assert out[1, 0] == pytest.approx(0.25 * out[0, 0], rel=1e-4)  # RMS contrast is linear
        assert out[1, 1] < out[0, 1]
    assert contrast_stats(np.full((8, 8), 0.3, dtype=np.float32)) == (pytest.approx(0.0, abs=1e-7), 0.0)
