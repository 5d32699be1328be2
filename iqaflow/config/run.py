"""Typed run config, validated once at the entry point (YAML file + command-line flags)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iqaflow.config import load as config_io
from iqaflow.errors import ConfigError, UnknownScorerError
from iqaflow.schemas.results import PRINT_COLUMNS, SCHEMA_VERSION

DEFAULT_MODELS = ["iqaflow_nr", "sharpness", "exposure", "noise"]
MEDICAL_EXTENSIONS = [".dcm", ".nii", ".nii.gz"]
DEFAULT_EXTENSIONS = [".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".ppm", ".pgm", ".heic",
                      ".heif", *MEDICAL_EXTENSIONS]

# How to fix a field, shown after pydantic's "expected" message.
_DEFAULT_FIX = "see `iqaflow score --help` for the allowed values"
_FIX_HINTS: dict[str, str] = {
    "shard_size": "use a positive integer; 1000-5000 images per shard suits most runs",
    "batch_size": "use a positive integer such as 32",
    "workers": "use the number of Dask worker processes to start, e.g. 2 (on CUDA at most one per GPU)",
    "threads_per_worker": "use a positive integer, usually 1 (scorers use their own threads)",
    "device": "use one of auto, cpu, cuda",
    "gpu_decode": "use auto (on for CUDA workers), true (also on CPU) or false",
    "models": "list registered scorer names; `iqaflow models` shows them",
    "dask_address": "use a scheduler address such as tcp://127.0.0.1:8786, or leave it unset",
    "prefetch": "use a positive integer: how many images are read ahead per worker",
    "extensions": "list file extensions such as ['.jpg', '.png']",
    "reference_root": "use the folder or URL holding the reference images, laid out like the source",
    "mlflow_tracking_uri": "use an MLflow tracking URI such as sqlite:///path/mlflow.db or http://host:5000",
    "align": "use none, homography (features + RANSAC), tiles (plus sub-pixel tile phase correlation) or ecc "
             "(plus sub-pixel ECC refinement)",
    "heatmap_below": "use a local SSIM in [-1, 1] such as 0.5, or leave it unset for no heatmaps",
    "print_inspect": "use true (defects of each scan against its master) or false",
    "print_dpi": "use the masters' resolution in dots per inch, e.g. 300, or leave it unset to read each master's",
    "volume_slices": "use how many slices of a volume to score, 1 for the middle slice only",
    "volume_reduce": "use mean or worst",
    "max_decode_pixels": "use a pixel count of at least 65536 (256x256), e.g. 36000000 for 36 MP, or null to "
    "score huge images at full size (files over the decode ceilings are TOO_LARGE either way)",
}


class RunConfig(BaseModel):
    """Everything one scoring run needs. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    source: str = Field(description="folder, fsspec URL (s3://bucket/prefix) or manifest .csv/.parquet")
    out: str = Field("iqaflow-out", description="output folder or URL for results")
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS), min_length=1)
    shard_size: int = Field(1000, ge=1, le=1_000_000)
    batch_size: int = Field(32, ge=1, le=4096)
    workers: int | None = Field(
        None, ge=1, le=4096, description="local Dask worker processes (default: 2 on CPU, one per visible GPU on CUDA)"
    )
    threads_per_worker: int = Field(1, ge=1, le=256)
    dask_address: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpu_decode: bool | Literal["auto"] = Field(
        "auto", description="decode plain JPEGs with torchvision straight to tensors on the scorers' device (nvJPEG "
        "on CUDA) when every model is a deep NR scorer; auto: on CUDA only, true: also on CPU, false: never"
    )
    prefetch: int = Field(8, ge=1, le=1024)
    extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS), min_length=1)
    recursive: bool = True
    sniff_extensionless: bool = Field(
        False, description="also list files without an extension that start like DICOM or NIfTI (reads 548 bytes "
        "of each); DICOM exports often have no extension"
    )
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    weights: str | None = Field(None, description="weights store: folder or URL (default $IQAFLOW_WEIGHTS)")
    allow_download: bool = False
    incremental: str | None = Field(
        None, description="earlier run (OUT/runs/RUN_ID or its results folder): score only new or changed images"
    )
    reference_root: str | None = Field(
        None, description="folder or URL of reference (master) images for FR models, same relative paths as source"
    )
    align: Literal["none", "homography", "tiles", "ecc"] = Field(
        "none", description="register each image onto its reference before scoring (scans vs masters): homography "
        "= features + RANSAC; tiles = that refined to sub-pixel by phase correlation on tiles (fast); ecc = refined "
        "by ECC instead (about 4x slower on A4 at 300 dpi); images are cropped to the overlap"
    )
    heatmap_below: float | None = Field(
        None, ge=-1.0, le=1.0, description="write a defect heatmap PNG (runs/RUN_ID/heatmaps/IMAGE_ID.png) for "
        "image/reference pairs whose worst region's local SSIM (as ssim_worst) is below this"
    )
    print_inspect: bool = Field(
        False, description="print audits: find defects of each registered scan against its master (voids, spots, "
        "streaks, bands, smears, colour shifts, misregistered planes, blurred text, wrong or missing pages); adds the "
        "defect_* and delta_e_* columns, runs/RUN_ID/defects/*.parquet (one row per defect) and heatmaps"
    )
    print_dpi: float | None = Field(
        None, gt=0, le=4800, description="resolution of the masters for defect areas in mm2; default: each master "
        "file's own dpi"
    )
    volume_slices: int = Field(
        8, ge=1, le=512, description="volumes and multi-frame files: NR scores aggregate this many slices (1: middle)"
    )
    volume_reduce: Literal["mean", "worst"] = Field("mean", description="how per-slice NR scores aggregate")
    max_decode_pixels: int | None = Field(  # default = iqaflow.tasks.decode.DEFAULT_MAX_PIXELS (not imported: PIL)
        36_000_000, ge=65_536, description="photos with more pixels are downscaled (aspect kept, area averaging; JPEG "
        "at reduced size while decoding) to at most this many before scoring; results keep the original width and "
        "height and record decode_scale; null: score at full size"
    )
    phi_safe: bool = Field(
        True, description="medical files: ids are keyed hashes (HMAC of SOPInstanceUID and path, key from "
        "$IQAFLOW_PHI_KEY or <out>/phi.key) and a path holding its patient's name or ID is a PHI_IN_PATH error"
    )
    duplicates: bool = Field(
        True, description="after scoring, group exact and near-duplicate images and find size outliers (columns "
        "dup_group, duplicate_of, dup_distance, is_duplicate, aspect_ratio, megapixels, size_outlier)"
    )
    gates: str | None = Field(None, description="gate file (YAML): per-image, relative and collection gates, routing")
    apply_routing: bool = Field(False, description="carry out the gate file's routing (default: dry run)")
    baseline: str | None = Field(None, description="earlier run folder for drift gates and the report's drift section")
    track: bool = Field(True, description="record the run in MLflow (params, metrics, artifacts)")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else sqlite:///<out>/mlflow.db)"
    )
    mlflow_registry_uri: str | None = Field(
        None, description="MLflow registry holding mlflow:models:/ scorers (default: the tracking URI)"
    )
    mlflow_experiment: str = Field("iqaflow", min_length=1, max_length=200)

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        from iqaflow.models.registry import get_scorer_class, is_resolved_name

        names = [v.strip() for v in value if v.strip()]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate scorer names in {names}")
        for name in names:
            if is_resolved_name(name):
                continue  # an mlflow: model: resolved by _resolve_registered_models once the registry is known
            try:
                get_scorer_class(name)
            except UnknownScorerError as exc:
                raise ValueError(str(exc)) from None
        return names

    @field_validator("extensions")
    @classmethod
    def _normalise_ext(cls, value: list[str]) -> list[str]:
        return sorted({("." + v.lower().lstrip(".")) for v in value})

    @field_validator("dask_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"expected a URL like tcp://host:8786, got {value!r}")
        return value

    @model_validator(mode="after")
    def _resolve_registered_models(self) -> RunConfig:
        """Fetch ``mlflow:`` models now, so a wrong name or registry fails before any image is read."""
        from iqaflow.errors import IqaflowError
        from iqaflow.models.registry import get_scorer_class, is_resolved_name, set_model_registry_uri

        resolved = [m for m in self.models if is_resolved_name(m)]
        if resolved:
            set_model_registry_uri(self.registry_uri())
            for name in resolved:
                try:
                    get_scorer_class(name)
                except IqaflowError as exc:
                    raise ValueError(f"models: {exc}") from None
        return self

    @model_validator(mode="after")
    def _fr_needs_references(self) -> RunConfig:
        fr = self.fr_models()
        if fr and self.reference_root is None and not self.source.lower().endswith((".csv", ".parquet")):
            raise ValueError(
                f"models {', '.join(fr)} are full-reference and need reference images, but reference_root is not "
                "set. Fix: set reference_root (--reference-root) to the folder or URL of the references (same "
                "relative paths as under source), or use a manifest with a reference_uri column, or drop those models"
            )
        return self

    @model_validator(mode="after")
    def _print_options_need_references(self) -> RunConfig:
        asked = [k for k, on in (("align", self.align != "none"), ("heatmap_below", self.heatmap_below is not None),
                                 ("print_inspect", self.print_inspect)) if on]
        if asked and not self.fr_models():
            raise ValueError(
                f"{' and '.join(asked)} compare images with references, but no full-reference model is listed. "
                "Fix: add one (e.g. ssim, ssim_worst, streaks) and set reference_root, or drop "
                f"{' and '.join(asked)}"
            )
        return self

    @model_validator(mode="after")
    def _gates_match_models(self) -> RunConfig:
        """A wrong gate file fails here, before any image is scored (raises ConfigError naming file:line)."""
        if self.gates is not None:
            from iqaflow.models.gate_binding import prepare
            from iqaflow.schemas.results import results_schema

            spec = prepare(self.gates, results_schema(self.outputs()), collection=self.duplicates)
            if self.duplicates:
                from iqaflow.models.gate_binding import directions

                try:
                    spec.duplicates.keep_keys(directions())
                except ValueError as exc:
                    raise ConfigError(f"{spec.source}: {exc}") from None
        return self

    def outputs(self) -> list[str]:
        """Score columns of this run, in results order."""
        from iqaflow.models.registry import scorer_info

        scored = [o for m in self.models for o in scorer_info(m).outputs]
        return [*scored, *PRINT_COLUMNS] if self.print_inspect else scored

    def fr_models(self) -> list[str]:
        """The requested scorers that compare against a reference image."""
        from iqaflow.models.registry import scorer_info

        return [m for m in self.models if scorer_info(m).kind == "fr"]

    def tracking_uri(self) -> str:
        """Where the run is recorded: the config, else $MLFLOW_TRACKING_URI, else SQLite beside the results.

        When ``out`` is remote (s3://...) the default database is ``./mlruns/mlflow.db`` in the working
        directory, since SQLite needs a local file; set mlflow_tracking_uri to share runs instead.
        """
        import os

        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        local = "://" not in self.out or self.out.startswith("file://")
        folder = Path(self.out.removeprefix("file://")) if local else Path("mlruns")
        return f"sqlite:///{(folder.resolve() / 'mlflow.db').as_posix()}"

    def registry_uri(self) -> str:
        """The MLflow model registry for ``mlflow:`` scorers: config, $MLFLOW_REGISTRY_URI, else the tracking URI."""
        import os

        return self.mlflow_registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or self.tracking_uri()

    def fingerprint(self) -> str:
        """Hash of everything that changes score values; part of every shard id."""
        from iqaflow.models.registry import scorer_info
        from iqaflow.models.weights import WeightsStore

        store = WeightsStore.from_env(self.weights)
        known = store.manifest() if any(not w.sha256 for m in self.models for w in scorer_info(m).weights) else {}
        payload = {
            "models": [(m, [w.sha256 or known.get(w.filename) for w in scorer_info(m).weights]) for m in self.models],
            "schema": SCHEMA_VERSION,
        }
        if self.reference_root is not None:  # only when set, so runs without references keep their shard ids
            payload["reference_root"] = self.reference_root
        defaults = type(self).model_fields
        for key in ("align", "volume_slices", "volume_reduce", "phi_safe", "max_decode_pixels", "print_inspect",
                    "print_dpi"):  # only when changed
            if getattr(self, key) != defaults[key].default:
                payload[key] = getattr(self, key)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def build_config(values: dict[str, Any], origin: str = "run config") -> RunConfig:
    """Validate ``values``; every problem becomes one ConfigError naming field, expectation and fix."""
    return config_io.validate(RunConfig, values, origin, _FIX_HINTS, _DEFAULT_FIX)


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """YAML file (safe_load) overlaid with flags that were given (``None`` means not given)."""
    return config_io.load(RunConfig, path, overrides, fix_hints=_FIX_HINTS, default_fix=_DEFAULT_FIX)
