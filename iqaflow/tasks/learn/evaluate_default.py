"""Units of ``iqaflow evaluate-default`` for ``iqaflow_nr``: agreement on images no model learnt from.

Two held-out views of the same question:

* the recipe's ``evaluation.test`` set (BIQ2021's official test split), never trained, tuned or selected on;
* ``evaluation.cross`` (the CLIVE subset): the recipe re-fitted *without* that source is tested on it,
  a cross-dataset figure (other cameras, other observers, a crowdsourced scale).

Beside them: the shipped ``iqaflow_nr_classic``; ``niqe`` and ``brisque`` with their published models;
NIQE and BRISQUE as ``iqaflow fit`` makes them on Kodak (``baseline_pristine``); and the variance of the
Laplacian. Every score is signed so higher is better.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from iqaflow.config.default_nr import DefaultNrRecipe
from iqaflow.evaluation.crossval import fold_agreement
from iqaflow.tasks.learn import default_nr as t
from iqaflow.tasks.learn.default_nr_train import backbone, source_features

SourceProgress = Callable[[str, int, int], None]
PRISTINE = "../shared/data/kodak"


@dataclass
class Row:
    model: str
    note: str
    values: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Speed:
    images: int
    with_decode_per_s: float
    bf16: bool


@dataclass
class Curation:
    """A reject rule learnt from labels on one half of the test set, checked on the other half."""

    model: str
    threshold: float
    precision: float
    recall: float
    rejected: float  # share of the checked half that the rule rejects


@dataclass
class Report:
    sets: list[str]
    rows: list[Row]
    speed: Speed | None
    curation: list[Curation] = field(default_factory=list)


BAD_BELOW = 0.4  # MOS (0-1) under which an image is "bad" in the curation scenario
TARGET_RECALL = 0.8


def curation(model: str, scores: np.ndarray, mos: np.ndarray, seed: int = 0) -> Curation:
    """Reject ``score <= t``, with t the highest cut that catches ``TARGET_RECALL`` of the bad images of a
    seeded half; precision and recall are measured on the other half (scores signed: higher is better)."""
    order = np.random.default_rng(seed).permutation(len(mos))
    learn, check = order[: len(order) // 2], order[len(order) // 2 :]
    bad_scores = np.sort(scores[learn][mos[learn] < BAD_BELOW])
    if len(bad_scores) == 0:
        return Curation(model, float("nan"), float("nan"), float("nan"), float("nan"))
    t = float(bad_scores[int(np.ceil(TARGET_RECALL * len(bad_scores))) - 1])
    rejected = scores[check] <= t
    bad = mos[check] < BAD_BELOW
    precision = float((rejected & bad).sum() / max(rejected.sum(), 1))
    return Curation(model, t, precision, float((rejected & bad).sum() / max(bad.sum(), 1)), float(rejected.mean()))


# Shipped scorers shown beside the default, with published parameters: name in the table -> scorer.
PUBLISHED_BASELINES = {"iqaflow_nr_classic": "iqaflow_nr_classic", "niqe (published model)": "niqe",
                       "brisque (OpenCV's LIVE model)": "brisque"}


def _baselines(paths: Sequence[str], on_progress: Callable[[int, int], None] | None) -> tuple[dict, dict]:
    """Signed scores of the classic scorer, the published NIQE and BRISQUE, NIQE and BRISQUE fitted on
    Kodak, and the Laplacian."""
    from pathlib import Path

    from iqaflow.models.registry import create_scorer
    from iqaflow.tasks.learn.default_nr_classic import decode_rgb
    from iqaflow.tasks.learn.evaluate_default_classic import baseline_scores

    pristine = PRISTINE if Path(PRISTINE).is_dir() else None
    base = baseline_scores(paths, pristine, on_progress)
    scorers = {row: create_scorer(name) for row, name in PUBLISHED_BASELINES.items()}
    scores = {row: np.empty(len(paths)) for row in scorers}
    for i, path in enumerate(paths):
        rgb = decode_rgb(path)
        for row, scorer in scorers.items():
            sign = 1.0 if scorer.info.higher_is_better else -1.0
            scores[row][i] = sign * float(scorer.score([rgb])[0, 0])
    scores.update({f"{k} (fitted on Kodak)" if k in ("niqe", "brisque") else k: v for k, v in base.scores.items()})
    notes = {f"{k} (fitted on Kodak)" if k in ("niqe", "brisque") else k: v for k, v in base.notes.items()}
    notes["niqe (published model)"] = "the NIQE release's LIVE pristine model, shipped"
    notes["brisque (OpenCV's LIVE model)"] = "the LIVE SVR shipped with OpenCV contrib, shipped"
    return scores, notes


def measure_speed(name: str, paths: Sequence[str], n: int) -> Speed:
    """Images per second of a shipped scorer on one thread: file read, decode, views, network."""
    import torch

    from iqaflow.models.registry import create_scorer
    from iqaflow.tasks.learn.default_nr_classic import decode_rgb

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scorer = create_scorer(name)
        scorer.score([decode_rgb(p) for p in paths[:2]])  # warm-up
        batch = 16
        t0 = time.perf_counter()
        for s in range(0, min(n, len(paths)), batch):
            scorer.score([decode_rgb(p) for p in paths[s : min(s + batch, n)]])
        took = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    done = min(n, len(paths))
    return Speed(done, done / max(took, 1e-9), bool(getattr(scorer, "cpu_bf16", False)))


def evaluate(recipe: DefaultNrRecipe, on_progress: SourceProgress | None = None) -> Report:
    from iqaflow.models.deep.default_nr import HEADS
    from iqaflow.models.weights import get_store

    graph, backbone_sha = backbone()
    crops = recipe.views.crops
    data = {src.name: source_features(recipe, src, graph, backbone_sha, on_progress) for src in recipe.train}
    sets: list[str] = []
    held: dict[str, tuple[list[str], np.ndarray, np.ndarray]] = {}  # name -> paths, mos, pooled features
    test = recipe.evaluation.test
    if test is not None:
        rated, feats = source_features(recipe, test, graph, backbone_sha, on_progress)
        held[test.name] = (rated.paths, rated.mos, t.pooled(feats, crops))
        sets.append(test.name)
    cross = recipe.evaluation.cross
    if cross is not None:
        rated, feats = data[cross]
        held[cross] = (rated.paths, rated.mos, t.pooled(feats, crops))
        sets.append(cross)

    scorer = recipe.scorer
    shipped = get_store().load_state_dict(HEADS[scorer].info.weights[1])
    trained_on = set(shipped.get("sources", [s.name for s in recipe.train]))
    rows = [Row(f"{scorer} (shipped)", f"fitted on {', '.join(sorted(trained_on))}; {shipped['support'].shape[0]} "
                                        f"support vectors")]
    test_scores: dict[str, np.ndarray] = {}
    for name in sets:
        if name not in trained_on:
            pred = t.predict(shipped, held[name][2])
            rows[0].values[name] = fold_agreement(pred, held[name][1])
            if test is not None and name == test.name:
                test_scores[scorer] = pred
    if cross is not None and len(recipe.train) > 1:
        others = [n for n in data if n != cross]
        x = np.concatenate([t.pooled(data[n][1], crops) for n in others])
        y = np.concatenate([data[n][0].mos for n in others])
        fitted = t.fit_head(x, y, recipe.regressor, recipe.seed)
        row = Row(f"{scorer} recipe on {' + '.join(others)}", f"the same recipe without {cross}; "
                  f"C={fitted.c:g}, gamma={fitted.gamma:g}/variance chosen by CV on its training data")
        for name in sets:
            row.values[name] = fold_agreement(t.predict(fitted.state, held[name][2]), held[name][1])
        rows.append(row)

    base_rows: dict[str, Row] = {}
    for name in sets:
        paths, mos, _ = held[name]
        scores, notes = _baselines(paths, None if on_progress is None else
                                   (lambda i, n, s=name: on_progress(f"baselines on {s}", i, n)))
        for model, values in scores.items():
            note = notes.get(model, "shipped weights (fitted on the CLIVE subset)")
            row = base_rows.setdefault(model, Row(model, note))
            if not (model == "iqaflow_nr_classic" and name == cross):
                row.values[name] = fold_agreement(values, mos)
            if test is not None and name == test.name:
                test_scores[model] = values
    rows += list(base_rows.values())
    speed = None
    if recipe.evaluation.speed_images > 0 and sets:
        speed = measure_speed(scorer, held[sets[0]][0], recipe.evaluation.speed_images)
    cur = [] if test is None else [curation(m, s, held[test.name][1], recipe.seed) for m, s in test_scores.items()]
    return Report(sets, rows, speed, cur)
