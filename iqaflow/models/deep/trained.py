"""Scorers trained by ``iqaflow train``: a metadata file + a state dict, turned into a scorer class.

A trained model is two files: ``iqaflow_model.json`` (architecture key and options, preprocessing,
score direction and scale, the state dict's sha256) and the state dict itself, loaded with
``torch.load(weights_only=True)`` after its hash is checked: no pickled code is ever executed.
Where the files come from (an MLflow registry, a folder) is the caller's business; this module
imports no tracking library.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from iqaflow.errors import WeightsError
from iqaflow.models.base import Image, ScorerInfo, WeightSpec
from iqaflow.models.deep.torch_scorer import TorchScorer

META_FILE = "iqaflow_model.json"
WEIGHTS_FILE = "state_dict.pt"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainedModelMeta:
    architecture: str
    arch_config: dict[str, int]
    sha256: str
    patch_size: int
    max_patches: int = 64
    higher_is_better: bool = True
    # Network output -> reported score: ``raw * score_scale + score_shift`` (MOS units after fine-tuning).
    score_scale: float = 1.0
    score_shift: float = 0.0
    weights_file: str = WEIGHTS_FILE
    description: str = "Trained with iqaflow train."
    training: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, origin: str) -> TrainedModelMeta:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WeightsError(f"{origin}: expected a JSON object in {META_FILE}, got invalid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise WeightsError(f"{origin}: expected a JSON object in {META_FILE}, got {type(data).__name__}")
        if data.get("format_version") != FORMAT_VERSION:
            raise WeightsError(
                f"{origin}: {META_FILE} format_version is {data.get('format_version')!r}, expected {FORMAT_VERSION}. "
                "Fix: retrain or re-register the model with this iqaflow version"
            )
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("architecture", "arch_config", "sha256", "patch_size") if k not in data]
        extra = sorted(set(data) - known)
        if missing or extra:
            raise WeightsError(f"{origin}: {META_FILE} missing fields {missing}, unknown fields {extra}")
        if "/" in data.get("weights_file", WEIGHTS_FILE) or not re.fullmatch(r"[0-9a-f]{64}", str(data["sha256"])):
            raise WeightsError(f"{origin}: {META_FILE} needs a plain weights_file name and a hex sha256")
        return cls(**data)


def column_name(label: str) -> str:
    """A results-column name from a model label such as ``my-model/3`` -> ``my_model_v3``."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", label).strip("_").lower() or "trained"
    return name if name[0].isalpha() else f"m_{name}"


def trained_scorer_class(column: str, meta: TrainedModelMeta, folder: Path, source: str) -> type[TorchScorer]:
    """An NR scorer class for the model in ``folder`` (which holds ``meta.weights_file``)."""
    from iqaflow.models.deep.nets.compact import build_architecture

    info = ScorerInfo(
        name=column,
        kind="nr",
        higher_is_better=meta.higher_is_better,
        score_range=(None, None),
        description=f"{meta.description} From {source}; mean over {meta.patch_size}px patches at native size.",
        colour="rgb",
        size_policy="patches",
        batchable=True,
        weights=(WeightSpec(meta.weights_file, meta.sha256),),
    )

    class TrainedScorer(TorchScorer):
        model_meta: ClassVar[TrainedModelMeta] = meta
        model_dir: ClassVar[Path] = folder
        patch_size = meta.patch_size
        max_patches = meta.max_patches

        @classmethod
        def build(cls):  # noqa: ANN206 - nn.Module, imported lazily
            try:
                return build_architecture(meta.architecture, dict(meta.arch_config))
            except ValueError as exc:
                raise WeightsError(f"{source}: {exc}") from None

        def setup(self, device: str = "cpu") -> None:
            import torch

            from iqaflow.models.weights import sha256_file

            path = folder / meta.weights_file
            if not path.is_file():
                raise WeightsError(f"{source}: weights file {str(path)!r} is missing. Fix: re-register the model")
            got = sha256_file(path)
            if got != meta.sha256:
                raise WeightsError(
                    f"{source}: weights file {str(path)!r} has sha256 {got}, expected {meta.sha256} from "
                    f"{META_FILE}. Fix: re-register the model; the stored artifact is corrupt or was replaced"
                )
            self.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), device)

        def score(self, images: list[Image]) -> np.ndarray:  # type: ignore[override]
            return super().score(images) * meta.score_scale + meta.score_shift

    TrainedScorer.info = info
    TrainedScorer.__name__ = TrainedScorer.__qualname__ = f"Trained_{column}"
    return TrainedScorer


def load_trained_class(folder: Path, column: str, source: str) -> type[TorchScorer]:
    """Read ``folder/iqaflow_model.json`` and build the scorer class (weights load in ``setup``)."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise WeightsError(
            f"{source}: no {META_FILE} in the model's files ({sorted(p.name for p in folder.iterdir())}). "
            "Fix: register models trained with `iqaflow train`, which writes it"
        )
    return trained_scorer_class(column, TrainedModelMeta.from_json(meta_path.read_text(), source), folder, source)
