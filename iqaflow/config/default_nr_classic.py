"""Typed recipe of the default NR scorer (``configs/default_nr_classic.yaml``), validated once at the entry point.

Relative paths are taken from the directory the command runs in (the repository root in the docs and
in CI, where the shared data sits at ``../shared/data``).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iqaflow.config import load as config_io
from iqaflow.models.deep.default_nr_model import FitSettings

# Pristine photographs inside scikit-image's wheel (nothing is downloaded); gray ones are used as RGB.
SKIMAGE_PRISTINE = ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick", "grass", "gravel",
                    "motorcycle_left", "motorcycle_right")


class ModelSettings(BaseModel):
    """``default_nr_model.FitSettings``, field for field."""

    model_config = ConfigDict(extra="forbid")

    quantiles: int = Field(100, ge=2, le=10_000)
    krr_alpha: float = Field(0.1, gt=0)
    krr_gamma: float = Field(0.3, gt=0)
    krr_weight: float = Field(0.5, ge=0, le=1)
    mlp_members: int = Field(5, ge=1, le=100)
    mlp_hidden: int = Field(64, ge=1, le=4096)
    mlp_epochs: int = Field(400, ge=1, le=100_000)
    mlp_lr: float = Field(1e-3, gt=0, le=1)
    mlp_weight_decay: float = Field(1e-2, ge=0)
    input_dropout: float = Field(0.1, ge=0, lt=1)
    hidden_dropout: float = Field(0.2, ge=0, lt=1)
    rank_weight: float = Field(1.0, ge=0)
    pretrain_steps: int = Field(200, ge=0, le=100_000)
    pretrain_pairs: int = Field(2048, ge=1, le=1_000_000)
    pretrain_margin: float = Field(0.5, gt=0)

    def fit_settings(self, seed: int) -> FitSettings:
        return FitSettings(**self.model_dump(), seed=seed)


class PristineSource(BaseModel):
    """Pristine images for ranking pre-training: scikit-image's shipped photos and/or folders."""

    model_config = ConfigDict(extra="forbid")

    skimage: list[str] = Field(default_factory=lambda: list(SKIMAGE_PRISTINE))
    folders: list[str] = Field(default_factory=list)
    crops_per_image: int = Field(3, ge=1, le=1000)
    crop_size: int = Field(500, ge=64, le=4096, description="crop side; smaller images give one crop of their size")
    distortions: list[str] = Field(default_factory=list, description="catalogue types (default: all)")

    @field_validator("skimage")
    @classmethod
    def _known_skimage(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in SKIMAGE_PRISTINE]
        if unknown:
            raise ValueError(f"unknown scikit-image pristine image(s) {unknown}; expected names from "
                             f"{list(SKIMAGE_PRISTINE)}")
        return value

    @field_validator("distortions")
    @classmethod
    def _known_distortions(cls, value: list[str]) -> list[str]:
        from iqaflow.evaluation.distortions import validate_names

        return validate_names(value)


class EvaluationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folds: int = Field(5, ge=2, le=100)
    repeats: int = Field(1, ge=1, le=100, description="k-fold splits drawn (seeds seed, seed+1, ...)")
    baseline_pristine: str | None = Field(None, description="pristine folder NIQE and BRISQUE are fitted on")
    speed_images: int = Field(100, ge=0, le=100_000, description="images timed for the speed figure (0: skip)")


class DefaultNrRecipe(BaseModel):
    """Everything ``iqaflow train-default`` and ``iqaflow evaluate-default`` need; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    mos: str = Field(description="CSV of human scores: image (or path), mos")
    images: str | None = Field(None, description="folder the CSV's paths are relative to (default: the CSV's)")
    notice: str | None = Field(None, description="the dataset's licence notice, shipped with the weights")
    out: str = Field("iqaflow/weights", description="folder for iqaflow_nr_classic.pt, manifest.json and NOTICE")
    seed: int = 0
    pretrain: PristineSource = Field(default_factory=PristineSource)
    model: ModelSettings = Field(default_factory=ModelSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)

    @model_validator(mode="after")
    def _paths_exist(self) -> DefaultNrRecipe:
        if not Path(self.mos).is_file():
            raise ValueError(f"mos: expected a CSV file, got {self.mos!r}. Fix: pass an existing CSV with image,mos "
                             "(run from the repository root, where ../shared/data is the shared data)")
        for name, value in (("images", self.images), *(("pretrain.folders", f) for f in self.pretrain.folders)):
            if value is not None and not Path(value).is_dir():
                raise ValueError(f"{name}: expected a folder, got {value!r}. Fix: pass an existing folder")
        if self.notice is not None and not Path(self.notice).is_file():
            raise ValueError(f"notice: expected the dataset's licence file, got {self.notice!r}")
        return self

    def fit_settings(self) -> FitSettings:
        return self.model.fit_settings(self.seed)


if {f.name for f in fields(FitSettings)} != set(ModelSettings.model_fields) | {"seed"}:  # pragma: no cover
    raise RuntimeError("ModelSettings and default_nr_model.FitSettings must list the same fields")


def load_recipe(path: str | Path | None, overrides: dict[str, Any] | None = None) -> DefaultNrRecipe:
    """YAML (safe_load) overlaid with the flags given; every problem is one ConfigError naming the field."""
    return config_io.load(DefaultNrRecipe, path, overrides, example="configs/default_nr_classic.yaml",
                          default_fix="see configs/default_nr_classic.yaml for every key and its default")
