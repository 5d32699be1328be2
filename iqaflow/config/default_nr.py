"""Typed recipe of the default NR scorer ``iqaflow_nr`` (``configs/default_nr.yaml``), validated once.

Relative paths are taken from the directory the command runs in (the repository root in the docs, where
the shared data sits at ``../shared/data`` and BIQ2021's train split is fetched to ``data/biq2021``).
The classic scorer's recipe (``configs/default_nr_classic.yaml``) is ``default_nr_classic_config``;
the commands tell them apart by the ``scorer`` key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from iqaflow.config import load as config_io


class RatedSource(BaseModel):
    """A CSV of human scores (image, mos) and the folder its image names are relative to."""

    model_config = ConfigDict(extra="forbid")

    name: str
    mos: str = Field(description="CSV with an image (or 'Image Name' or path) column and a mos column")
    images: str | None = Field(None, description="folder of the images (default: the CSV's folder)")
    scale: float = Field(1.0, gt=0, description="multiplier that brings the MOS to 0-1 (0.01 for 0-100 scales)")
    notice: str | None = Field(None, description="the dataset's licence or citation, shipped with the weights")

    def check(self, field: str) -> None:
        if not Path(self.mos).is_file():
            raise ValueError(f"{field}.mos: expected a CSV file, got {self.mos!r}. Fix: "
                             + ("fetch BIQ2021's train split into data/biq2021 (README, 'The default scorer')"
                                if "biq" in self.name.lower() else "pass an existing CSV of image,mos"))
        if self.images is not None and not Path(self.images).is_dir():
            raise ValueError(f"{field}.images: expected a folder, got {self.images!r}")
        if self.notice is not None and not Path(self.notice).is_file():
            raise ValueError(f"{field}.notice: expected a file, got {self.notice!r}")


class ViewSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    crops: int = Field(5, ge=0, le=5, description="native-resolution crops beside the whole image (0-5)")
    crop_side: int = Field(512, ge=224, le=8192, description="shorter side crops are cut from (larger: downscaled)")


class RegressorSettings(BaseModel):
    """RBF SVR on PCA-reduced standardised features; C and gamma chosen by CV on the training data only."""

    model_config = ConfigDict(extra="forbid")

    pca: int = Field(512, ge=8, le=4096, description="principal components kept (support vectors are stored in it)")
    c: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0], min_length=1)
    gamma: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0, 1.5], min_length=1,
                               description="RBF gamma times the features' total variance (as scikit-learn's 'scale')")
    epsilon: float = Field(0.1, ge=0, description="SVR epsilon, in standard deviations of the MOS")
    cv_folds: int = Field(3, ge=2, le=20)
    cv_sample: int = Field(3000, ge=20, description="rows drawn (seeded) for the C/gamma search")


class EvaluationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    test: RatedSource | None = Field(None, description="held-out set: never trained, tuned or selected on")
    cross: str | None = Field(None, description="train source that serves as a cross-dataset test for a model "
                                                "fitted on the others")
    speed_images: int = Field(100, ge=0, le=100_000)


class DefaultNrRecipe(BaseModel):
    """Everything ``iqaflow train-default`` and ``iqaflow evaluate-default`` need; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    scorer: Literal["iqaflow_nr", "iqaflow_nr_fast"] = "iqaflow_nr"
    seed: int = 0
    train: list[RatedSource] = Field(min_length=1)
    views: ViewSettings = Field(default_factory=ViewSettings)
    regressor: RegressorSettings = Field(default_factory=RegressorSettings)
    cache: str | None = Field(".cache/iqaflow-features", description="folder for per-view feature tables "
                                                                     "(keyed by file, size and mtime); None: off")
    batch: int = Field(16, ge=1, le=4096, description="images per forward pass while computing features")
    out: str = Field("iqaflow/weights", description="folder for iqaflow_nr.pt, manifest.json and NOTICE")
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)

    @model_validator(mode="after")
    def _paths_exist(self) -> DefaultNrRecipe:
        for i, src in enumerate(self.train):
            src.check(f"train[{i}]")
        if self.evaluation.test is not None:
            self.evaluation.test.check("evaluation.test")
        names = [s.name for s in self.train]
        if self.evaluation.cross is not None and self.evaluation.cross not in names:
            raise ValueError(f"evaluation.cross: expected one of the train names {names}, got "
                             f"{self.evaluation.cross!r}")
        return self


def recipe_scorer(path: str | Path) -> str:
    """The ``scorer`` a recipe file names (``iqaflow_nr`` when absent and it has no classic sections)."""
    data = config_io.read_mapping(path, "configs/default_nr.yaml")
    if "scorer" in data:
        return str(data["scorer"])
    return "iqaflow_nr_classic" if "pretrain" in data or "model" in data else "iqaflow_nr"


def head_file(scorer: str) -> str:
    """The regressor file a recipe writes: ``iqaflow_nr.pt``, ``iqaflow_nr_fast.pt``."""
    return f"{scorer}.pt"


def load_recipe(path: str | Path | None, overrides: dict[str, Any] | None = None) -> DefaultNrRecipe:
    """YAML (safe_load) overlaid with the flags given; every problem is one ConfigError naming the field."""
    return config_io.load(DefaultNrRecipe, path, overrides, example="configs/default_nr.yaml",
                          default_fix="see configs/default_nr.yaml for every key and its default")
