"""NSS maths (MSCN, GGD/AGGD, BRISQUE and NIQE features) against independent references, and the scorers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from scipy.special import gamma as gamma_fn

from iqaflow.errors import WeightsError
from iqaflow.evaluation import synth
from iqaflow.models.classical import nss
from iqaflow.models.classical.nss_fit import fit_niqe, read_images
from iqaflow.models.colour import convert
from iqaflow.models.registry import create_scorer, get_scorer_class
from iqaflow.models.weights import WeightsStore, configure_store, get_store

# Kodak pictures without a single flat 7x7 window: there our MSCN and the float64 references agree
# (see test_flat_windows_are_exact_zeros for the one deliberate difference).
NO_FLAT = ("kodim01.png", "kodim02.png", "kodim03.png", "kodim05.png")


KODAK = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "kodak"


@pytest.fixture(scope="module")
def kodak() -> Path:  # module-scoped twin of conftest's fixture, for module-scoped fixtures below
    assert KODAK.is_dir(), f"shared data expected beside the checkout at {KODAK}"
    return KODAK


@pytest.fixture(scope="module")
def kodak_images(kodak: Path) -> list[np.ndarray]:
    return read_images(kodak)


@pytest.fixture(scope="module")
def no_flat_grays(kodak: Path) -> list[np.ndarray]:
    from PIL import Image

    # Even-sized crops: piq halves to (H//2, W//2), MATLAB to ceil(H/2); they agree on even sizes.
    return [convert(np.asarray(Image.open(kodak / n).convert("RGB")), "gray")[:256, :384] for n in NO_FLAT]


@pytest.fixture(scope="module")
def fitted_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeightsStore]:
    store = configure_store(str(tmp_path_factory.mktemp("nss-weights")))
    for name in ("niqe_fitted", "brisque_fitted"):
        get_scorer_class(name).make_test_weights(store, seed=0)
    yield store
    configure_store(None)


# -- distributions -------------------------------------------------------------------------------------


def test_ratio_tables_are_monotone() -> None:
    # The shape lookup bisects; that needs strictly monotone moment-ratio tables over the grid.
    assert np.all(np.diff(nss.GGD_RATIO) < 0) and np.all(np.diff(nss.AGGD_RATIO) > 0)


@pytest.mark.parametrize("beta", [0.6, 1.0, 2.0, 3.0])
def test_ggd_fit_recovers_scipy_gennorm(beta: float) -> None:
    # Independent reference: scipy's generalised normal. 400k samples: the moment estimator's
    # sampling error is < 2% in shape and < 1% in variance at these shapes.
    x = stats.gennorm.rvs(beta, scale=0.7, size=400_000, random_state=np.random.default_rng(0))
    alpha, var = nss.ggd_fit(x)
    assert alpha == pytest.approx(beta, rel=0.02)
    assert var == pytest.approx(stats.gennorm.var(beta, scale=0.7), rel=0.01)
    # And the maximum-likelihood fit on a subsample lands within its own error (~5%) of ours.
    mle_beta, _, _ = stats.gennorm.fit(x[:20_000], floc=0)
    assert alpha == pytest.approx(mle_beta, rel=0.05)


@pytest.mark.parametrize(("alpha", "bl", "br"), [(0.8, 0.5, 1.0), (1.5, 1.0, 0.6), (2.5, 0.3, 0.3)])
def test_aggd_fit_recovers_parameters(alpha: float, bl: float, br: float) -> None:
    # Sample the AGGD exactly: side with probability beta_side / (bl + br), magnitude beta * G^(1/alpha),
    # G ~ Gamma(1/alpha). The fit returns side standard deviations: beta * sqrt(G(3/a) / G(1/a)).
    rng = np.random.default_rng(1)
    n = 400_000
    left = rng.random(n) < bl / (bl + br)
    mag = rng.gamma(1 / alpha, size=n) ** (1 / alpha)
    x = np.where(left, -bl * mag, br * mag)
    a, sl, sr = nss.aggd_fit(x)
    k = np.sqrt(gamma_fn(3 / alpha) / gamma_fn(1 / alpha))
    assert a == pytest.approx(alpha, rel=0.03)
    assert sl == pytest.approx(bl * k, rel=0.01) and sr == pytest.approx(br * k, rel=0.01)


# -- MSCN and resizing ---------------------------------------------------------------------------------


def _mscn_reference(img: np.ndarray, mode: str, snap: bool = False) -> np.ndarray:
    """float64 MSCN with scipy filtering: mode 'constant' (zeros, BRISQUE) or 'nearest' (replicate, NIQE).

    ``snap``: zero the coefficients of flat 7x7 windows (padding included), as ours does on purpose.
    """
    x = np.arange(7) - 3.0
    w = np.exp(-(x**2) / (2 * (7 / 6) ** 2))
    w /= w.sum()

    def filt(a: np.ndarray) -> np.ndarray:
        return ndimage.correlate1d(ndimage.correlate1d(a, w, axis=0, mode=mode), w, axis=1, mode=mode)

    img = img.astype(np.float64)
    mu = filt(img)
    sigma = np.sqrt(np.abs(filt(img * img) - mu * mu))
    out = (img - mu) / (sigma + 1)
    if snap:
        flat = ndimage.maximum_filter(img, 7, mode=mode) == ndimage.minimum_filter(img, 7, mode=mode)
        out[flat] = 0
    return out


@pytest.mark.parametrize(("border", "mode"), [(0, "constant"), (1, "nearest")])
def test_mscn_matches_float64_scipy(no_flat_grays: list[np.ndarray], border: int, mode: str) -> None:
    import cv2

    cv_border = cv2.BORDER_CONSTANT if border == 0 else cv2.BORDER_REPLICATE
    img = nss.to_luma255(no_flat_grays[0])
    ours, _ = nss.mscn(img, cv_border)
    # float32 against float64 on 0-255 data: E[x^2] - E[x]^2 loses ~1e-5 relative; 2e-3 absolute on
    # coefficients of typical magnitude 0.1-3.
    np.testing.assert_allclose(ours, _mscn_reference(img, mode), atol=2e-3)


def test_imresize_half_matches_piq_matlab_resize(no_flat_grays: list[np.ndarray]) -> None:
    from piq.functional import imresize

    img = nss.to_luma255(no_flat_grays[1])
    ref = imresize(torch.from_numpy(img.astype(np.float64))[None, None], scale=0.5)[0, 0].numpy()
    # MATLAB-equivalent bicubic with antialiasing in float64 vs ours in float32: 2e-3 in 8-bit units.
    np.testing.assert_allclose(nss.imresize_half(img), ref, atol=2e-3)


def test_flat_windows_are_exact_zeros() -> None:
    # The deliberate difference from the reference codes: flat windows give exactly 0, not rounding residue.
    img = np.full((64, 64), 0.5, dtype=np.float32)
    img[:, 32:] = np.random.default_rng(0).random((64, 32), dtype=np.float32)
    m, _ = nss.mscn(nss.to_luma255(img), 1)  # replicate borders: the left columns' windows are flat
    assert np.all(m[:, :29] == 0) and np.count_nonzero(m[:, 33:]) > 0.9 * m[:, 33:].size
    assert np.isfinite(nss.brisque_features(img)).all()


# -- BRISQUE features against piq ----------------------------------------------------------------------


def _piq_features(gray: np.ndarray) -> np.ndarray:
    from piq.brisque import _natural_scene_statistics
    from piq.functional import imresize

    x = torch.from_numpy(nss.to_luma255(gray).astype(np.float64))[None, None]
    feats = []
    for _ in range(2):
        feats.append(_natural_scene_statistics(x))  # 7x7 Gaussian, sigma 7/6, zero padding, C=1
        x = imresize(x, sizes=(x.size(2) // 2, x.size(3) // 2))
    return torch.cat(feats, dim=-1).numpy().ravel()


def test_brisque_features_match_piq(no_flat_grays: list[np.ndarray]) -> None:
    # piq (Apache-2.0) reimplements the MATLAB reference: luma rounded to 8 bits, zero-padded
    # filtering, circular neighbour shifts, MATLAB bicubic halving. Fed our rounded luma in float64,
    # it is an independent check. Shapes come from a 0.001 grid: a ratio near a cell edge may pick
    # the neighbouring cell in float32, so 2e-3 absolute; everything else 1e-3 relative (float32).
    shape_idx = [0, 2, 6, 10, 14]
    shape_idx += [i + 18 for i in shape_idx]
    other = np.setdiff1d(np.arange(36), shape_idx)
    for gray in no_flat_grays:
        ours, ref = nss.brisque_features(gray), _piq_features(gray)
        np.testing.assert_allclose(ours[shape_idx], ref[shape_idx], atol=2e-3)
        np.testing.assert_allclose(ours[other], ref[other], rtol=1e-3, atol=1e-6)


# -- NIQE features against a slow per-patch reference ---------------------------------------------------

_GRID = np.arange(0.2, 10.0005, 0.001)
_R_GAM = gamma_fn(2 / _GRID) ** 2 / (gamma_fn(1 / _GRID) * gamma_fn(3 / _GRID))


def _aggd_reference(v: np.ndarray) -> tuple[float, float, float]:
    """The NIQE paper's estimateaggdparam, line by line (argmin over the grid; scale parameters)."""
    if not (v < 0).any() or not (v > 0).any():
        return np.nan, np.nan, np.nan  # a flat patch: one side is empty
    left_std = np.sqrt(np.mean(v[v < 0] ** 2))
    right_std = np.sqrt(np.mean(v[v > 0] ** 2))
    g = left_std / right_std
    rhat = np.mean(np.abs(v)) ** 2 / np.mean(v**2)
    rhatnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = _GRID[np.argmin((_R_GAM - rhatnorm) ** 2)]
    k = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left_std * k, right_std * k


def _niqe_reference(gray: np.ndarray, patch: int = 96, snap: bool = False) -> np.ndarray:
    from piq.functional import imresize

    img = nss.to_luma255(gray).astype(np.float64)
    nby, nbx = img.shape[0] // patch, img.shape[1] // patch
    img = img[: nby * patch, : nbx * patch]
    per_scale = []
    for scale in (1, 2):
        b = patch // scale
        m = _mscn_reference(img, "nearest", snap)
        rows = []
        for i in range(nby):
            for j in range(nbx):
                p = m[i * b : (i + 1) * b, j * b : (j + 1) * b]
                a, bl, br = _aggd_reference(p.ravel())
                f = [a, (bl + br) / 2]
                for shift in nss.SHIFTS:
                    a, bl, br = _aggd_reference((p * np.roll(p, shift, axis=(0, 1))).ravel())
                    f += [a, (br - bl) * gamma_fn(2 / a) / gamma_fn(1 / a), bl, br]
                rows.append(f)
        per_scale.append(np.array(rows))
        img = imresize(torch.from_numpy(img)[None, None], scale=0.5)[0, 0].numpy()
    return np.hstack(per_scale)


def test_niqe_patch_features_match_reference(no_flat_grays: list[np.ndarray]) -> None:
    # Reference: float64, scipy filtering with replicated edges, per-patch np.roll, the paper's
    # AGGD estimator with argmin, piq's MATLAB-equivalent halving. Tolerances as for BRISQUE.
    for gray in no_flat_grays[:2]:
        ours, sharp = nss.niqe_patch_features(gray)
        ref = _niqe_reference(gray)
        assert ours.shape == ref.shape == (2 * 4, 36) and sharp.shape == (8,)
        shape_cols = [0, 2, 6, 10, 14, 18, 20, 24, 28, 32]
        rest = np.setdiff1d(np.arange(36), shape_cols)
        np.testing.assert_allclose(ours[:, shape_cols], ref[:, shape_cols], atol=2e-3)
        # Scale parameters and means depend on the shape through Gamma functions: a one-cell shape
        # difference moves them by ~0.2%, hence 3e-3 relative here.
        np.testing.assert_allclose(ours[:, rest], ref[:, rest], rtol=3e-3, atol=1e-5)


def _brisque_reference(gray: np.ndarray) -> np.ndarray:
    """BRISQUE's brisque_feature.m line by line in float64, flat windows snapped to 0 as ours."""
    from piq.functional import imresize

    grid_rho = gamma_fn(1 / _GRID) * gamma_fn(3 / _GRID) / gamma_fn(2 / _GRID) ** 2
    img = nss.to_luma255(gray).astype(np.float64)
    feats: list[float] = []
    for _ in range(2):
        m = _mscn_reference(img, "constant", snap=True)
        feats += [_GRID[np.argmin(np.abs(np.mean(m**2) / np.mean(np.abs(m)) ** 2 - grid_rho))], np.mean(m**2)]
        for shift in nss.SHIFTS:
            a, bl, br = _aggd_reference((m * np.roll(m, shift, axis=(0, 1))).ravel())
            k = np.sqrt(gamma_fn(3 / a) / gamma_fn(1 / a))  # back from scale parameters to side stds
            sl, sr = bl * k, br * k
            feats += [a, (sr - sl) * gamma_fn(2 / a) / np.sqrt(gamma_fn(1 / a) * gamma_fn(3 / a)), sl**2, sr**2]
        img = imresize(torch.from_numpy(img)[None, None], scale=0.5)[0, 0].numpy()
    return np.array(feats)


@pytest.mark.parametrize("flat", ["kodim20", "few", "many"])
def test_features_with_flat_regions_match_reference(kodak: Path, flat: str) -> None:
    # Exact zeros (flat windows) count on neither AGGD side. Ours counts a few by index and many from
    # a plane; both must agree with the float64 references that snap flat windows the same way.
    # Tolerances: "few" as elsewhere. Beside large flat areas, float32's E[x^2] - E[x]^2 loses the
    # tiny variances of almost-flat windows (0.06 in sigma at 8-bit scale; float64 filtering makes
    # the difference vanish), so patches bordering them differ by up to 5 grid cells in shape and
    # 2% or 2e-3 (side deviations are 0.3-1) in the rest, while the median feature agrees to 1e-3.
    from PIL import Image

    name = "kodim20.png" if flat == "kodim20" else "kodim01.png"
    gray = convert(np.asarray(Image.open(kodak / name).convert("RGB")), "gray")[:384, :384].copy()
    if flat == "few":
        gray[100:112, 130:140] = 0.5  # 6x4 flat windows: the index path
    elif flat == "many":
        gray[20:200, 50:300] = 0.25  # ~40k: the plane path
    m, _ = nss.mscn(nss.to_luma255(gray), 1)
    assert np.count_nonzero(m == 0) > (0 if flat == "kodim20" else 20)
    shape_cols = [0, 2, 6, 10, 14, 18, 20, 24, 28, 32]
    rest = np.setdiff1d(np.arange(36), shape_cols)
    shape_tol, rtol, atol = (2e-3, 3e-3, 1e-5) if flat == "few" else (5e-3, 2e-2, 2e-3)
    ours, ref = nss.niqe_patch_features(gray)[0], _niqe_reference(gray, snap=True)
    ok = ~np.isnan(ref).any(axis=1)  # a fully flat patch has no negative side: NaN in both
    np.testing.assert_array_equal(np.isnan(ours).any(axis=1), ~ok)
    np.testing.assert_allclose(ours[ok][:, shape_cols], ref[ok][:, shape_cols], atol=shape_tol)
    np.testing.assert_allclose(ours[ok][:, rest], ref[ok][:, rest], rtol=rtol, atol=atol)
    assert np.median(np.abs(ours[ok][:, rest] / ref[ok][:, rest] - 1)) < 1e-3
    ours, ref = nss.brisque_features(gray), _brisque_reference(gray)
    np.testing.assert_allclose(ours[shape_cols], ref[shape_cols], atol=shape_tol)
    np.testing.assert_allclose(ours[rest], ref[rest], rtol=rtol, atol=atol / 10)


def test_niqe_distance_is_the_published_formula() -> None:
    rng = np.random.default_rng(0)
    mu, feats = rng.normal(size=36), rng.normal(size=(50, 36)) + 0.5
    a = rng.normal(size=(36, 36))
    cov = a @ a.T / 36
    d = mu - feats.mean(axis=0)
    expected = np.sqrt(d @ np.linalg.pinv((cov + np.cov(feats, rowvar=False)) / 2) @ d)
    assert nss.niqe_distance(feats, mu, cov) == pytest.approx(expected, rel=1e-9)
    assert np.isnan(nss.niqe_distance(np.full((3, 36), np.nan), mu, cov))


# -- fitted parameters and scorers ---------------------------------------------------------------------


def test_weights_are_plain_tensors(fitted_store: WeightsStore) -> None:
    for name in ("niqe_fitted", "brisque_fitted"):
        spec = get_scorer_class(name).info.weights[0]
        state = torch.load(fitted_store.local_path(spec), weights_only=True)  # no pickle code runs
        assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    niqe = torch.load(fitted_store.local_path(get_scorer_class("niqe_fitted").info.weights[0]), weights_only=True)
    assert niqe["mu"].shape == (36,) and niqe["cov"].shape == (36, 36) and int(niqe["n_patches"]) > 36


def test_missing_weights_name_the_file(tmp_path: Path) -> None:
    previous = get_store().root
    configure_store(str(tmp_path / "empty"))
    try:
        with pytest.raises(WeightsError, match="niqe_pristine.pt"):
            create_scorer("niqe_fitted")  # the published niqe/brisque fall back to the shipped files
    finally:
        configure_store(previous)


def _mean_scores(name: str, crops: list[np.ndarray], distort) -> float:  # noqa: ANN001
    scorer = create_scorer(name)
    return float(np.nanmean(scorer.score([convert(distort(c), scorer.info.colour) for c in crops])[:, 0]))


@pytest.mark.parametrize("name", ["niqe_fitted", "brisque_fitted", "niqe", "brisque"])
def test_scores_rise_with_blur_and_noise(name: str, fitted_store: WeightsStore, kodak_images: list[np.ndarray]) -> None:
    # Fitted test weights come from scikit-image pictures; Kodak crops are unseen content. Averaged over
    # 8 crops (NIQE: 384x384 = 16 patches each), the score must rise strictly with each level.
    size = 384 if name.startswith("niqe") else 256
    crops = [img[64 : 64 + size, 128 : 128 + size] for img in kodak_images[::3]]
    blur = [_mean_scores(name, crops, lambda c, s=s: synth.blur(c, s) if s else c) for s in (0, 1.5, 3.0)]
    noise = [_mean_scores(name, crops, lambda c, s=s: synth.noise(c, s, seed=1) if s else c) for s in (0, 12, 30)]
    assert blur[0] < blur[1] < blur[2], blur
    assert noise[0] < noise[1] < noise[2], noise


def test_small_images_score_nan(fitted_store: WeightsStore) -> None:
    img = np.random.default_rng(0).random((90, 200), dtype=np.float32)  # < 96 rows: no NIQE patch
    for suffix in ("_fitted", ""):
        assert np.isnan(create_scorer("niqe" + suffix).score([img])[0, 0])
        assert np.isnan(create_scorer("brisque" + suffix).score([img[:12]])[0, 0])
        assert np.isfinite(create_scorer("brisque" + suffix).score([img])[0, 0])


def test_fit_niqe_needs_patches() -> None:
    with pytest.raises(ValueError, match="at least 2 sharp"):
        fit_niqe([np.zeros((50, 50, 3), dtype=np.uint8)])


def test_cli_fit_writes_store(tmp_path: Path, kodak: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from iqaflow.cli import app

    pristine = tmp_path / "pristine"
    pristine.mkdir()
    for name in ("kodim01.png", "kodim05.png", "kodim13.png"):
        shutil.copy(kodak / name, pristine / name)
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["fit", "niqe", "--pristine", str(pristine), "--weights", str(store)])
    assert result.exit_code == 0, result.output
    assert "niqe_fitted" in result.output  # says which scorer reads the fit
    state = WeightsStore(str(store)).load_state_dict(get_scorer_class("niqe_fitted").info.weights[0])
    assert int(state["n_images"]) == 3 and state["cov"].shape == (36, 36)
    bad = CliRunner().invoke(app, ["fit", "lpips", "--pristine", str(pristine)])
    assert bad.exit_code != 0
