"""IQA agreement metrics: SRCC, KRCC, PLCC and RMSE after the 4-parameter logistic, bootstrap CIs, 2AFC.

Pure functions on numpy arrays. Predictions are expected *signed* so that higher means better
(callers negate lower-is-better scorers), which makes every correlation positive when a scorer
agrees with people. PLCC and RMSE follow the VQEG practice: fit the monotonic logistic
``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` from predictions to MOS first, then
correlate the mapped predictions with the MOS (negated when the fitted map decreases, so PLCC's
sign agrees with SRCC's).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, stats

METRICS = ("srcc", "plcc", "krcc", "rmse")


# The bootstrap calls these thousands of times on a few hundred values, where scipy.stats' per-call
# overhead dominates; these numpy forms give the same numbers (a test compares them to scipy).
def rank(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties averaged (scipy.stats.rankdata's 'average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    sx = x[order]
    first = np.r_[True, sx[1:] != sx[:-1]]
    dense = np.cumsum(first)
    bounds = np.r_[np.nonzero(first)[0], len(x)]
    out = np.empty(len(x), dtype=np.float64)
    out[order] = 0.5 * (bounds[dense] + bounds[dense - 1] + 1)
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64) - np.mean(a), np.asarray(b, np.float64) - np.mean(b)
    den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / den) if den > 0 else float("nan")


def srcc(pred: np.ndarray, mos: np.ndarray) -> float:
    return pearson(rank(pred), rank(mos))


def krcc(pred: np.ndarray, mos: np.ndarray) -> float:
    """Kendall's tau-b; exact pair counting for up to 3000 values, scipy's O(n log n) beyond."""
    x, y = np.asarray(pred, np.float64), np.asarray(mos, np.float64)
    if len(x) > 3000:
        return float(stats.kendalltau(x, y).statistic)
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    den = float(np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy)))
    return float((sx * sy).sum() / den) if den > 0 else float("nan")


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic; ``|b4|`` keeps the curve monotonic in the sign of ``b1 - b2``."""
    z = np.clip(-(x - b3) / (abs(b4) + 1e-12), -500.0, 500.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


Params = tuple[float, float, float, float]


def fit_logistic4(pred: np.ndarray, mos: np.ndarray, p0: Params | None = None) -> Params:
    """Least-squares fit of ``logistic4`` from predictions to MOS (the usual initial guess unless ``p0``)."""
    pred, mos = np.asarray(pred, np.float64), np.asarray(mos, np.float64)
    if p0 is None:
        p0 = (float(mos.max()), float(mos.min()), float(np.mean(pred)), float(np.std(pred)) or 1.0)
    # MINPACK's Levenberg-Marquardt, as curve_fit uses for this unbounded problem, minus its per-call overhead
    params, _, _, msg, ier = optimize.leastsq(
        lambda b: logistic4(pred, *b) - mos, np.asarray(p0, np.float64), maxfev=20000, full_output=True
    )
    if ier not in (1, 2, 3, 4):
        raise RuntimeError(f"logistic fit did not converge: {msg}")
    return tuple(float(p) for p in params)  # type: ignore[return-value]


def mapped(pred: np.ndarray, mos: np.ndarray, p0: Params | None = None) -> np.ndarray:
    """Predictions mapped onto the MOS scale by the fitted logistic (a linear map if the fit fails)."""
    try:
        out = logistic4(pred, *fit_logistic4(pred, mos, p0))
        if np.all(np.isfinite(out)) and np.std(out) > 1e-12 * (np.abs(out).max() + 1.0):
            return out
    except (RuntimeError, ValueError):
        pass
    slope, intercept = np.polyfit(pred, mos, 1)  # the fit did not converge: a linear map keeps PLCC defined
    return slope * pred + intercept


def plcc_rmse(pred: np.ndarray, mos: np.ndarray, p0: Params | None = None) -> tuple[float, float]:
    """PLCC and RMSE after the logistic; predictions are standardised first unless ``p0`` (fitted on
    standardised predictions) is given."""
    pred = np.asarray(pred, np.float64)
    m = mapped(standardise(pred) if p0 is None else pred, np.asarray(mos, np.float64), p0)
    # The fitted map may be decreasing (a scorer that disagrees with people); PLCC then carries that sign,
    # like SRCC, instead of the always-positive correlation of the mapped values.
    direction = 1.0 if pearson(m, pred) >= 0 else -1.0
    return direction * pearson(m, mos), float(np.sqrt(np.mean((m - mos) ** 2)))


def standardise(pred: np.ndarray) -> np.ndarray:
    """Zero mean, unit spread. Every metric here is invariant to it (the logistic absorbs an affine map of
    its input), and the fit converges far faster on scores of any scale (1e-4 or 1e4)."""
    sd = float(np.std(pred))
    return (pred - np.mean(pred)) / (sd if sd > 0 else 1.0)


def correlations(pred: np.ndarray, mos: np.ndarray, p0: Params | None = None) -> dict[str, float]:
    """SRCC, PLCC (after the logistic), KRCC and RMSE (MOS units) of one scorer."""
    pred, mos = _pair(pred, mos)
    plcc, rmse = plcc_rmse(pred, mos, p0)
    return {"srcc": srcc(pred, mos), "plcc": plcc, "krcc": krcc(pred, mos), "rmse": rmse}


@dataclass
class Agreement:
    """Point estimates and percentile-bootstrap confidence intervals."""

    n: int
    values: dict[str, float]
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    level: float = 0.95


def bootstrap(
    pred: np.ndarray, mos: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Agreement:
    """``correlations`` plus percentile CIs over ``n_boot`` resamples of the images (seeded, reproducible)."""
    pred, mos = _pair(pred, mos)
    values = correlations(pred, mos)
    if n_boot <= 0:
        return Agreement(len(pred), values, {}, level)
    pred = standardise(pred)
    try:  # resample fits start from the full fit: same answer, a fraction of the iterations
        p0: Params | None = fit_logistic4(pred, mos)
    except (RuntimeError, ValueError):
        p0 = None
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in METRICS}
    for _ in range(n_boot):
        idx = rng.integers(0, len(pred), len(pred))
        if np.ptp(pred[idx]) == 0 or np.ptp(mos[idx]) == 0:
            continue
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # degenerate resamples (near-constant fits) are expected; NaNs drop out
            for k, v in correlations(pred[idx], mos[idx], p0).items():
                samples[k].append(v)
    a = (1.0 - level) / 2.0
    ci = {k: (float(np.nanquantile(v, a)), float(np.nanquantile(v, 1 - a))) for k, v in samples.items() if v}
    return Agreement(len(pred), values, ci, level)


def pairwise_accuracy(score_a: np.ndarray, score_b: np.ndarray, prefer_a: np.ndarray) -> float:
    """2AFC agreement: the share of pairs where the scorer prefers the image people preferred.

    ``prefer_a`` is the fraction of people who chose A (1/0 for a single vote). Pairs people split
    evenly (0.5) carry no preference and are left out; a scorer tie counts as half right.
    """
    sa, sb, p = (np.asarray(v, np.float64) for v in (score_a, score_b, prefer_a))
    if not (len(sa) == len(sb) == len(p)):
        raise ValueError(f"expected equal lengths, got {len(sa)}, {len(sb)}, {len(p)}")
    keep = p != 0.5
    if not keep.any():
        raise ValueError("no pair has a preference (every prefer_a is 0.5)")
    people = np.sign(p[keep] - 0.5)
    model = np.sign(sa[keep] - sb[keep])
    return float(np.mean(np.where(model == 0, 0.5, (model == people).astype(np.float64))))


def ranking_accuracy(scores: np.ndarray, levels: np.ndarray, groups: np.ndarray) -> float:
    """Share of same-group pairs with different levels where the lower level scores higher (ties half).

    With ``scores`` signed higher-is-better and ``levels`` 0 = pristine, chance is 0.5.
    """
    s, lv, g = (np.asarray(v) for v in (scores, levels, groups))
    right = total = 0.0
    for key in np.unique(g):
        m = g == key
        ds = s[m][:, None] - s[m][None, :]
        dl = lv[m][:, None] - lv[m][None, :]
        pairs = dl < 0  # i is less distorted than j
        right += float(np.sum(ds[pairs] > 0) + 0.5 * np.sum(ds[pairs] == 0))
        total += float(pairs.sum())
    if total == 0:
        raise ValueError("no pair of different levels within a group")
    return right / total


def _pair(pred: np.ndarray, mos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, m = np.asarray(pred, np.float64).ravel(), np.asarray(mos, np.float64).ravel()
    if len(p) != len(m):
        raise ValueError(f"expected as many predictions as MOS values, got {len(p)} and {len(m)}")
    keep = np.isfinite(p) & np.isfinite(m)
    if keep.sum() < 3:
        raise ValueError(f"need at least 3 scored images with a MOS, got {int(keep.sum())}")
    return p[keep], m[keep]
