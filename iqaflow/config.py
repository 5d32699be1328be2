"""Typed run config, validated once at the entry point (YAML file + command-line flags)."""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from iqaflow.errors import ConfigError, UnknownScorerError
from iqaflow.schemas.results import SCHEMA_VERSION

DEFAULT_MODELS = ["sharpness", "exposure", "noise"]
DEFAULT_EXTENSIONS = [".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".ppm", ".pgm"]

# How to fix a field, shown after pydantic's "expected" message.
_FIX_HINTS: dict[str, str] = {
    "shard_size": "use a positive integer; 1000-5000 images per shard suits most runs",
    "batch_size": "use a positive integer such as 32",
    "workers": "use the number of Dask worker processes to start, e.g. 2",
    "threads_per_worker": "use a positive integer, usually 1 (scorers use their own threads)",
    "device": "use one of auto, cpu, cuda",
    "models": "list registered scorer names; `iqaflow models` shows them",
    "dask_address": "use a scheduler address such as tcp://127.0.0.1:8786, or leave it unset",
    "prefetch": "use a positive integer: how many images are read ahead per worker",
    "extensions": "list file extensions such as ['.jpg', '.png']",
}


class RunConfig(BaseModel):
    """Everything one scoring run needs. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    source: str = Field(description="folder, fsspec URL (s3://bucket/prefix) or manifest .csv/.parquet")
    out: str = Field("iqaflow-out", description="output folder or URL for results")
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS), min_length=1)
    shard_size: int = Field(1000, ge=1, le=1_000_000)
    batch_size: int = Field(32, ge=1, le=4096)
    workers: int = Field(2, ge=1, le=4096)
    threads_per_worker: int = Field(1, ge=1, le=256)
    dask_address: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    prefetch: int = Field(8, ge=1, le=1024)
    extensions: list[str] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS), min_length=1)
    recursive: bool = True
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    weights: str | None = Field(None, description="weights store: folder or URL (default $IQAFLOW_WEIGHTS)")
    allow_download: bool = False

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str]) -> list[str]:
        from iqaflow.models.registry import get_scorer_class

        names = [v.strip() for v in value if v.strip()]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate scorer names in {names}")
        for name in names:
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
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _format_error(err: dict[str, Any], origin: str) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    field = str(err["loc"][0]) if err["loc"] else ""
    if err["type"] == "extra_forbidden":
        allowed = list(RunConfig.model_fields)
        close = difflib.get_close_matches(field, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(allowed)}"
        return f"{origin}: unknown key {loc!r}; expected one of the run config keys. Fix: remove it ({hint})"
    if err["type"] == "missing":
        return f"{origin}: field {loc!r} is required. Fix: set {loc} in the config or on the command line"
    got = err.get("input")
    fix = _FIX_HINTS.get(field, "see `iqaflow score --help` for the allowed values")
    return f"{origin}: field {loc!r}: expected {err['msg'].removeprefix('Value error, ')}; got {got!r}. Fix: {fix}"


def build_config(values: dict[str, Any], origin: str = "run config") -> RunConfig:
    """Validate ``values``; every problem becomes one ConfigError naming field, expectation and fix."""
    try:
        return RunConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError("; ".join(_format_error(e, origin) for e in exc.errors())) from None


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> RunConfig:
    """YAML file (safe_load) overlaid with flags that were given (``None`` means not given)."""
    values: dict[str, Any] = {}
    origin = "command line"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} not found. Fix: pass an existing YAML file to --config")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {str(p)!r}: expected a mapping of keys to values, got {type(loaded).__name__}"
            )
        values.update(loaded)
        origin = f"config {p.name}"
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(values, origin)
