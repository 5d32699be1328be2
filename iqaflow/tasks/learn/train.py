"""Units of ``iqaflow train``: read the data, run a training stage with curves to MLflow, register the model.

The training maths is ``iqaflow.models.deep.training``; this module feeds it images, points its
``on_epoch`` callback at the MLflow run, and logs the result as a model the registry can serve
to ``iqaflow score --models mlflow:models:/NAME/VERSION``: a state dict + ``iqaflow_model.json``,
never a pickled module.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iqaflow.config.train import TrainConfig
from iqaflow.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from iqaflow.models.deep.training import Trained

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


@dataclass
class MosItem:
    path: str
    mos: float
    content: str


@dataclass
class TrainResult:
    run_id: str
    tracking_uri: str
    model_uri: str | None  # models:/NAME/VERSION once registered
    scorer: str | None  # the --models value that scores with it
    metrics: dict[str, float]


def read_rgb(path: str | Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def load_pristine(folder: str) -> list[tuple[str, np.ndarray]]:
    """Every image directly under or below ``folder``, sorted by path (a stable order for seeded splits)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ConfigError(f"pristine: no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder!r}. Fix: point "
                          "--pristine at a folder of undistorted images")
    return [(str(p.relative_to(folder)), read_rgb(p)) for p in files]


def read_mos_csv(path: str, images: str | None = None) -> list[MosItem]:
    """Rows of ``path,mos`` (``image`` accepted for ``path``; optional ``content`` groups one scene's images)."""
    root = Path(images) if images else Path(path).parent
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in reader.fieldnames or []}
        key = cols.get("path") or cols.get("image")
        if key is None or "mos" not in cols:
            raise ConfigError(f"mos CSV {path!r}: expected columns path (or image) and mos, got "
                              f"{reader.fieldnames}. Fix: rename the columns")
        content = cols.get("content") or cols.get("reference")
        out = []
        for i, row in enumerate(reader, start=2):
            try:
                value = float(row[cols["mos"]])
            except ValueError:
                raise ConfigError(f"mos CSV {path!r} line {i}: mos {row[cols['mos']]!r} is not a number") from None
            rel = row[key].strip()
            out.append(MosItem(str(root / rel), value, row[content].strip() if content else rel))
    if len(out) < 3:
        raise ConfigError(f"mos CSV {path!r}: expected at least 3 rated images, got {len(out)}")
    missing = [m.path for m in out if not Path(m.path).is_file()]
    if missing:
        raise ConfigError(f"mos CSV {path!r}: {len(missing)} images not found, first {missing[0]!r}. Fix: pass "
                          "--images with the folder the paths are relative to")
    return out


class Curves:
    """``on_epoch`` callback: every epoch's numbers become MLflow metrics ``<stage>.<name>`` at step = epoch."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def __call__(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        from iqaflow.tasks.report.track import log_values

        log_values(self.client, self.run_id, metrics={f"{stage}.{k}": v for k, v in metrics.items()}, step=epoch)
        log.info("%s epoch %d: %s", stage, epoch, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


def build_net(config: TrainConfig, n_classes: int) -> torch.nn.Module:
    from iqaflow.models.deep.nets.compact import build_architecture

    return build_architecture(config.architecture, arch_config(config, n_classes))


def arch_config(config: TrainConfig, n_classes: int) -> dict[str, int]:
    return {"width": config.width, "n_classes": n_classes}


def n_classes(config: TrainConfig) -> int:
    from iqaflow.evaluation.distortions import N_LEVELS, select

    return 1 + len(select(config.distortions)) * N_LEVELS if config.classify and config.pristine else 0


def pretrain_stage(config: TrainConfig, images: list[tuple[str, np.ndarray]], device: str, curves: Curves) -> Trained:
    """Ranking pre-training with pristine images split by image into train and validation."""
    import torch

    from iqaflow.evaluation.distortions import select
    from iqaflow.models.deep import training

    torch.manual_seed(config.seed)
    split = training.content_splits([n for n, _ in images], "holdout", 0, config.val_fraction, config.seed)[0]
    train = [images[i][1] for i in split[0]]
    val = [images[i][1] for i in split[1]]
    settings = training.RankSettings(
        crop=config.crop, epochs=config.epochs, groups_per_epoch=config.groups_per_epoch,
        groups_per_batch=config.groups_per_batch, lr=config.lr, margin=config.margin,
        classify_weight=config.classify_weight if config.classify else 0.0, seed=config.seed,
    )
    net = build_net(config, n_classes(config))
    return training.pretrain(net, train, val, select(config.distortions), settings, device, curves)


def finetune_stage(
    config: TrainConfig, items: list[MosItem], init: dict[str, torch.Tensor] | None, device: str, curves: Curves
) -> tuple[Trained, float, float, dict[str, float]]:
    """Fine-tune on human scores; returns the model, (scale, shift) to MOS units and summary metrics.

    Held-out: the best validation epoch is kept. k-fold: each fold is trained and validated (curves
    ``fold<k>.*``) to estimate performance, then the registered model is trained on all contents.
    """
    from iqaflow.models.deep import training

    pixels = [read_rgb(m.path) for m in items]
    mos = np.array([m.mos for m in items], dtype=np.float64)
    sign = 1.0 if config.mos_higher_is_better else -1.0
    settings = training.FinetuneSettings(
        epochs=config.finetune_epochs, batch_size=config.batch_size, crops_per_image=config.crops_per_image,
        lr=config.finetune_lr, rank_weight=config.rank_weight, max_patches=config.max_patches, seed=config.seed,
    )
    splits = training.content_splits([m.content for m in items], config.split, config.folds, config.val_fraction,
                                     config.seed)

    def run(train_idx: np.ndarray, val_idx: np.ndarray, stage: str) -> tuple[Trained, float, float]:
        mean, std = float(mos[train_idx].mean()), float(mos[train_idx].std()) or 1.0
        z = sign * (mos - mean) / std
        net = build_net(config, n_classes(config))
        if init is not None:
            net.load_state_dict(init)
        trained = training.finetune(
            net, [(pixels[i], float(z[i])) for i in train_idx], [(pixels[i], float(z[i])) for i in val_idx],
            config.crop, settings, device, curves, stage,
        )
        return trained, sign * std, mean

    summary: dict[str, float] = {}
    if config.split == "kfold":
        srcc = []
        for k, (tr, va) in enumerate(splits):
            fold, _, _ = run(tr, va, f"fold{k}")
            srcc.append(fold.best.get("val_srcc", float("nan")))
        summary = {"cv.val_srcc_mean": float(np.mean(srcc)), "cv.val_srcc_std": float(np.std(srcc))}
        final, scale, shift = run(np.arange(len(items)), np.array([], dtype=int), "finetune")
    else:
        final, scale, shift = run(*splits[0], "finetune")
        summary = {f"finetune.best_{k}": v for k, v in final.best.items() if k.startswith("val_")}
    return final, scale, shift, summary


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, buf)
    return buf.getvalue()


def register_model(
    config: TrainConfig, client: Any, run_id: str, state: dict[str, torch.Tensor], scale: float, shift: float,
    training_info: dict[str, Any],
) -> str | None:
    """Log ``model/`` (state dict + metadata) to the run and, if asked, register it; returns models:/NAME/VERSION."""
    from mlflow.exceptions import MlflowException

    from iqaflow.models.deep.trained import META_FILE, WEIGHTS_FILE, TrainedModelMeta

    data = state_bytes(state)
    meta = TrainedModelMeta(
        architecture=config.architecture, arch_config=arch_config(config, n_classes(config)),
        sha256=hashlib.sha256(data).hexdigest(), patch_size=config.crop, max_patches=config.max_patches,
        higher_is_better=config.mos_higher_is_better if config.mos else True,
        score_scale=scale, score_shift=shift,
        description=f"iqaflow train model {config.name!r} ({config.architecture}, width {config.width}).",
        training=training_info,
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / WEIGHTS_FILE).write_bytes(data)
        (Path(tmp) / META_FILE).write_text(meta.to_json())
        client.log_artifacts(run_id, tmp, "model")
    if not config.register_model:
        return None
    try:
        client.create_registered_model(config.name, description="Trained by iqaflow train.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        config.name, source=f"runs:/{run_id}/model", run_id=run_id, await_creation_for=0,
        tags={"iqaflow.sha256": meta.sha256, "iqaflow.architecture": config.architecture},
    )
    return f"models:/{config.name}/{version.version}"
