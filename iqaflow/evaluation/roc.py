"""ROC of one score column against reject labels, and Youden's J; pure maths for gate learning."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Roc:
    """Thresholds (pass when score is at least as good) with the rates of catching rejects."""

    thresholds: np.ndarray
    tpr: np.ndarray  # recall of rejects
    fpr: np.ndarray
    precision: np.ndarray
    auc: float


def roc(scores: np.ndarray, reject: np.ndarray, higher_is_better: bool) -> Roc | None:
    """ROC over midpoints between distinct scores; None without both classes or two distinct values."""
    keep = ~np.isnan(scores)
    s, y = scores[keep], reject[keep].astype(bool)
    if y.all() or not y.any():
        return None
    key = s if higher_is_better else -s  # larger key = better image
    uniq = np.unique(key)
    if len(uniq) < 2:
        return None
    cuts = (uniq[:-1] + uniq[1:]) / 2
    tp = np.searchsorted(np.sort(key[y]), cuts, side="left").astype(float)  # rejects below the cut
    fp = np.searchsorted(np.sort(key[~y]), cuts, side="left").astype(float)
    tpr, fpr = tp / y.sum(), fp / (~y).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
    x, t = np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], tpr, [1.0]])
    auc = float(np.sum(np.diff(x) * (t[1:] + t[:-1]) / 2))
    return Roc(cuts if higher_is_better else -cuts, tpr, fpr, precision, auc)


def best(r: Roc) -> int:
    return int(np.argmax(r.tpr - r.fpr))
