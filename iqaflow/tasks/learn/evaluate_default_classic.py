"""Units of ``iqaflow evaluate-default``: k-fold content-split CV of the default NR recipe against baselines.

Per fold, ``iqaflow_nr_classic`` is re-trained by the recipe on the other folds (features and synthetic pre-training
set are computed once: they depend on no label) and scored on the held-out fold. The classical baselines
need no human score: NIQE and BRISQUE are fitted on a pristine folder (as ``iqaflow fit`` does) and the
variance of the Laplacian has no parameters, so they are scored once and measured on the same folds.
``brisque (trained on folds)`` is BRISQUE's published protocol: its 36 features with the recipe's
regressor trained on the other folds' human scores.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from iqaflow.config.default_nr_classic import DefaultNrRecipe
from iqaflow.evaluation.crossval import CvRow, content_folds, fold_agreement
from iqaflow.models.classical.nr import laplacian_variance
from iqaflow.models.classical.nss import brisque_features, niqe_distance, niqe_patch_features, rbf_predict
from iqaflow.models.deep import default_nr_model as maths
from iqaflow.tasks.learn.default_nr_classic import RatedSet, SyntheticSet, decode_rgb

log = logging.getLogger(__name__)

# Variants of the recipe shown with --ablation: what each part adds.
ABLATIONS: dict[str, dict[str, float]] = {
    "iqaflow_nr_classic without pre-training": {"pretrain_steps": 0},
    "iqaflow_nr_classic KRR only": {"krr_weight": 1.0},
    "iqaflow_nr_classic MLPs only": {"krr_weight": 0.0},
}


@dataclass
class Baselines:
    """Signed (higher = better) scores of the untrained baselines, and the BRISQUE features."""

    scores: dict[str, np.ndarray]
    notes: dict[str, str]
    brisque_features: np.ndarray


def baseline_scores(paths: Sequence[str], pristine: str | None,
                    on_progress: Callable[[int, int], None] | None = None) -> Baselines:
    """Laplacian variance of each image, and NIQE/BRISQUE fitted on ``pristine`` (skipped without it)."""
    from iqaflow.models.classical.nss_fit import fit_brisque, fit_niqe, read_images

    niqe = brisque = None
    notes = {"sharpness": "no parameters (variance of the Laplacian)"}
    if pristine:
        images = read_images(pristine)
        niqe = {k: v.double().numpy() for k, v in fit_niqe(images).items()}
        brisque = {k: v.double().numpy() for k, v in fit_brisque(images).items()}
        notes["niqe"] = f"pristine model fitted on {len(images)} images of {pristine}"
        notes["brisque"] = f"regressor fitted on synthetic distortions of {len(images)} images of {pristine}"
    scores = {k: np.full(len(paths), np.nan) for k in notes}
    feats = np.full((len(paths), 36), np.nan)
    for i, path in enumerate(paths):
        gray = cv2.cvtColor(decode_rgb(path), cv2.COLOR_RGB2GRAY)
        scores["sharpness"][i] = laplacian_variance(gray)
        feats[i] = brisque_features(gray)
        if niqe is not None and brisque is not None:
            patches, _ = niqe_patch_features(gray, int(niqe["patch"]))
            scores["niqe"][i] = -niqe_distance(patches, niqe["mu"], niqe["cov"])  # lower is better: negate
            scores["brisque"][i] = -float(rbf_predict(feats[i], brisque)[0])
        if on_progress is not None:
            on_progress(i + 1, len(paths))
    return Baselines(scores, notes, feats)


def cross_validate(
    recipe: DefaultNrRecipe, rated: RatedSet, synthetic: SyntheticSet | None, baselines: Baselines | None = None,
    ablation: bool = False, on_fold: Callable[[str, int], None] | None = None,
) -> list[CvRow]:
    """One row per model: iqaflow_nr_classic (re-trained per fold), its ablations, then the baselines. With
    ``evaluation.repeats`` > 1 the k-fold split is redrawn (seeds ``seed``, ``seed + 1``, ...) and every
    fold of every repeat counts once."""
    k, n = recipe.evaluation.folds, len(rated.mos)
    splits = [content_folds(n, k, recipe.seed + r) for r in range(recipe.evaluation.repeats)]
    settings = recipe.fit_settings()
    syn_x, pairs = (synthetic.features, synthetic.pairs()) if synthetic is not None else (None, None)
    variants = {"iqaflow_nr_classic": settings}
    if ablation:
        variants.update({name: replace(settings, **change) for name, change in ABLATIONS.items()})

    def run(name: str, note: str, x: np.ndarray, s: maths.FitSettings, sx: np.ndarray | None) -> CvRow:
        row = CvRow(name, note)
        for r, folds in enumerate(splits):
            for test in folds:
                train = np.setdiff1d(np.arange(n), test)
                model = maths.fit(x[train], rated.mos[train], s, sx, pairs if sx is not None else None)
                row.folds.append({**fold_agreement(maths.predict(x[test], model), rated.mos[test]), "repeat": r})
                if on_fold is not None:
                    on_fold(name, len(row.folds))
        return row

    n_train = n - len(splits[0][0])
    trained_on = f"recipe re-trained on {k - 1} fold{'s' if k > 2 else ''} (~{n_train} images)"
    rows = [run(name, f"{trained_on}, seed {s.seed}", rated.features, s, syn_x) for name, s in variants.items()]
    if baselines is not None:
        rows.append(run("brisque (trained on folds)", "BRISQUE's 36 features, the recipe's KRR trained on the other "
                        "folds", baselines.brisque_features, replace(settings, krr_weight=1.0), None))
        for name, values in baselines.scores.items():
            rows.append(CvRow(name, baselines.notes[name], [
                {**fold_agreement(values[test], rated.mos[test]), "repeat": r}
                for r, folds in enumerate(splits) for test in folds]))
    return rows


@dataclass
class Speed:
    images: int
    side: str
    scorer_per_s: float  # features + prediction, CPU time of one thread
    with_decode_per_s: float  # file read + decode + colour conversion + scoring


def measure_speed(paths: list[str], n: int) -> Speed:
    """Images per second per core of the shipped ``iqaflow_nr_classic`` (OpenCV and torch held to one thread)."""
    from contextlib import nullcontext

    from iqaflow.models.registry import create_scorer

    try:
        from threadpoolctl import threadpool_limits  # numpy's BLAS pool, when installed
    except ImportError:  # pragma: no cover
        threadpool_limits = None
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    limits = threadpool_limits(1) if threadpool_limits is not None else nullcontext()
    try:
        scorer = create_scorer("iqaflow_nr_classic")
        paths = paths[:n]
        images = [decode_rgb(p) for p in paths]
        scorer.score(images[:2])  # warm-up: scratch planes, lazy imports
        t0 = time.process_time()
        for img in images:
            scorer.score([img])
        scorer_s = time.process_time() - t0
        t0 = time.process_time()
        for p in paths:
            scorer.score([decode_rgb(p)])
        full_s = time.process_time() - t0
    finally:
        cv2.setNumThreads(threads)
        limits.__exit__(None, None, None)
    sides = sorted({f"{img.shape[1]}x{img.shape[0]}" for img in images})
    return Speed(len(images), ", ".join(sides[:3]), len(images) / max(scorer_s, 1e-9), len(images) / max(full_s, 1e-9))
