"""Units of ``iqaflow evaluate``: score rated images or the synthetic benchmark, compare, log to MLflow.

Scores are signed so that higher means better before any metric is computed (see
``iqaflow.evaluation.metrics``). Scoring reuses the pipeline's own read/decode/score path
(``score_members``), so an evaluated number is what ``iqaflow score`` writes.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iqaflow.errors import ConfigError, IqaflowError
from iqaflow.evaluation import metrics as M
from iqaflow.evaluation.synthetic import content_sets, fit_size, per_type_srcc
from iqaflow.models.base import Scorer
from iqaflow.models.colour import convert

log = logging.getLogger(__name__)


@dataclass
class ModelAgreement:
    model: str
    column: str
    n: int = 0
    values: dict[str, float] = field(default_factory=dict)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    skipped: str | None = None  # why the scorer could not be evaluated


@dataclass
class RatedImages:
    paths: list[str]
    mos: np.ndarray
    references: list[str | None]


def read_rated(path: str, images: str | None = None) -> RatedImages:
    """A CSV of ``path`` (or ``image``) and ``mos``; an optional ``reference`` column lets FR scorers take part."""
    root = Path(images) if images else Path(path).parent
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        key, ref = cols.get("path") or cols.get("image"), cols.get("reference")
        if key is None or "mos" not in cols:
            raise ConfigError(f"{path!r}: expected columns path (or image) and mos, got {reader.fieldnames}. "
                              "Fix: rename the columns")
        rows = list(reader)
    try:
        mos = np.array([float(r[cols["mos"]]) for r in rows])
    except ValueError as exc:
        raise ConfigError(f"{path!r}: a mos value is not a number ({exc})") from None
    return RatedImages([str(root / r[key].strip()) for r in rows], mos,
                       [str(root / r[ref].strip()) if ref and r[ref].strip() else None for r in rows])


def load(models: Sequence[str], device: str) -> tuple[list[Scorer], dict[str, str]]:
    """Ready scorers, and for the others the reason (missing weights, unknown name) as one line."""
    from iqaflow.models.registry import create_scorer

    ready, skipped = [], {}
    for name in models:
        try:
            ready.append(create_scorer(name, device))
        except IqaflowError as exc:
            skipped[name] = str(exc)
    return ready, skipped


def signed(scorer: Scorer, values: np.ndarray) -> np.ndarray:
    return values if scorer.info.higher_is_better else -values


def score_paths(
    scorers: Sequence[Scorer], paths: Sequence[str], references: Sequence[str | None], batch_size: int = 16
) -> dict[str, np.ndarray]:
    """Each scorer's main score per image (NaN where the image or its reference could not be scored)."""
    from iqaflow.tasks.score.shard import score_members

    table = score_members(paths, references, scorers, "evaluate", batch_size)
    out = {}
    for s in scorers:
        values = np.array([np.nan if v is None else v for v in table[s.info.name].to_pylist()], dtype=np.float64)
        out[s.info.name] = signed(s, values)
    return out


def evaluate_rated(
    models: Sequence[str], rated: RatedImages, device: str = "cpu", n_boot: int = 1000, seed: int = 0
) -> list[ModelAgreement]:
    """SRCC / PLCC (logistic) / KRCC / RMSE with bootstrap CIs for every model against the MOS."""
    scorers, skipped = load(models, device)
    has_refs = any(r is not None for r in rated.references)
    usable = [s for s in scorers if s.info.kind == "nr" or has_refs]
    for s in scorers:
        if s not in usable:
            skipped[s.info.name] = "full-reference scorer, but the CSV has no reference column"
    scores = score_paths(usable, rated.paths, rated.references) if usable else {}
    out = [ModelAgreement(n, n, skipped=why) for n, why in skipped.items()]
    for s in usable:
        v = scores[s.info.name]
        try:
            a = M.bootstrap(v, rated.mos, n_boot=n_boot, seed=seed)
        except ValueError as exc:
            out.append(ModelAgreement(s.info.name, s.info.name, skipped=str(exc)))
            continue
        out.append(ModelAgreement(s.info.name, s.info.name, a.n, a.values, a.ci))
    order = {m: i for i, m in enumerate(models)}
    return sorted(out, key=lambda r: order.get(r.model, len(order)))


def read_2afc(path: str, images: str | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """A CSV of ``image_a,image_b,prefer_a`` (share of people preferring A, or 0/1)."""
    root = Path(images) if images else Path(path).parent
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    need = {"image_a", "image_b", "prefer_a"}
    if not rows or not need <= set(rows[0]):
        raise ConfigError(f"{path!r}: expected columns image_a, image_b, prefer_a. Fix: rename the columns")
    return ([str(root / r["image_a"]) for r in rows], [str(root / r["image_b"]) for r in rows],
            np.array([float(r["prefer_a"]) for r in rows]))


def evaluate_2afc(models: Sequence[str], path: str, images: str | None = None, device: str = "cpu") -> dict[str, float]:
    """Pairwise (2AFC) accuracy per NR model; chance is 0.5."""
    a, b, prefer = read_2afc(path, images)
    scorers, _ = load(models, device)
    scorers = [s for s in scorers if s.info.kind == "nr"]
    unique = list(dict.fromkeys(a + b))
    scores = score_paths(scorers, unique, [None] * len(unique))
    pos = {p: i for i, p in enumerate(unique)}
    ia, ib = np.array([pos[p] for p in a]), np.array([pos[p] for p in b])
    return {name: M.pairwise_accuracy(v[ia], v[ib], prefer) for name, v in scores.items()}


def synthetic_benchmark(
    models: Sequence[str], folder: str, device: str = "cpu", max_side: int | None = 512,
    distortions: Sequence[str] = (), seed: int = 0, max_images: int | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """Per model and distortion type, the mean SRCC between signed score and minus the level."""
    from iqaflow.evaluation.distortions import select
    from iqaflow.tasks.learn.train import load_pristine

    pristine = [(n, fit_size(img, max_side)) for n, img in load_pristine(folder)][:max_images]
    scorers, skipped = load(models, device)
    kinds = select(distortions)
    cols: dict[str, list[float]] = {s.info.name: [] for s in scorers}
    names: list[str] = []
    levels: list[int] = []
    contents: list[str] = []
    for cs in content_sets(pristine, kinds, seed):
        names += cs.distortions
        levels += cs.levels
        contents += [cs.content] * len(cs.levels)
        for s in scorers:
            cols[s.info.name] += list(_score_arrays(s, cs.images, cs.reference))
    table = {}
    for s in scorers:
        v = np.nan_to_num(np.asarray(cols[s.info.name]), nan=np.nan, posinf=1e300, neginf=-1e300)
        table[s.info.name] = per_type_srcc(v, names, levels, contents)
    return table, skipped


def _score_arrays(scorer: Scorer, images: list[np.ndarray], reference: np.ndarray, chunk: int = 16) -> np.ndarray:
    colour = scorer.info.colour
    out = []
    ref = convert(reference, colour) if scorer.info.kind == "fr" else None
    for i in range(0, len(images), chunk):
        batch = [convert(img, colour) for img in images[i : i + chunk]]
        try:
            v = scorer.score(batch) if ref is None else scorer.score_pairs(batch, [ref] * len(batch))
            out.append(v[:, 0])
        except Exception as exc:  # one failing scorer must not end the benchmark for the others
            log.warning("%s failed on a synthetic batch: %s", scorer.info.name, exc)
            out.append(np.full(len(batch), np.nan))
    return signed(scorer, np.concatenate(out))


def log_evaluation(
    tracking_uri: str, experiment: str, kind: str, params: dict[str, str], metrics: dict[str, float],
    record: object,
) -> str:
    """One MLflow run per evaluation: params, flat metrics and the full table as ``evaluation.json``."""
    from iqaflow.tasks.report import track

    client, run_id = track.start_run(tracking_uri, experiment, f"evaluate-{kind}", {"iqaflow.kind": f"evaluate-{kind}"})
    track.log_values(client, run_id, track.safe_params(params), metrics)
    payload = [asdict(r) for r in record] if isinstance(record, list) else record
    client.log_dict(run_id, json.loads(json.dumps(payload, default=str)), "evaluation.json")
    client.set_terminated(run_id, "FINISHED")
    return run_id


def agreement_metrics(results: Sequence[ModelAgreement]) -> dict[str, float]:
    out: dict[str, float] = {}
    for r in results:
        for k, v in r.values.items():
            out[f"{r.column}.{k}"] = v
        for k, (lo, hi) in r.ci.items():
            out[f"{r.column}.{k}_lo"], out[f"{r.column}.{k}_hi"] = lo, hi
    return out
