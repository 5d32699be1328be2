"""Fitting NIQE and BRISQUE parameters to the user's own pristine images (scorers ``niqe_fitted`` and
``brisque_fitted``; ``niqe`` and ``brisque`` use the published models shipped with iqaflow).

NIQE (Mittal et al. 2013) is fitted as published: a multivariate Gaussian over the features of the
sharpest 96x96 patches of pristine images. BRISQUE (Mittal et al. 2012) was published with an SVR
trained on human scores (DMOS) of the LIVE database; without those, the regressor here learns
distortion *severity* instead: pristine images are blurred, noised, JPEG-compressed and mis-exposed
at graded levels (``iqaflow.evaluation.synth``), each level is mapped to a 0 (pristine) - 100 (worst) target,
and an RBF kernel ridge regression on the [-1, 1]-scaled features (the SVR's kernel and scaling)
is fitted in closed form. Its parameters are plain arrays, so no pickle is ever loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from iqaflow.evaluation import synth
from iqaflow.models.classical.nss import NIQE_PATCH, brisque_features, niqe_patch_features, rbf_predict
from iqaflow.models.colour import convert

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Five graded levels per distortion, mapped to targets 20, 40, 60, 80, 100 (pristine: 0).
BRISQUE_LEVELS: dict[str, tuple[float, ...]] = {
    "blur": (0.7, 1.2, 2.0, 3.2, 5.0),
    "noise": (3.0, 6.0, 12.0, 20.0, 32.0),
    "jpeg": (75, 45, 25, 12, 5),
    "under": (0.5, 0.32, 0.2, 0.12, 0.07),
    "over": (1.4, 1.8, 2.3, 3.0, 4.0),
}
# Exposure is left out by default: MSCN coefficients divide out contrast, so the features barely see
# it, and with it in the training set grouped-CV RMSE on Kodak rose from 7.7 to 14.7 (pristine images
# were then scored ~26 instead of ~14). The `exposure` scorer measures it directly.
DEFAULT_DISTORTIONS = ("blur", "noise", "jpeg")
_GAMMAS = (0.02, 0.05, 0.1)  # RBF widths tried; BRISQUE's SVR used 0.05
_LAMBDAS = (1e-3, 1e-2, 1e-1, 1.0)


def test_images(seed: int = 0) -> list[np.ndarray]:
    """Pristine uint8 RGB images shipped inside scikit-image (a fixed set; ``seed`` is unused)."""
    del seed
    return list(synth.skimage_images().values())


def test_crops(seed: int = 0, n: int = 24, size: int = 256) -> list[np.ndarray]:
    """Seeded crops of those images: more varied content per second of fitting than whole images."""
    return [crop for _, crop in synth.random_crops(synth.skimage_images(), n, size, seed)]


def read_images(folder: str | Path) -> list[np.ndarray]:
    """Every image file directly in ``folder`` as uint8 RGB, in name order."""
    from PIL import Image, ImageOps

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    out = []
    for p in paths:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im) or im
            if im.mode.startswith("I;16"):
                arr = np.asarray(im, dtype=np.uint16)
                out.append(np.stack([(arr >> 8).astype(np.uint8)] * 3, axis=2))
            else:
                out.append(np.asarray(im.convert("RGB")))
    return out


def niqe_pristine_features(
    images: Iterable[np.ndarray], patch: int = NIQE_PATCH, sharpness_threshold: float = 0.75
) -> np.ndarray:
    """Features of each image's sharp patches: mean local deviation above ``threshold`` x the image's sharpest."""
    rows = []
    for img in images:
        feats, sharp = niqe_patch_features(convert(img, "gray"), patch)
        if len(feats) == 0:
            continue
        keep = (sharp > sharpness_threshold * sharp.max()) & ~np.isnan(feats).any(axis=1)
        rows.append(feats[keep])
    return np.concatenate(rows) if rows else np.empty((0, 36))


def fit_niqe(images: Iterable[np.ndarray], patch: int = NIQE_PATCH, sharpness_threshold: float = 0.75) -> dict:
    """The pristine multivariate Gaussian (mean, covariance) as a state dict of plain tensors."""
    import torch

    images = list(images)
    feats = niqe_pristine_features(images, patch, sharpness_threshold)
    if len(feats) < 2:
        raise ValueError(
            f"NIQE needs at least 2 sharp {patch}x{patch} patches from pristine images; got {len(feats)} "
            f"from {len(images)} images. Fix: supply more (or larger) pristine images"
        )
    log.info("NIQE: %d patches from %d pristine images", len(feats), len(images))
    return {
        "mu": torch.from_numpy(feats.mean(axis=0)),
        "cov": torch.from_numpy(np.cov(feats, rowvar=False)),
        "patch": torch.tensor(patch),
        "n_patches": torch.tensor(len(feats)),
        "n_images": torch.tensor(len(images)),
    }


def _distortions(
    seed: int, names: Sequence[str] = DEFAULT_DISTORTIONS
) -> list[tuple[str, float, Callable[[np.ndarray], np.ndarray]]]:
    out: list[tuple[str, float, Callable[[np.ndarray], np.ndarray]]] = [("clean", 0.0, lambda im: im)]
    for name in names:
        levels = BRISQUE_LEVELS[name]
        for k, level in enumerate(levels, start=1):
            if name == "noise":
                fn = (lambda lv: lambda im: synth.noise(im, lv, seed=seed))(level)
            elif name == "jpeg":
                fn = (lambda lv: lambda im: synth.jpeg(im, int(lv)))(level)
            elif name == "blur":
                fn = (lambda lv: lambda im: synth.blur(im, lv))(level)
            else:
                fn = (lambda lv: lambda im: synth.exposure(im, lv))(level)
            out.append((name, 100.0 * k / len(levels), fn))
    return out


def brisque_training_set(
    images: Sequence[np.ndarray], seed: int = 0, distortions: Sequence[str] = DEFAULT_DISTORTIONS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (n, 36), targets (n,), source-image index (n,)) over every image x distortion level."""
    xs, ys, groups = [], [], []
    for i, img in enumerate(images):
        rgb = img if img.ndim == 3 else np.stack([img] * 3, axis=2)
        for _name, target, fn in _distortions(seed + i, distortions):
            xs.append(brisque_features(convert(fn(rgb), "gray")))
            ys.append(target)
            groups.append(i)
    x, y, g = np.array(xs), np.array(ys), np.array(groups)
    ok = ~np.isnan(x).any(axis=1)
    return x[ok], y[ok], g[ok]


def _krr(x: np.ndarray, y: np.ndarray, gamma: float, lam: float) -> dict[str, np.ndarray]:
    lo, hi = x.min(axis=0), x.max(axis=0)
    model = {"lo": lo, "hi": hi, "gamma": np.float64(gamma), "bias": np.float64(y.mean())}
    xs = 2 * (x - lo) / np.where(hi > lo, hi - lo, 1.0) - 1
    d2 = np.square(xs).sum(1)[:, None] + np.square(xs).sum(1)[None, :] - 2 * xs @ xs.T
    k = np.exp(-gamma * np.maximum(d2, 0))
    model["support"] = xs
    model["dual"] = np.linalg.solve(k + lam * np.eye(len(x)), y - y.mean())
    return model


def fit_brisque(
    images: Sequence[np.ndarray], seed: int = 0, folds: int = 4, distortions: Sequence[str] = DEFAULT_DISTORTIONS
) -> dict:
    """Fit the severity regressor; (gamma, lambda) by cross-validation with images grouped into folds."""
    import torch

    images = list(images)
    x, y, groups = brisque_training_set(images, seed, distortions)
    if len(np.unique(groups)) < 2:
        raise ValueError(f"BRISQUE needs at least 2 pristine images to fit; got {len(images)}")
    fold = groups % min(folds, len(np.unique(groups)))
    best = (np.inf, _GAMMAS[0], _LAMBDAS[0])
    for gamma in _GAMMAS:
        for lam in _LAMBDAS:
            err = np.concatenate([
                rbf_predict(x[fold == f], _krr(x[fold != f], y[fold != f], gamma, lam)) - y[fold == f]
                for f in np.unique(fold)
            ])
            rmse = float(np.sqrt(np.mean(err**2)))
            best = min(best, (rmse, gamma, lam))
    rmse, gamma, lam = best
    log.info("BRISQUE: %d samples from %d images; CV RMSE %.1f (gamma %g, lambda %g)", len(y), len(images), rmse,
             gamma, lam)
    model = _krr(x, y, gamma, lam)
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in model.items()}
    state.update(cv_rmse=torch.tensor(rmse, dtype=torch.float64), n_images=torch.tensor(len(images)))
    return state


# `iqaflow fit` target -> fitter, and the scorer that reads the result (its ``info.weights`` names the file).
# The plain ``niqe``/``brisque`` scorers use the published models shipped with iqaflow instead.
FITTERS: dict[str, Callable[[Sequence[np.ndarray]], dict]] = {"niqe": fit_niqe, "brisque": fit_brisque}
FITTED_SCORER: dict[str, str] = {"niqe": "niqe_fitted", "brisque": "brisque_fitted"}
