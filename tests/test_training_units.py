"""Pure pieces of training and trained-model loading, without MLflow or Prefect."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from iqaflow.errors import UnknownScorerError, WeightsError
from iqaflow.models.deep import training as T
from iqaflow.models.deep.nets.compact import CompactIQA, build_architecture
from iqaflow.models.deep.trained import TrainedModelMeta, load_trained_class, trained_scorer_class
from iqaflow.tasks.learn.mlflow_models import parse


def test_ranking_loss_hand_computed() -> None:
    # one group, levels 0 < 1 < 2, scores 2, 1.8, 0: pairs (0,1): 0.5 - 0.2 = 0.3; (0,2): 0; (1,2): 0 -> mean 0.1
    scores = torch.tensor([2.0, 1.8, 0.0, 5.0])
    group = torch.tensor([0, 0, 0, 1])  # the lone member of group 1 forms no pair
    level = torch.tensor([0, 1, 2, 0])
    assert float(T.ranking_loss(scores, group, level, 0.5)) == pytest.approx(0.1)


def test_content_splits_keep_contents_apart() -> None:
    contents = [f"scene{i // 3}" for i in range(30)]  # 10 contents, 3 images each
    (train, val), = T.content_splits(contents, "holdout", 0, 0.2, seed=0)
    assert len(val) == 6 and not {contents[i] for i in train} & {contents[i] for i in val}
    folds = T.content_splits(contents, "kfold", 5, 0.0, seed=0)
    assert len(folds) == 5
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(30))
    for tr, va in folds:
        assert not {contents[i] for i in tr} & {contents[i] for i in va}


def test_pretrain_improves_ranking_of_blur_quickly() -> None:
    """A few epochs on one distortion type already beat chance on unseen crops (a smoke check of the loop)."""
    from iqaflow.evaluation.distortions import select
    from iqaflow.evaluation.synth import skimage_images

    images = list(skimage_images().values())
    torch.manual_seed(0)
    settings = T.RankSettings(crop=32, epochs=4, groups_per_epoch=32, val_groups=16, seed=0)
    seen: list[tuple[str, int]] = []
    out = T.pretrain(CompactIQA(8), images[:4], images[4:], select(["blur"]), settings,
                     on_epoch=lambda stage, epoch, m: seen.append((stage, epoch)))
    assert seen == [("pretrain", e) for e in range(1, 5)]
    assert out.best["val_pair_acc"] > 0.7 and 1 <= out.best_epoch <= 4


def _saved(tmp_path: Path, net: torch.nn.Module) -> tuple[Path, str]:
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    (tmp_path / "state_dict.pt").write_bytes(buf.getvalue())
    return tmp_path, hashlib.sha256(buf.getvalue()).hexdigest()


def test_trained_scorer_checks_hash_and_applies_scale(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = CompactIQA(8)
    folder, sha = _saved(tmp_path, net)
    meta = TrainedModelMeta("rankiqa_small", {"width": 8, "n_classes": 0}, sha, patch_size=32, max_patches=1,
                            score_scale=10.0, score_shift=50.0)
    (folder / "iqaflow_model.json").write_text(meta.to_json())
    cls = load_trained_class(folder, "toy_v1", "models:/toy/1")
    assert cls.info.name == "toy_v1" and cls.info.kind == "nr" and cls.info.weights[0].sha256 == sha
    scorer = cls()
    scorer.setup("cpu")
    img = np.random.default_rng(0).random((70, 90, 3)).astype(np.float32)
    with torch.no_grad():
        raw = net(torch.from_numpy(img).permute(2, 0, 1)[None, :, 19:51, 29:61]).item()  # the one centred patch
    assert scorer.score([img])[0, 0] == pytest.approx(raw * 10.0 + 50.0, rel=1e-5)

    bad = trained_scorer_class("toy_v1", TrainedModelMeta("rankiqa_small", {"width": 8, "n_classes": 0}, "0" * 64, 32),
                               folder, "models:/toy/1")
    with pytest.raises(WeightsError, match="sha256"):
        bad().setup("cpu")


def test_metadata_is_validated(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="format_version"):
        TrainedModelMeta.from_json('{"format_version": 9}', "models:/x/1")
    with pytest.raises(WeightsError, match="unknown fields"):
        TrainedModelMeta.from_json('{"format_version": 1, "architecture": "rankiqa_small", "arch_config": {}, '
                                   f'"sha256": "{"a" * 64}", "patch_size": 32, "module": "os.system"}}', "models:/x/1")
    with pytest.raises(ValueError, match="not known"):
        build_architecture("torchvision.models.resnet50", {})


def test_model_reference_forms() -> None:
    assert parse("mlflow:models:/tiny-rank/1").column == "tiny_rank_v1"
    assert parse("mlflow:models:/iqa@champion").column == "iqa_champion"
    assert parse("mlflow:models:/iqa/latest").column == "iqa_latest"
    assert parse("mlflow:runs:/0123456789abcdef/model").column == "run_01234567"
    with pytest.raises(UnknownScorerError, match="expected mlflow:models:/NAME/VERSION"):
        parse("mlflow:s3://bucket/model.pt")


def test_train_cli_rejects_a_config_without_data(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "iqaflow", "train", "--name", "x", "--tracking-uri",
                          f"sqlite:///{tmp_path / 'm.db'}"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "nothing to train on" in lines[0] and "Fix:" in lines[0]
