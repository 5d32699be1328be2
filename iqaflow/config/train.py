"""Typed config of ``iqaflow train`` (YAML + flags), validated once at the entry point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iqaflow.config import load as config_io


class TrainConfig(BaseModel):
    """Ranking pre-training on pristine images and/or fine-tuning on human scores; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9._-]{0,99}$", description="registered model name")
    pristine: str | None = Field(None, description="folder of pristine images for ranking pre-training")
    mos: str | None = Field(None, description="CSV of human scores: path (or image), mos [, content]")
    images: str | None = Field(None, description="folder the CSV paths are relative to (default: the CSV's)")
    architecture: Literal["rankiqa_small"] = "rankiqa_small"
    width: int = Field(24, ge=8, le=256, multiple_of=4)
    crop: int = Field(64, ge=32, le=512, description="training crop = inference patch size (pixels)")
    max_patches: int = Field(64, ge=1, le=1024, description="patches per image at inference")
    epochs: int = Field(10, ge=1, le=10_000, description="ranking pre-training epochs")
    groups_per_epoch: int = Field(128, ge=1, le=1_000_000, description="crops per epoch, each at every level")
    groups_per_batch: int = Field(8, ge=1, le=4096)
    lr: float = Field(2e-3, gt=0, le=1)
    margin: float = Field(0.5, gt=0)
    classify: bool = Field(False, description="add the distortion type+level classification head (DBCNN)")
    classify_weight: float = Field(0.5, gt=0)
    distortions: list[str] = Field(default_factory=list, description="catalogue types to use (default: all)")
    finetune_epochs: int = Field(10, ge=1, le=10_000)
    finetune_lr: float = Field(1e-3, gt=0, le=1)
    batch_size: int = Field(16, ge=2, le=4096)
    crops_per_image: int = Field(4, ge=1, le=256)
    rank_weight: float = Field(1.0, ge=0)
    mos_higher_is_better: bool = Field(True, description="false for DMOS-like scores")
    split: Literal["holdout", "kfold"] = "holdout"
    folds: int = Field(5, ge=2, le=100)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads for torch (default: torch's)")
    seed: int = 0
    register_model: bool = Field(True, description="register the model in the MLflow registry")
    mlflow_tracking_uri: str | None = Field(
        None, description="default $MLFLOW_TRACKING_URI, else sqlite:///./mlruns/mlflow.db"
    )
    mlflow_experiment: str = Field("iqaflow-train", min_length=1, max_length=200)

    @field_validator("distortions")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        from iqaflow.evaluation.distortions import validate_names

        return validate_names(value)

    @model_validator(mode="after")
    def _has_data(self) -> TrainConfig:
        if self.pristine is None and self.mos is None:
            raise ValueError(
                "nothing to train on: expected pristine (a folder of pristine images) and/or mos (a CSV of human "
                "scores). Fix: pass --pristine DIR and/or --mos CSV"
            )
        if self.pristine is not None and not Path(self.pristine).is_dir():
            raise ValueError(f"pristine: expected a folder of images, got {self.pristine!r}. Fix: pass an existing "
                             "folder")
        if self.mos is not None and not Path(self.mos).is_file():
            raise ValueError(f"mos: expected a CSV file, got {self.mos!r}. Fix: pass an existing CSV with path,mos")
        return self

    def tracking_uri(self) -> str:
        uri = self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return uri or f"sqlite:///{(Path('mlruns').resolve() / 'mlflow.db').as_posix()}"


def load_train_config(path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """YAML (safe_load) overlaid with the flags given; every problem is one ConfigError naming the field."""
    return config_io.load(TrainConfig, path, overrides, default_fix="see `iqaflow train --help`")
