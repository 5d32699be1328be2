"""One gate rule from accept/reject labels, chosen jointly to meet a target recall or precision of rejects.

Candidates: a logistic regression on the standardised scores of every usable column (a weighted sum the
gate grammar evaluates), and each usable column alone. A column is usable when its scorer declares a
direction and, on the labels, it separates the classes that way (ROC AUC >= ``min_auc``); a fitted weight
against the declared direction drops that column and the model is refitted, so no rule reads backwards.
Each candidate's threshold is the one meeting the target on the labels it is fitted to; the candidate
kept is the best by stratified k-fold cross-validation (fit and threshold on k-1 folds, measure on the
held-out fold, counts pooled over folds), which is also what the figures report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iqaflow.evaluation.roc import roc

MAX_FOLDS = 5


@dataclass(frozen=True)
class Target:
    metric: str  # "recall" | "precision" (of catching rejects)
    value: float

    def __str__(self) -> str:
        return f"{self.metric} of rejects >= {self.value:.2f}"


@dataclass
class Figures:
    """Catching rejects: precision, recall and the share of accepted images rejected."""

    precision: float
    recall: float
    false_reject: float

    @classmethod
    def of(cls, reject_pred: np.ndarray, y: np.ndarray) -> Figures:
        tp = float(np.sum(reject_pred & y))
        fp = float(np.sum(reject_pred & ~y))
        return cls(tp / (tp + fp) if tp + fp else 1.0, tp / max(1.0, float(y.sum())), fp / max(1.0, float((~y).sum())))


@dataclass
class Rule:
    """Pass when ``sum(weights * (x - mean) / scale) >= threshold``; weights follow declared directions."""

    columns: list[str]
    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    threshold: float
    dropped: dict[str, str] = field(default_factory=dict)  # column -> why the fit left it out

    @property
    def combined(self) -> bool:
        return len(self.columns) > 1 or bool(self.dropped)

    def quality(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.mean) / self.scale) @ self.weights

    def rejects(self, X: np.ndarray) -> np.ndarray:
        """What the gate does: reject unless quality >= threshold (a missing value rejects)."""
        return ~(self.quality(X) >= self.threshold)

    def expression(self) -> str:
        if len(self.columns) == 1 and self.mean[0] == 0 and self.scale[0] == 1:
            col, w = self.columns[0], self.weights[0]
            return f"{col} >= {_fmt(self.threshold)}" if w > 0 else f"{col} <= {_fmt(-self.threshold)}"
        terms = []
        for col, w, m, s in zip(self.columns, self.weights, self.mean, self.scale, strict=True):
            centre = f"{col} - {_fmt(m)}" if m >= 0 else f"{col} + {_fmt(-m)}"
            sign = "-" if w < 0 else "+"
            terms.append((sign, f"{_fmt(abs(w))} * ({centre}) / {_fmt(s)}"))
        text = ("-" if terms[0][0] == "-" else "") + terms[0][1]
        text += "".join(f" {sign} {t}" for sign, t in terms[1:])
        return f"{text} >= {_fmt(self.threshold)}"


def _fmt(v: float) -> str:
    return f"{float(v):.6g}"


def pick_threshold(q: np.ndarray, y: np.ndarray, target: Target) -> float:
    """Cut on ``q`` (reject below it) meeting the target with the best other figure; else the closest."""
    curve = roc(q, y, higher_is_better=True)
    if curve is None:
        return float(np.nanmin(q)) if np.isfinite(q).any() else 0.0
    tpr, prec, cut = curve.tpr, curve.precision, curve.thresholds
    if target.metric == "recall":
        ok = tpr >= target.value - 1e-12
        order = np.lexsort((cut, -prec)) if ok.any() else np.lexsort((-prec, -tpr))
    else:
        ok = prec >= target.value - 1e-12
        order = np.lexsort((-prec, -tpr)) if ok.any() else np.lexsort((-tpr, -prec))
    pool = order[ok[order]] if ok.any() else order
    return float(cut[pool[0]])


def fit_combined(X: np.ndarray, y: np.ndarray, names: list[str], higher: list[bool], target: Target) -> Rule | None:
    """Logistic regression on standardised columns, refitted without any column whose weight reads backwards."""
    from sklearn.linear_model import LogisticRegression

    keep = list(range(len(names)))
    dropped: dict[str, str] = {}
    rows = np.isfinite(X).all(axis=1)
    Xf, yf = X[rows], y[rows]
    while keep:
        mean, scale = Xf[:, keep].mean(axis=0), Xf[:, keep].std(axis=0)
        scale[scale == 0] = 1.0
        model = LogisticRegression(C=1.0, max_iter=1000).fit((Xf[:, keep] - mean) / scale, yf)
        weights = -model.coef_[0]  # quality: higher = more likely accepted
        signs = np.array([1.0 if higher[j] else -1.0 for j in keep])
        wrong = np.flatnonzero(weights * signs <= 0)
        if len(wrong) == 0:
            rule = Rule([names[j] for j in keep], weights, mean, scale, 0.0, dropped)
            rule.threshold = pick_threshold(rule.quality(Xf[:, keep]), yf, target)
            return rule
        worst = wrong[np.argmin(weights[wrong] * signs[wrong])]
        j = keep.pop(int(worst))
        dropped[names[j]] = backwards_note(names[j], higher[j], "with the other columns in the model")
    return None


def fit_single(x: np.ndarray, y: np.ndarray, name: str, higher: bool, target: Target) -> Rule:
    w = 1.0 if higher else -1.0
    rows = np.isfinite(x)
    rule = Rule([name], np.array([w]), np.zeros(1), np.ones(1), 0.0)
    rule.threshold = pick_threshold(w * x[rows], y[rows], target)
    return rule


def backwards_note(col: str, higher: bool, how: str = "") -> str:
    way = "lower" if higher else "higher"
    extra = f" ({how})" if how else ""
    return (f"{col}: on these labels {way} {col} went with accepted images{extra}, against its declared "
            f"direction ({'higher' if higher else 'lower'} is better); not used")


@dataclass
class Candidate:
    label: str
    rule: Rule
    held_out: Figures | None  # None when the labels are too few for cross-validation
    fitted: Figures
    auc: float  # in-sample ROC AUC of the rule's quality
    chosen: bool = False


def folds_for(y: np.ndarray) -> int:
    return int(min(MAX_FOLDS, y.sum(), (~y).sum()))


def cross_validate(fit, X: np.ndarray, y: np.ndarray, seed: int = 0) -> Figures | None:  # type: ignore[no-untyped-def]
    """Pooled held-out figures of ``fit(X_train, y_train) -> Rule`` over stratified folds."""
    from sklearn.model_selection import StratifiedKFold

    k = folds_for(y)
    if k < 2:
        return None
    pred = np.zeros(len(y), dtype=bool)
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(X, y):
        rule = fit(X[train], y[train])
        if rule is None:
            return None
        pred[test] = rule.rejects(_cols(X[test], rule, fit))
    return Figures.of(pred, y)


def _cols(X: np.ndarray, rule: Rule, fit) -> np.ndarray:  # type: ignore[no-untyped-def]
    return X[:, [fit.names.index(c) for c in rule.columns]]


class _Fit:
    """A candidate's fitting procedure over a fixed column list (callable for cross-validation)."""

    def __init__(self, names: list[str], higher: list[bool], target: Target, single: str | None) -> None:
        self.names, self.higher, self.target, self.single = names, higher, target, single

    def __call__(self, X: np.ndarray, y: np.ndarray) -> Rule | None:
        if self.single is not None:
            j = self.names.index(self.single)
            return fit_single(X[:, j], y, self.single, self.higher[j], self.target)
        return fit_combined(X, y, self.names, self.higher, self.target)


def _score(c: Candidate, target: Target) -> tuple[float, float, int]:
    f = c.held_out or c.fitted
    got, other = (f.recall, f.precision) if target.metric == "recall" else (f.precision, f.recall)
    return (other - max(0.0, target.value - got), got, -len(c.rule.columns))


def choose(X: np.ndarray, y: np.ndarray, names: list[str], higher: list[bool], target: Target,
           seed: int = 0) -> list[Candidate]:
    """Candidates (combined first, then single columns), the best by held-out figures marked ``chosen``."""
    fits = [] if len(names) < 2 else [("combined", _Fit(names, higher, target, None))]
    fits += [(n, _Fit(names, higher, target, n)) for n in names]
    out: list[Candidate] = []
    for label, fit in fits:
        rule = fit(X, y)
        if rule is None:
            continue
        Xr = _cols(X, rule, fit)
        q = rule.quality(Xr)
        curve = roc(q, y, higher_is_better=True)
        out.append(Candidate(label, rule, cross_validate(fit, X, y, seed), Figures.of(rule.rejects(Xr), y),
                             curve.auc if curve is not None else float("nan")))
    if out:
        max(out, key=lambda c: _score(c, target)).chosen = True
    return out
