"""Compile a gate file's collection gates into Great Expectations expectation configurations.

Plain data (type, kwargs, meta) so this module needs no GX import; ``iqaflow.tasks.gates.gate`` turns
the list into a GX ``ExpectationSuite``. Drift gates compare two runs and are computed beside GX
(see ``iqaflow.tasks.gates.gate.drift_distance``), so they compile to nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iqaflow.schemas.gates import (
    CollectionGate,
    GateFile,
    MeanGate,
    QuantileGate,
    RateGate,
    ValuesGate,
    gate_name,
    has_reason,
)
from iqaflow.schemas.results import Col, GateStatus, Status


@dataclass(frozen=True)
class ExpectationSpec:
    type: str
    kwargs: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


def severity(spec: GateFile, gate: CollectionGate) -> str:
    return gate.on_fail or spec.collection.on_fail


def _mostly(max_rate: float) -> float:
    # "at most max_rate of rows are bad" == "at least 1 - max_rate are good"; rounded so 1 - 0.3 is 0.7.
    return round(1.0 - max_rate, 12)


def _rate(gate: RateGate) -> ExpectationSpec:
    if gate.type == "error_rate":
        return ExpectationSpec("expect_column_values_to_be_in_set",
                               {"column": Col.STATUS, "value_set": [Status.OK.value], "mostly": _mostly(gate.max)})
    bad = GateStatus.REJECT.value if gate.type == "reject_rate" else GateStatus.FLAG.value
    return ExpectationSpec("expect_column_values_to_not_be_in_set",
                           {"column": status_column(gate), "value_set": [bad], "mostly": _mostly(gate.max)})


def status_column(gate: RateGate) -> str:
    """The frame column a rate gate reads: the gate status, or a copy that passes the ignored reasons."""
    return f"{Col.GATE_STATUS}__{gate_name(gate)}" if gate.ignore_reasons else Col.GATE_STATUS


def with_ignored_reasons(frame: Any, spec: GateFile) -> Any:
    """Add each ``ignore_reasons`` rate gate's status column to a pandas frame of the results."""
    for gate in spec.collection.gates:
        if isinstance(gate, RateGate) and gate.ignore_reasons and gate.type != "error_rate":
            only_ignored = frame[Col.GATE_REASONS].map(
                lambda rs, keys=gate.ignore_reasons: rs is not None and len(rs) > 0
                and all(any(has_reason([r], k) for k in keys) for r in rs))
            frame[status_column(gate)] = frame[Col.GATE_STATUS].where(~only_ignored, GateStatus.PASS.value)
    return frame


def expectation_for(gate: CollectionGate) -> ExpectationSpec | None:
    """The expectation that carries ``gate``, or None for gates computed outside GX (drift)."""
    if isinstance(gate, RateGate):
        return _rate(gate)
    if isinstance(gate, QuantileGate):
        return ExpectationSpec("expect_column_quantile_values_to_be_between", {
            "column": gate.column,
            "quantile_ranges": {"quantiles": [gate.quantile], "value_ranges": [[gate.min, gate.max]]},
        })
    if isinstance(gate, MeanGate):
        return ExpectationSpec("expect_column_mean_to_be_between",
                               {"column": gate.column, "min_value": gate.min, "max_value": gate.max})
    if isinstance(gate, ValuesGate):
        return ExpectationSpec("expect_column_values_to_be_between",
                               {"column": gate.column, "min_value": gate.min, "max_value": gate.max,
                                "mostly": gate.mostly})
    return None


def compile_suite(spec: GateFile) -> list[ExpectationSpec]:
    """One expectation per GX-checked collection gate; ``meta`` names the gate and its severity."""
    out = []
    for gate in spec.collection.gates:
        exp = expectation_for(gate)
        if exp is not None:
            meta = {"gate": gate_name(gate), "gate_type": gate.type, "on_fail": severity(spec, gate)}
            out.append(ExpectationSpec(exp.type, exp.kwargs, meta))
    return out


def frame_columns(spec: GateFile) -> list[str]:
    """Results columns the collection gates read (the GX batch holds only these)."""
    cols = [Col.IMAGE_ID, Col.STATUS, Col.GATE_STATUS]
    if any(isinstance(g, RateGate) and g.ignore_reasons for g in spec.collection.gates):
        cols.append(Col.GATE_REASONS)
    for gate in spec.collection.gates:
        column = getattr(gate, "column", None)
        if column and column not in cols:
            cols.append(column)
    return cols
