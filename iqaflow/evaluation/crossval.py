"""Cross-validation bookkeeping (pure): seeded content folds and per-fold agreement, mean and spread.

A fold split is a *content* split when no scene has images on both sides. Pass ``groups`` (one content
id per image) when a dataset holds several versions of a scene; every CLIVE image is its own scene, so
a split by image is already a content split there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iqaflow.evaluation import metrics as M


def content_folds(n: int, k: int, seed: int = 0, groups: np.ndarray | None = None) -> list[np.ndarray]:
    """Test indices of ``k`` folds: contents shuffled (seeded) and dealt round-robin, so fold sizes differ by
    at most one content."""
    ids = np.arange(n) if groups is None else np.asarray(groups)
    if len(ids) != n:
        raise ValueError(f"expected {n} group ids, got {len(ids)}")
    contents = np.unique(ids)
    if len(contents) < k:
        raise ValueError(f"{k}-fold cross-validation needs at least {k} contents, got {len(contents)}")
    order = np.random.default_rng(seed).permutation(len(contents))
    return [np.flatnonzero(np.isin(ids, contents[order[f::k]])) for f in range(k)]


def fold_agreement(pred: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    """SRCC and PLCC (after the 4-parameter logistic, fitted on the fold) of one test fold."""
    pred, mos = np.asarray(pred, np.float64), np.asarray(mos, np.float64)
    keep = np.isfinite(pred) & np.isfinite(mos)
    if keep.sum() < 3 or np.ptp(pred[keep]) == 0:
        return {"srcc": float("nan"), "plcc": float("nan")}
    plcc, _ = M.plcc_rmse(pred[keep], mos[keep])
    return {"srcc": M.srcc(pred[keep], mos[keep]), "plcc": plcc}


@dataclass
class CvRow:
    """One model's agreement over the folds; ``note`` says how it was fitted."""

    model: str
    note: str
    folds: list[dict[str, float]] = field(default_factory=list)

    def values(self, metric: str) -> np.ndarray:
        return np.array([f[metric] for f in self.folds], dtype=np.float64)

    def mean(self, metric: str) -> float:
        v = self.values(metric)
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    def std(self, metric: str) -> float:
        v = self.values(metric)
        return float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else float("nan")

    def repeat_means(self, metric: str) -> np.ndarray:
        """Mean of ``metric`` per repeat of the k-fold split (folds carry a ``repeat`` key)."""
        reps = np.array([f.get("repeat", 0) for f in self.folds])
        v = self.values(metric)
        return np.array([np.nanmean(v[reps == r]) for r in np.unique(reps)])

    def summary(self) -> dict[str, float]:
        return {f"{m}_{s}": getattr(self, s)(m) for m in ("srcc", "plcc") for s in ("mean", "std")}
