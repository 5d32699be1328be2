"""Curation scenario for `iqaflow gates suggest`: rules learned from one half of a labelled slice, measured
on the other half.

    python bench/suggest_curation.py [--data ../shared/data/biq2021-test] [--target-recall 0.8] [--seed 0]

Scores BIQ2021's test split (2,000 photos, MOS in [0, 1]) with the default scorers (iqaflow_nr, sharpness,
exposure, noise) directly through the scorer registry (scores cached under --cache), labels an image bad
when MOS < 0.4, splits the images in two seeded stratified halves, suggests a gate from the first half
(``iqaflow.tasks.gates.suggest_rules.choose_rule``, the method behind `gates suggest --target-recall`) and
reports precision and recall of catching the bad images on the second half. For comparison, on the same
split: ``iqaflow_nr`` alone (threshold meeting the target recall on the first half) and the old
OR-of-Youden rule (each score column's Youden threshold, rules OR-ed). Nothing is tuned on the second half.
Goal: precision >= 0.65 at recall >= 0.8.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

MODELS = ("iqaflow_nr", "sharpness", "exposure", "noise")
BAD_BELOW = 0.4


def score_all(folder: Path, names: list[str], cache: Path) -> dict[str, np.ndarray]:
    """Score columns (every output of the default scorers) for ``names``, cached as .npz."""
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        if list(data["names"]) == names:
            return {k: data[k] for k in data.files if k != "names"}
    from iqaflow.models.colour import convert
    from iqaflow.models.registry import create_scorer
    from iqaflow.tasks.decode import decode

    scorers = [create_scorer(m) for m in MODELS]
    cols: dict[str, list[float]] = {c: [] for s in scorers for c in s.info.outputs}
    t0 = time.perf_counter()
    for start in range(0, len(names), 16):
        pixels = [decode((folder / "images" / n).read_bytes()).pixels for n in names[start:start + 16]]
        for s in scorers:
            out = s.score([convert(p, s.info.colour) for p in pixels])
            for j, c in enumerate(s.info.outputs):
                cols[c].extend(out[:, j].tolist())
        if start % 400 == 0:
            print(f"  scored {start + len(pixels)}/{len(names)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    arrays = {c: np.asarray(v, dtype=np.float64) for c, v in cols.items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, names=np.asarray(names), **arrays)
    return arrays


def old_or_of_youden(train: dict[str, np.ndarray], y: np.ndarray,
                     min_auc: float = 0.6) -> list[tuple[str, bool, float]]:
    """The rules `gates suggest` wrote before: per column, Youden's J threshold, direction by AUC; OR-ed."""
    from iqaflow.evaluation.roc import best, roc
    from iqaflow.models.gate_binding import directions

    declared = directions()
    rules = []
    for col, x in train.items():
        curves = [(h, roc(x, y, h)) for h in ([declared[col]] if col in declared else [True, False])]
        curves = [(h, c) for h, c in curves if c is not None]
        if curves:
            h, c = max(curves, key=lambda hc: hc[1].auc)
            if c.auc >= min_auc:
                rules.append((col, h, float(c.thresholds[best(c)])))
    return rules


def figures(reject: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from iqaflow.tasks.gates.suggest_rules import Figures

    f = Figures.of(reject, y)
    return {"precision": round(f.precision, 4), "recall": round(f.recall, 4), "false_reject": round(f.false_reject, 4),
            "rejected_share": round(float(reject.mean()), 4)}


def gate_rejects(expression: str, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Reject where the rule is not satisfied, as the gate decides (unknown = not satisfied)."""
    import pyarrow as pa

    from iqaflow.schemas import gate_expr

    node = gate_expr.parse(expression)
    table = pa.table({c: pa.array(v) for c, v in cols.items()})
    gate_expr.check(node, dict.fromkeys(cols, "number"))
    passed = np.array([v is True for v in gate_expr.evaluate(node, table).to_pylist()])
    return ~passed


def one_split(cols: dict[str, np.ndarray], y: np.ndarray, seed: int, target_recall: float):  # type: ignore[no-untyped-def]
    """Suggest from one seeded stratified half, measure on the other: (rows, suggestion, halves)."""
    from sklearn.model_selection import train_test_split

    from iqaflow.tasks.gates.suggest import suggest_from_scores
    from iqaflow.tasks.gates.suggest_rules import Target, fit_single

    a, b = train_test_split(np.arange(len(y)), test_size=0.5, stratify=y, random_state=seed)
    half = {c: v[a] for c, v in cols.items()}
    other = {c: v[b] for c, v in cols.items()}
    target = Target("recall", target_recall)
    result = suggest_from_scores(half, y[a], target, origin=f"BIQ2021 test, seeded half {seed}")
    kept = next(c for c in result.candidates if c.chosen)
    rule = kept.rule.expression()
    rows = {"suggested": {"rule": rule, **figures(gate_rejects(rule, other), y[b]),
                          "cv_on_fitting_half": vars(kept.held_out) if kept.held_out else None,
                          "fitted_half": vars(kept.fitted)}}
    nr = fit_single(half["iqaflow_nr"], y[a], "iqaflow_nr", True, target)
    rows["iqaflow_nr alone"] = {"rule": nr.expression(), **figures(gate_rejects(nr.expression(), other), y[b])}
    old = old_or_of_youden(half, y[a])
    old_rule = " and ".join(f"{c} {'>=' if h else '<='} {t:.6g}" for c, h, t in old)
    rows["old OR-of-Youden"] = {"rule": old_rule, **figures(gate_rejects(old_rule, other), y[b])}
    return rows, result, (a, b)


def precision_at_recall(quality: np.ndarray, y: np.ndarray, recall: float) -> float:
    """Precision of rejecting the lowest-quality images until ``recall`` of the bad ones are caught: the
    best any single threshold on this column can do on these images (a property of the scorer, chosen
    by nothing)."""
    order = np.argsort(quality, kind="stable")
    caught = np.cumsum(y[order])
    need = int(np.ceil(recall * y.sum()))
    return float(need / (np.searchsorted(caught, need) + 1))


def over_splits(cols: dict[str, np.ndarray], y: np.ndarray, splits: int, target_recall: float) -> dict[str, object]:
    """The same procedure on ``splits`` seeded halvings: how much one split's figures move by chance alone."""
    per: dict[str, list[tuple[float, float]]] = {}
    for seed in range(splits):
        rows = one_split(cols, y, seed, target_recall)[0]
        for name in ("suggested", "iqaflow_nr alone"):
            per.setdefault(name, []).append((rows[name]["precision"], rows[name]["recall"]))
    out: dict[str, object] = {"splits": splits}
    for name, pr in per.items():
        p, r = np.array(pr).T
        out[name] = {"precision_mean": round(float(p.mean()), 4), "recall_mean": round(float(r.mean()), 4),
                     "precision_p5_p95": [round(float(v), 4) for v in np.percentile(p, [5, 95])],
                     "recall_p5_p95": [round(float(v), 4) for v in np.percentile(r, [5, 95])],
                     "share_meeting_goal": round(float(np.mean((p >= 0.65) & (r >= 0.8))), 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/biq2021-test"))
    ap.add_argument("--target-recall", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--splits", type=int, default=100, help="seeded halvings for the spread of the figures")
    ap.add_argument("--cache", default="/tmp/iqaflow_suggest_cache/biq2021_test_scores.npz")
    ap.add_argument("--json", default="bench/results/suggest_curation.json")
    args = ap.parse_args()

    folder = Path(args.data)
    with open(folder / "mos.csv") as fh:
        mos = {r["image"]: float(r["mos"]) for r in csv.DictReader(fh)}
    names = sorted(mos)
    cols = score_all(folder, names, Path(args.cache))
    y = np.array([mos[n] < BAD_BELOW for n in names])
    rows, result, (a, b) = one_split(cols, y, args.seed, args.target_recall)

    print(f"BIQ2021 test: {len(names)} images, bad = MOS < {BAD_BELOW} ({int(y.sum())} bad); suggest from "
          f"{len(a)} (seed {args.seed}), measure on the other {len(b)}; target recall {args.target_recall}")
    print("candidates on the fitting half (held-out CV precision / recall):")
    for c in result.candidates:
        h = c.held_out
        print(f"  {c.label:<11} {h.precision:.3f} / {h.recall:.3f}{'  <- kept' if c.chosen else ''}" if h else c.label)
    for note in result.notes:
        print(f"  {note}")
    print(f"{'rule':<18} {'precision':>9} {'recall':>7} {'rejected':>8}   (on the held-out half)")
    for name, r in rows.items():
        print(f"{name:<18} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['rejected_share']:>8.3f}   {r['rule']}")
    goal = rows["suggested"]["precision"] >= 0.65 and rows["suggested"]["recall"] >= 0.8
    print(f"goal precision >= 0.65 at recall >= 0.8: {'met' if goal else 'not met'} on split {args.seed}")
    ceiling = precision_at_recall(cols["iqaflow_nr"], y, args.target_recall)
    print(f"iqaflow_nr's precision at recall {args.target_recall} on all {len(y)} images (best single threshold, "
          f"placed knowing every label): {ceiling:.3f}")
    spread = over_splits(cols, y, args.splits, args.target_recall) if args.splits > 0 else None
    if spread:
        print(f"over {args.splits} seeded halvings (held-out half each time):")
        for name in ("suggested", "iqaflow_nr alone"):
            s = spread[name]
            print(f"  {name:<17} precision {s['precision_mean']:.3f} ({s['precision_p5_p95'][0]:.3f}-"
                  f"{s['precision_p5_p95'][1]:.3f}), recall {s['recall_mean']:.3f} ({s['recall_p5_p95'][0]:.3f}-"
                  f"{s['recall_p5_p95'][1]:.3f}); goal met on {s['share_meeting_goal']:.0%} of splits")
    out = {"data": str(folder.name), "n": len(names), "bad": int(y.sum()), "bad_below": BAD_BELOW,
           "seed": args.seed, "target_recall": args.target_recall, "fit_half": len(a), "held_out_half": len(b),
           "rows": rows, "notes": result.notes, "goal_met": goal,
           "iqaflow_nr_precision_at_target_recall_all_images": round(ceiling, 4), "over_splits": spread,
           "candidates": [{"label": c.label, "columns": c.rule.columns, "held_out": vars(c.held_out) if c.held_out
                           else None, "chosen": c.chosen} for c in result.candidates]}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
