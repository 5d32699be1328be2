"""Per-image and relative gate decisions: pure functions from a results table to status + reasons.

Per-image rules need one row at a time, so the shard task applies them as it writes (streaming),
except those reading columns of the collection pass (duplicates, size outliers), which exist only
once the whole run is scored. Relative rules (top-k, top/bottom percent) need the whole run too.
The final gate pass applies all of them: it recomputes every decision from the scores, so a changed
gate file never leaves stale statuses behind.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqaflow.schemas import gate_expr
from iqaflow.schemas.gates import GATES_KEY, MISSING_SUFFIX, GateFile, ImageRule, RelativeRule
from iqaflow.schemas.results import GATE_FIELDS, Col, GateStatus

_STATUSES = np.array([GateStatus.PASS.value, GateStatus.FLAG.value, GateStatus.REJECT.value], dtype=object)
_RANK = {GateStatus.PASS.value: 0, GateStatus.FLAG.value: 1, GateStatus.REJECT.value: 2}
_REJECT = _RANK[GateStatus.REJECT.value]


@dataclass
class Decisions:
    """``rank`` 0 pass / 1 flag / 2 reject per row; one array of reason-or-None per rule applied, and per rule
    the key its reasons are counted under (None: the reasons themselves; a key for per-image reasons)."""

    rank: np.ndarray
    failures: list[np.ndarray] = field(default_factory=list)
    keys: list[str | None] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int) -> Decisions:
        return cls(np.zeros(n, dtype=np.int8))

    def add(self, failed: np.ndarray, outcome: str, key: str | None = None) -> None:
        self.failures.append(failed)
        self.keys.append(key)
        hit = np.not_equal(failed, None)
        self.rank[hit] = np.maximum(self.rank[hit], _RANK[outcome])

    def reason_counts(self) -> dict[str, int]:
        """Images per reason, sorted; per-image reasons (``duplicate_of:<id>``) count under their rule's key."""
        counts: Counter[str] = Counter()
        for failed, key in zip(self.failures, self.keys, strict=True):
            hit = failed[np.not_equal(failed, None)].tolist()
            if key is None:
                counts.update(hit)
            else:
                missing = key + MISSING_SUFFIX
                counts.update(missing if r == missing else key for r in hit)
        return dict(sorted(counts.items()))

    def status(self) -> pa.Array:
        return pa.array(_STATUSES[self.rank], pa.string())

    def reasons(self) -> pa.Array:
        """list<string> per row: labels of the failed rules in rule order (empty list when none failed)."""
        n = len(self.rank)
        if not self.failures:
            return pa.array([[] for _ in range(n)], pa.list_(pa.string()))
        matrix = np.stack(self.failures, axis=1)  # rows x rules
        hit = np.not_equal(matrix, None)
        offsets = np.concatenate([[0], np.cumsum(hit.sum(axis=1))]).astype(np.int32)
        values = pa.array(matrix[hit].tolist(), pa.string())
        return pa.ListArray.from_arrays(pa.array(offsets), values)


def rule_failures(table: pa.Table, rule: ImageRule) -> np.ndarray:
    """Reason where ``rule.require`` is not satisfied (``<reason key>:missing`` where it is unknown); a reason
    with ``{column}`` placeholders is filled from each failed image's row."""
    result = gate_expr.evaluate(rule.ast(), table).combine_chunks()
    true = result.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    unknown = result.is_null().to_numpy(zero_copy_only=False).astype(bool)
    failed = ~true
    if rule.on_null == "pass":
        failed &= ~unknown
    out = np.full(len(true), None, dtype=object)
    known = np.flatnonzero(failed & ~unknown)
    if rule.reason_columns and len(known):
        rows = table.select(rule.reason_columns).take(pa.array(known, pa.int64())).to_pylist()
        out[known] = [rule.render_reason(r) for r in rows]
    else:
        out[known] = rule.label
    out[failed & unknown] = rule.reason_key + MISSING_SUFFIX
    return out


def image_decisions(table: pa.Table, rules: Sequence[ImageRule]) -> Decisions:
    decisions = Decisions.empty(table.num_rows)
    for rule in rules:
        decisions.add(rule_failures(table, rule), rule.outcome, rule.reason_key if rule.reason_columns else None)
    return decisions


def kept_count(rule: RelativeRule, n: int) -> int:
    """How many of ``n`` ranked candidates a relative rule keeps."""
    if rule.keep_top_k is not None:
        return min(rule.keep_top_k, n)
    if rule.keep_top_percent is not None:
        return min(n, math.ceil(n * rule.keep_top_percent / 100 - 1e-9))
    return n - min(n, math.floor(n * (rule.reject_bottom_percent or 0.0) / 100 + 1e-9))


def relative_failures(table: pa.Table, rank: np.ndarray, rule: RelativeRule, higher_is_better: bool) -> np.ndarray:
    """Rank images not already rejected by ``rule.by`` (ties broken by image id) and mark those not kept."""
    values = pc.cast(table[rule.by], pa.float64()).to_numpy().astype(np.float64)
    ids = np.asarray(table[Col.IMAGE_ID].to_pylist(), dtype=object)
    unknown = np.isnan(values)
    open_rows = rank < _REJECT
    idx = np.flatnonzero(open_rows & ~unknown)
    key = -values[idx] if higher_is_better else values[idx]
    order = np.lexsort((ids[idx].astype(str), key))
    out = np.full(len(values), None, dtype=object)
    out[idx[order[kept_count(rule, len(idx)):]]] = rule.label
    if rule.on_null == "fail":
        out[open_rows & unknown] = rule.label + MISSING_SUFFIX
    return out


def decide(table: pa.Table, spec: GateFile, higher_is_better: Mapping[str, bool] | None = None) -> Decisions:
    """Every rule of ``spec`` over a whole run: per-image rules first, then relative rules in order."""
    decisions = image_decisions(table, spec.image_rules)
    directions = higher_is_better or {}
    for rule in spec.relative_rules:
        higher = rule.higher_is_better if rule.higher_is_better is not None else directions.get(rule.by, True)
        decisions.add(relative_failures(table, decisions.rank, rule, higher), rule.outcome)
    return decisions


def with_gate_columns(table: pa.Table, status: pa.Array, reasons: pa.Array, fingerprint: str) -> pa.Table:
    """``table`` with its gate columns replaced and the gate file's fingerprint in the metadata."""
    out = table.drop_columns([f.name for f in GATE_FIELDS if f.name in table.column_names])
    status_field, reasons_field = GATE_FIELDS
    out = out.append_column(status_field, status).append_column(reasons_field, reasons)
    meta = dict(out.schema.metadata or {})
    meta[GATES_KEY] = fingerprint.encode()
    return out.replace_schema_metadata(meta)


def apply_image_gates(table: pa.Table, spec: GateFile) -> pa.Table:
    """The shard task's step: per-image rules that need no collection column (the rest, and relative rules,
    wait for the whole run; the final pass recomputes every status)."""
    decisions = image_decisions(table, spec.shard_rules())
    return with_gate_columns(table, decisions.status(), decisions.reasons(), spec.fingerprint())
