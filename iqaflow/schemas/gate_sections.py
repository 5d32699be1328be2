"""The gate file's collection gates and routing rules (the sections below ``collection:`` and ``routing:``).

Typed pydantic models that forbid unknown keys; :mod:`iqaflow.schemas.gates` reads the whole file.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from iqaflow.schemas.results import GateStatus

Label = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Severity = Literal["fail", "warn"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Gate(_Strict):
    name: Label | None = None
    on_fail: Severity | None = None  # default: collection.on_fail


def has_reason(reasons: tuple[str, ...] | list[str], key: str) -> bool:
    """A reason key matches itself and its per-image and missing forms (``duplicate_of:ab12``)."""
    return any(r == key or r.startswith(key + ":") for r in reasons)


class RateGate(_Gate):
    """Share of all images with that gate status (reject/flag) or processing error, at most ``max``.

    ``ignore_reasons``: images whose every reason is one of these keys are not counted as rejected/flagged
    (e.g. ``[duplicate_of]``: a batch of near-identical shots should not read as a bad batch).
    """

    type: Literal["reject_rate", "flag_rate", "error_rate"]
    max: float = Field(ge=0, le=1)
    ignore_reasons: list[str] = Field(default_factory=list)


class _Bounds(_Gate):
    column: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> _Bounds:
        if self.min is None and self.max is None:
            raise ValueError(f"{self.type} gate on {self.column!r}: expected min, max or both")  # type: ignore[attr-defined]
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{self.type} gate on {self.column!r}: min {self.min} is above max {self.max}")  # type: ignore[attr-defined]
        return self


class QuantileGate(_Bounds):
    type: Literal["quantile"]
    quantile: float = Field(ge=0, le=1)


class MeanGate(_Bounds):
    type: Literal["mean"]


class ValuesGate(_Bounds):
    """At least ``mostly`` of the non-null values lie within [min, max]."""

    type: Literal["values_between"]
    mostly: float = Field(1.0, ge=0, le=1)


class DriftGate(_Gate):
    """Distance between this run's and a baseline run's ``column`` distribution, at most ``max``.

    ``ks``: two-sample Kolmogorov-Smirnov statistic (0 same, 1 disjoint; unit-free).
    ``wasserstein``: earth mover's distance in the column's own units.
    """

    type: Literal["drift"]
    column: str
    metric: Literal["ks", "wasserstein"] = "ks"
    max: float = Field(ge=0)
    baseline: str | None = None  # results folder of the baseline run; --baseline overrides


CollectionGate = Annotated[RateGate | QuantileGate | MeanGate | ValuesGate | DriftGate, Field(discriminator="type")]


def gate_name(gate: CollectionGate) -> str:
    if gate.name:
        return gate.name
    column = getattr(gate, "column", None)
    return f"{gate.type}_{column}" if column else gate.type


class Collection(_Strict):
    on_fail: Severity = "fail"
    gates: list[CollectionGate] = Field(default_factory=list)


class _Route(_Strict):
    when: list[GateStatus] = Field(min_length=1)
    # Only images with one of these reasons: a reason key also matches its per-image and missing forms
    # (``duplicate_of`` selects ``duplicate_of:ab12`` and ``duplicate_of:missing``). None: any reason.
    reasons: list[str] | None = Field(None, min_length=1)

    def selects(self, status: str, reasons: tuple[str, ...] | list[str]) -> bool:
        if status not in {s.value for s in self.when}:
            return False
        return self.reasons is None or any(has_reason(reasons, k) for k in self.reasons)


class CopyRoute(_Route):
    action: Literal["copy"]
    to: str = Field(min_length=1)


class MoveRoute(_Route):
    action: Literal["move"]
    to: str = Field(min_length=1)


class TagRoute(_Route):
    """S3 object tags on the source image; values may use {status} and {reasons}."""

    action: Literal["tag"]
    tags: dict[str, str] = Field(min_length=1, max_length=10)  # S3 allows 10 tags per object

    @model_validator(mode="after")
    def _placeholders(self) -> TagRoute:
        for key, value in self.tags.items():
            try:
                value.format(status="", reasons="")
            except (KeyError, IndexError, ValueError):
                raise ValueError(f"tag {key!r}: value {value!r} may only use the {{status}} and {{reasons}} "
                                 "placeholders") from None
        return self


class ManifestRoute(_Route):
    """``to/name.parquet`` and ``to/name.txt``: the URIs whose status is in ``when``."""

    action: Literal["manifest"]
    to: str = Field(min_length=1)
    name: Label


RouteRule = Annotated[CopyRoute | MoveRoute | TagRoute | ManifestRoute, Field(discriminator="action")]
