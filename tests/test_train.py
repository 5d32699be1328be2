"""Train a small model on generated data, register it in MLflow, score with it through the real flow.

The claim under test: after a short CPU pre-training on synthetic distortions of Kodak images, the
registered model, used as ``mlflow:models:/tiny-rank/1`` by the score flow, orders the distortion
levels of *held-out* content (scikit-image crops the model never saw, at levels it was not trained
on) correctly for at least 75% of same-image pairs, where chance is 50%.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from iqaflow.evaluation.metrics import ranking_accuracy
from iqaflow.schemas.results import Col

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
pytestmark = pytest.mark.slow

# Pairwise ranking accuracy the trained model must reach on held-out content; chance is 0.5.
MIN_PAIR_ACCURACY = 0.75
# The types trained and checked. JPEG is left out on purpose: with this CPU budget (~14 short epochs)
# the small net learns blockiness last; longer runs learn it (see the synthetic benchmark).
TYPES = ["blur", "noise", "darken", "brighten"]
HELD_OUT = {"blur", "noise", "under", "over"}  # the demo collection's names for the same distortions


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained(prefect_api: None, registry: str, tmp_path_factory: pytest.TempPathFactory):
    from conftest import SHARED_DATA

    from iqaflow.config.train import TrainConfig
    from iqaflow.flows.train import run_train

    cfg = TrainConfig(
        name="tiny-rank", pristine=str(SHARED_DATA / "kodak"), width=16, crop=64, epochs=14, groups_per_epoch=96,
        distortions=TYPES, device="cpu", threads=1, seed=0, mlflow_tracking_uri=registry,
    )
    return cfg, run_train(cfg)


def test_training_logs_curves_and_registers_the_model(trained, registry: str) -> None:
    from mlflow import MlflowClient

    cfg, result = trained
    assert result.model_uri == "models:/tiny-rank/1" and result.scorer == "mlflow:models:/tiny-rank/1"
    client = MlflowClient(tracking_uri=registry, registry_uri=registry)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["width"] == "16"
    for key in ("pretrain.loss", "pretrain.val_srcc", "pretrain.val_pair_acc"):
        steps = [m.step for m in client.get_metric_history(result.run_id, key)]
        assert steps == list(range(1, cfg.epochs + 1)), key
    assert result.metrics["pretrain.best_val_pair_acc"] > 0.7  # held-out Kodak images, training types
    version = client.get_model_version("tiny-rank", "1")
    assert version.run_id == result.run_id and len(version.tags["iqaflow.sha256"]) == 64
    files = {a.path for a in client.list_artifacts(result.run_id, "model")}
    assert files == {"model/iqaflow_model.json", "model/state_dict.pt"}


def _labels(collection: Path) -> dict[str, dict[str, str]]:
    with open(collection / "labels.csv") as fh:
        return {str(collection / r["path"]): r for r in csv.DictReader(fh)}


def test_registered_model_scores_through_the_flow_and_ranks_held_out_levels(
    trained, registry: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from iqaflow.config.run import build_config
    from iqaflow.evaluation.synth import make_collection
    from iqaflow.flows.score import run_score

    _, result = trained
    collection = make_collection(tmp_path / "held-out", n_bases=4, size=128, seed=3)
    cfg = build_config({"source": str(collection), "out": str(tmp_path / "out"), "workers": 1, "shard_size": 32,
                        "models": [result.scorer, "sharpness"], "mlflow_tracking_uri": registry})
    summary = run_score(cfg)
    assert summary.errors == 3  # the three broken files only
    column = "tiny_rank_v1"
    assert summary.scores[column].count == summary.ok

    labels = _labels(collection)
    scores, levels, groups = [], [], []
    by_base: dict[str, list[dict]] = defaultdict(list)
    for row in pq.read_table(summary.results_dir).to_pylist():
        lab = labels[row[Col.URI]]
        if lab["base"]:
            by_base[lab["base"]].append({**row, **lab})
    for base, rows in by_base.items():
        clean = next(r for r in rows if r["distortion"] == "clean")
        for kind in HELD_OUT:
            for r in [clean, *(r for r in rows if r["distortion"] == kind)]:
                scores.append(r[column])
                levels.append(int(r["level"]))
                groups.append(f"{base}/{kind}")
    acc = ranking_accuracy(np.array(scores), np.array(levels), np.array(groups))
    print(f"held-out pairwise ranking accuracy of {column}: {acc:.3f} (chance 0.5, required {MIN_PAIR_ACCURACY})")
    assert len(scores) == 4 * len(HELD_OUT) + 4 * 10  # 4 bases x (clean per type + 3+3+2+2 levels)
    assert acc >= MIN_PAIR_ACCURACY, f"pairwise accuracy {acc:.3f} on held-out content (chance 0.5)"

    # the scoring run names the model and its weights' hash in MLflow
    client = MlflowClient(tracking_uri=registry)
    exp = client.get_experiment_by_name("iqaflow")
    run = client.search_runs([exp.experiment_id], f"tags.`iqaflow.run_id` = '{summary.run_id}'")[0]
    sha = client.get_model_version("tiny-rank", "1").tags["iqaflow.sha256"]
    assert sha[:16] in run.data.params[f"scorer.{column}"]
    assert "source=mlflow:models:/tiny-rank/1" in run.data.params[f"scorer.{column}"]


def test_unknown_registered_model_is_a_config_error(trained, registry: str, tmp_path: Path) -> None:
    from iqaflow.config.run import build_config
    from iqaflow.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        build_config({"source": str(tmp_path), "models": ["mlflow:models:/nope/1"], "mlflow_tracking_uri": registry})
    assert "not found in the MLflow registry" in str(err.value) and "tiny-rank" in str(err.value)
    assert "Fix:" in str(err.value)
    with pytest.raises(ConfigError, match="expected mlflow:models:/NAME/VERSION"):
        build_config({"source": str(tmp_path), "models": ["mlflow:nope"], "mlflow_tracking_uri": registry})


def _rated(root: Path) -> Path:
    """Blur and noise levels of six Kodak crops, MOS = 80 - 10 * level, one content per crop."""
    from conftest import SHARED_DATA
    from PIL import Image

    from iqaflow.evaluation import synth

    root.mkdir()
    rows = []
    for p in sorted((SHARED_DATA / "kodak").glob("*.png"))[:6]:
        img = np.asarray(Image.open(p).convert("RGB"))[100:196, 100:196]
        for level, (sigma, noise) in enumerate(((0, 0), (1.0, 4), (2.0, 10), (3.5, 20))):
            out = synth.noise(synth.blur(img, sigma), noise, seed=level) if level else img
            Image.fromarray(out).save(root / f"{p.stem}_{level}.png")
            rows.append({"path": f"{p.stem}_{level}.png", "mos": 80 - 10 * level, "content": p.stem})
    with open(root / "mos.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "mos", "content"])
        w.writeheader()
        w.writerows(rows)
    return root / "mos.csv"


def test_finetune_on_mos_with_kfold_registers_a_mos_scale_model(
    prefect_api: None, registry: str, tmp_path: Path
) -> None:
    from iqaflow.config.train import TrainConfig
    from iqaflow.flows.train import run_train
    from iqaflow.models.registry import create_scorer, set_model_registry_uri

    cfg = TrainConfig(name="tiny-mos", mos=str(_rated(tmp_path / "rated")), width=8, crop=32, finetune_epochs=3,
                      split="kfold", folds=2, batch_size=8, device="cpu", threads=1,
                      mlflow_tracking_uri=registry)
    result = run_train(cfg)
    assert result.model_uri == "models:/tiny-mos/1"
    assert {"cv.val_srcc_mean", "cv.val_srcc_std"} <= set(result.metrics)
    set_model_registry_uri(registry)
    scorer = create_scorer(result.scorer, "cpu")
    meta = type(scorer).model_meta
    assert meta.score_shift == pytest.approx(65.0) and meta.score_scale == pytest.approx(np.std([80, 70, 60, 50]))
    values = scorer.score([np.full((64, 64, 3), 0.5, np.float32), np.random.default_rng(0).random((64, 64, 3))])
    assert values.shape == (2, 1) and np.all(np.abs(values - 65.0) < 100)  # on the MOS scale, not raw logits
