"""Gate learning: propose per-scorer thresholds from a few human accept/reject labels.

For each score column, the ROC of "reject when the score is worse than t" against the labels;
the suggested threshold maximises Youden's J (TPR - FPR). Precision and recall are those of
catching rejects. The output is an ordinary gate file with the evidence in comments, checked by
the gate-file parser before it is written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from iqaflow.errors import ConfigError
from iqaflow.schemas.gates import parse_gate_text
from iqaflow.schemas.results import BASE_COLUMNS, COLLECTION_COLUMNS, GATE_COLUMNS, Col
from iqaflow.tasks.gate import RunPaths, directions, list_shards, read_columns, results_schema_of
from iqaflow.tasks.storage import join, open_fs

_ACCEPT = {"accept", "accepted", "pass", "good", "ok", "keep", "1", "true", "yes"}
_REJECT = {"reject", "rejected", "fail", "bad", "drop", "0", "false", "no"}
_KEYS = (Col.URI, "path", Col.IMAGE_ID)
_LABELS = ("label", "decision", "accept", "status")


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


def read_labels(text: str, source: str) -> list[tuple[str, str, bool]]:
    """(key column, key, is_reject) per row of a labels CSV."""
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in reader.fieldnames or []]
    key = next((k for k in _KEYS if k in fields), None)
    label = next((k for k in _LABELS if k in fields), None)
    if key is None or label is None:
        raise ConfigError(f"{source}: expected a column naming the image ({', '.join(_KEYS)}) and a label column "
                          f"({', '.join(_LABELS)}); got {fields}. Fix: e.g. a header 'path,label'")
    rows = []
    for n, row in enumerate(reader, start=2):
        value = (row.get(label) or "").strip().lower()
        if value not in _ACCEPT | _REJECT:
            raise ConfigError(f"{source}:{n}: label {value!r}: expected accept or reject (or 1/0, good/bad). "
                              "Fix: correct that row")
        rows.append((key, (row.get(key) or "").strip(), value in _REJECT))
    return rows


def _match(labels: list[tuple[str, str, bool]], uris: list[str], ids: list[str], root: str | None) -> dict[int, bool]:
    """Row index in the results -> is_reject, for the labelled images found there."""
    by_uri = {u: i for i, u in enumerate(uris)}
    by_id = {v: i for i, v in enumerate(ids)}
    out: dict[int, bool] = {}
    for key, value, rej in labels:
        if key == Col.IMAGE_ID:
            idx = by_id.get(value)
        elif key == Col.URI:
            idx = by_uri.get(value)
        else:
            idx = by_uri.get(join(root, value)) if root else None
            if idx is None:
                idx = next((i for u, i in by_uri.items() if u.endswith("/" + value.lstrip("/"))), None)
        if idx is not None:
            out[idx] = rej
    return out


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def suggest(run: RunPaths, labels_file: str, min_auc: float = 0.6) -> tuple[str, list[dict[str, object]]]:
    """(gate file text, one summary row per score column) from the labels and the run's scores."""
    from iqaflow.tasks.router import configured_source

    fs, path = open_fs(labels_file)
    try:
        with fs.open(path, "rb") as fh:
            labels = read_labels(fh.read().decode(), labels_file)
    except FileNotFoundError:
        raise ConfigError(f"labels file {labels_file!r} not found. Fix: pass a CSV with path,label rows") from None
    schema = results_schema_of(run)
    fixed = BASE_COLUMNS | GATE_COLUMNS | COLLECTION_COLUMNS
    score_cols = [f.name for f in schema if f.name not in fixed]
    table, _, _ = read_columns(list_shards(run.results_dir), [Col.URI, Col.IMAGE_ID, *score_cols])
    matched = _match(labels, table[Col.URI].to_pylist(), table[Col.IMAGE_ID].to_pylist(), configured_source(run))
    if len(matched) < 4 or len(set(matched.values())) < 2:
        raise ConfigError(f"{labels_file}: {len(matched)} of {len(labels)} labelled images found in the run, with "
                          f"{len(set(matched.values()))} classes; expected at least 4 and both accept and reject. "
                          "Fix: label images of this run (uri, path relative to the source, or image_id)")
    idx = np.array(sorted(matched))
    y = np.array([matched[i] for i in idx])
    declared = directions()
    rows: list[dict[str, object]] = []
    rules: list[str] = []
    for col in score_cols:
        values = np.asarray(table[col].to_numpy(zero_copy_only=False), dtype=np.float64)[idx]
        options = [declared[col]] if col in declared else [True, False]
        curves = [(h, roc(values, y, h)) for h in options]
        curves = [(h, c) for h, c in curves if c is not None]
        if not curves:
            continue
        higher, curve = max(curves, key=lambda hc: hc[1].auc)
        k = best(curve)
        row = {"column": col, "direction": "higher" if higher else "lower", "auc": curve.auc,
               "threshold": float(curve.thresholds[k]), "precision": float(curve.precision[k]),
               "recall": float(curve.tpr[k]), "used": curve.auc >= min_auc}
        rows.append(row)
        if row["used"]:
            rules.append(_rule_text(col, higher, curve, k))
    n_rej = int(y.sum())
    header = (f"# Suggested by `iqaflow gates suggest` from {len(y)} labelled images ({len(y) - n_rej} accept, "
              f"{n_rej} reject) of run {run.run_id}.\n# Each threshold maximises Youden's J (TPR - FPR) on the ROC; "
              "precision/recall are for catching rejects.\n# Scorers with AUC below "
              f"{min_auc:g} are left out. Review, edit, then use with --gates.\n")
    body = ("version: 1\nname: suggested\nimage_rules:\n  - name: readable\n    require: error_code is null\n"
            "    outcome: reject\n    reason: unreadable\n" + "".join(rules))
    text = header + body
    parse_gate_text(text, "suggested gate file")  # what we write must load
    return text, rows


def _rule_text(col: str, higher: bool, curve: Roc, k: int) -> str:
    op = ">=" if higher else "<="
    alternatives = []
    for target in (0.5, 0.8, 0.9, 0.95):
        j = int(np.argmax(curve.tpr >= target)) if (curve.tpr >= target).any() else None
        if j is not None and j != k:
            alternatives.append(f"{op} {_fmt(curve.thresholds[j])} (P {curve.precision[j]:.2f} R {curve.tpr[j]:.2f})")
    alt = f"\n  #   alternatives: {'; '.join(dict.fromkeys(alternatives))}" if alternatives else ""
    return (f"  # {col}: AUC {curve.auc:.3f}; here precision {curve.precision[k]:.2f}, recall {curve.tpr[k]:.2f}, "
            f"false-reject rate {curve.fpr[k]:.2f}{alt}\n"
            f"  - name: {col}_gate\n    require: \"{col} {op} {_fmt(curve.thresholds[k])}\"\n"
            f"    outcome: {'reject' if curve.auc >= 0.8 else 'flag'}\n    reason: low_{col}\n")
