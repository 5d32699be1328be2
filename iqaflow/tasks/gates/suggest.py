"""Gate learning: propose one image rule from a few human accept/reject labels.

Reads the labels and the run's scores, keeps the columns whose scorer declares a direction and that
separate the labels that way, and lets :mod:`iqaflow.tasks.gates.suggest_rules` choose one rule (a logistic
combination or a single column) meeting a target recall or precision of catching rejects, with figures
held out by cross-validation. The output is an ordinary gate file with the evidence in comments,
checked by the gate-file parser before it is written. The ROC of one column is
:mod:`iqaflow.evaluation.roc`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from iqaflow.errors import ConfigError
from iqaflow.evaluation.roc import roc
from iqaflow.models.gate_binding import directions
from iqaflow.schemas.gates import parse_gate_text
from iqaflow.schemas.results import BASE_COLUMNS, COLLECTION_COLUMNS, GATE_COLUMNS, Col
from iqaflow.tasks.gates.gate import RunPaths, list_shards, read_columns, results_schema_of
from iqaflow.tasks.io.storage import join, open_fs

_ACCEPT = {"accept", "accepted", "pass", "good", "ok", "keep", "1", "true", "yes"}
_REJECT = {"reject", "rejected", "fail", "bad", "drop", "0", "false", "no"}
_KEYS = (Col.URI, "path", Col.IMAGE_ID)
_LABELS = ("label", "decision", "accept", "status")


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


@dataclass
class Suggestion:
    """The gate file text, the candidate rules with their figures, and notes on columns left out."""

    text: str
    candidates: list  # list[suggest_rules.Candidate]
    notes: list[str]
    target: object  # suggest_rules.Target
    folds: int


def suggest(run: RunPaths, labels_file: str, min_auc: float = 0.6, target_recall: float | None = None,
            target_precision: float | None = None) -> Suggestion:
    """One image rule meeting the target recall (default 0.8) or precision of rejects, from the labels and the
    run's scores; the figures are held out by stratified k-fold cross-validation."""
    from iqaflow.tasks.gates.router import configured_source

    target = make_target(target_recall, target_precision)
    fs, path = open_fs(labels_file)
    try:
        with fs.open(path, "rb") as fh:
            labels = read_labels(fh.read().decode(), labels_file)
    except FileNotFoundError:
        raise ConfigError(f"labels file {labels_file!r} not found. Fix: pass a CSV with path,label rows") from None
    schema = results_schema_of(run)
    fixed = BASE_COLUMNS | GATE_COLUMNS | COLLECTION_COLUMNS
    score_cols = [f.name for f in schema if f.name not in fixed and pa.types.is_floating(f.type)]
    table, _, _ = read_columns(list_shards(run.results_dir), [Col.URI, Col.IMAGE_ID, *score_cols])
    matched = _match(labels, table[Col.URI].to_pylist(), table[Col.IMAGE_ID].to_pylist(), configured_source(run))
    if len(matched) < 4 or len(set(matched.values())) < 2:
        raise ConfigError(f"{labels_file}: {len(matched)} of {len(labels)} labelled images found in the run, with "
                          f"{len(set(matched.values()))} classes; expected at least 4 and both accept and reject. "
                          "Fix: label images of this run (uri, path relative to the source, or image_id)")
    idx = np.array(sorted(matched))
    y = np.array([matched[i] for i in idx])
    values = {c: np.asarray(table[c].to_numpy(zero_copy_only=False), dtype=np.float64)[idx] for c in score_cols}
    return suggest_from_scores(values, y, target, min_auc, f"run {run.run_id}")


def make_target(target_recall: float | None, target_precision: float | None):  # type: ignore[no-untyped-def]
    from iqaflow.tasks.gates.suggest_rules import Target

    if target_recall is not None and target_precision is not None:
        raise ConfigError("--target-recall and --target-precision both given. Fix: pass one of them")
    metric, value = ("precision", target_precision) if target_precision is not None else \
        ("recall", 0.8 if target_recall is None else target_recall)
    if not 0 < value <= 1:
        raise ConfigError(f"--target-{metric} {value:g}: expected a number in (0, 1]. Fix: e.g. 0.8")
    return Target(metric, float(value))


def usable_columns(values: dict[str, np.ndarray], y: np.ndarray, min_auc: float) -> tuple[list[str], list[str]]:
    """(columns a rule may use, a note per column left out and why)."""
    from iqaflow.tasks.gates.suggest_rules import backwards_note

    declared = directions()
    use, notes = [], []
    for col, x in values.items():
        if col not in declared:
            notes.append(f"{col}: no declared direction (not a scorer's main score); not used")
            continue
        curve = roc(x, y, declared[col])
        if curve is None:
            notes.append(f"{col}: constant or missing on the labelled images; not used")
        elif curve.auc < 0.5:
            notes.append(backwards_note(col, declared[col]) + f" (AUC {curve.auc:.2f} the declared way)")
        elif curve.auc < min_auc:
            notes.append(f"{col}: AUC {curve.auc:.2f} below --min-auc {min_auc:g}; not used")
        else:
            use.append(col)
    return use, notes


def suggest_from_scores(values: dict[str, np.ndarray], y: np.ndarray, target, min_auc: float = 0.6,  # type: ignore[no-untyped-def]
                        origin: str = "the scores", seed: int = 0) -> Suggestion:
    """The suggestion from score columns (aligned with ``y``, True = reject)."""
    from iqaflow.tasks.gates.suggest_rules import choose, folds_for

    declared = directions()
    use, notes = usable_columns(values, y, min_auc)
    if not use:
        raise ConfigError(f"no score column separates the labels in its declared direction (AUC >= {min_auc:g}): "
                          f"{'; '.join(notes)}. Fix: label more images, or lower --min-auc")
    X = np.stack([values[c] for c in use], axis=1)
    candidates = choose(X, y, use, [declared[c] for c in use], target, seed)
    chosen = next(c for c in candidates if c.chosen)
    notes += [n for c in candidates if c.label == "combined" for n in c.rule.dropped.values()]
    text = _gate_text(chosen, candidates, notes, target, y, origin, folds_for(y))
    parse_gate_text(text, "suggested gate file")  # what we write must load
    return Suggestion(text, candidates, notes, target, folds_for(y))


def _figs(f) -> str:  # type: ignore[no-untyped-def]
    return "n/a" if f is None else f"precision {f.precision:.2f}, recall {f.recall:.2f}, false-reject rate " \
                                   f"{f.false_reject:.2f}"


def _gate_text(chosen, candidates, notes, target, y, origin, folds) -> str:  # type: ignore[no-untyped-def]
    n_rej = int(y.sum())
    how = (f"logistic regression on the standardised scores of {', '.join(chosen.rule.columns)} (each weight in "
           "its column's declared direction)" if chosen.label == "combined" else f"{chosen.label} alone")
    held = (f"# Held out ({folds}-fold stratified cross-validation: fitted and thresholded on {folds - 1} folds, "
            f"measured on the other): {_figs(chosen.held_out)}.\n" if chosen.held_out is not None else
            "# Held out: n/a (too few labels of one class for cross-validation).\n")
    lines = [f"# Suggested by `iqaflow gates suggest` from {len(y)} labelled images ({len(y) - n_rej} accept, "
             f"{n_rej} reject) of {origin}.",
             f"# Target: {target}. One rule, chosen jointly (not per-scorer cuts OR-ed): {how}; the threshold",
             "# meets the target on all the labels.", held.rstrip("\n"),
             f"# On the labels it was fitted to (optimistic): {_figs(chosen.fitted)}.",
             "# Candidates, held-out precision / recall (the best kept):"]
    for c in candidates:
        h = c.held_out
        fig = "n/a" if h is None else f"{h.precision:.2f} / {h.recall:.2f}"
        cols = f" ({', '.join(c.rule.columns)})" if c.label == "combined" else ""
        lines.append(f"#   {c.label}{cols}: {fig}{'  <- kept' if c.chosen else ''}")
    if notes:
        lines.append("# Columns left out:")
        lines += [f"#   {n}" for n in notes]
    lines.append("# Review, edit, then use with --gates.")
    name, reason = ("quality_gate", "low_quality") if chosen.label == "combined" else \
        (f"{chosen.label}_gate", f"low_{chosen.label}")
    body = ("version: 1\nname: suggested\nimage_rules:\n  - name: readable\n    require: error_code is null\n"
            "    outcome: reject\n    reason: unreadable\n"
            f"  - name: {name}\n    require: \"{chosen.rule.expression()}\"\n    outcome: reject\n"
            f"    reason: {reason}\n")
    return "\n".join(lines) + "\n" + body
