"""The report's duplicates-and-hygiene section: the largest duplicate groups and counts per hygiene check."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqaflow.schemas.results import Col
from iqaflow.tasks.report.images import Image, thumbnails

DUP_GROUPS = 8  # largest duplicate groups shown
DUP_MEMBERS = 6  # images shown per group (the kept one first)
# Hygiene scorer columns and the thresholds their scorers document (iqaflow.models.hygiene): (check, column,
# op, constant there, fallback). Counted whether or not the gate file has a rule on them.
HYGIENE_CHECKS = (("low information", "entropy", "<", "LOW_INFORMATION_BITS", 3.0),
                  ("blank", "blank_fraction", ">=", "BLANK_AT_LEAST", 0.98),
                  ("grayscale stored as colour", "colour_spread", "<=", "GRAYSCALE_SPREAD_AT_MOST", 2.0))
_COLOUR_MODES = ("RGB", "RGBA")  # grayscale-as-colour only counts images stored with colour channels


@dataclass
class DupGroup:
    group: int
    size: int
    exact: bool  # every duplicate is an exact copy of the kept image
    members: list[Image]  # the kept image first, then by distance; at most DUP_MEMBERS


@dataclass
class HygieneCount:
    check: str
    column: str
    test: str  # how the images were counted, e.g. "entropy < 3"
    images: int
    gate: str = ""  # the gate file's rules on that column and how many images they flagged/rejected


@dataclass
class Duplicates:
    grouped: bool = False  # the run has duplicate columns (else only hygiene counts)
    groups: int = 0
    images_in_groups: int = 0
    duplicates: int = 0  # images not kept
    exact: int = 0
    near: int = 0
    exact_groups: int = 0
    largest: list[DupGroup] = field(default_factory=list)
    hygiene: list[HygieneCount] = field(default_factory=list)


def _hygiene_threshold(name: str, fallback: float) -> float:
    try:
        from iqaflow.models import hygiene
    except ImportError:
        return fallback
    return float(getattr(hygiene, name, fallback))


def _gate_hits(reasons: list[Any], spec: Any, column: str) -> str:
    """``reason (outcome): n`` for each rule of the gate file that reads ``column`` (unknown rows left out)."""
    from iqaflow.schemas.gates import MISSING_SUFFIX

    parts = []
    for rule in spec.image_rules if spec is not None else []:
        if column not in rule.expr_columns():
            continue
        key = rule.reason_key
        if rule.reason_columns:
            def hit(r: str, key: str = key) -> bool:
                return r.startswith(key + ":") and r != key + MISSING_SUFFIX
        else:
            def hit(r: str, key: str = key) -> bool:
                return r == key
        n = sum(any(hit(r) for r in rs) for rs in reasons if rs)
        parts.append(f"{rule.label} ({rule.outcome}): {n}")
    return "; ".join(parts)


def _bools(table: pa.Table, col: str) -> np.ndarray:
    return np.asarray(table[col].fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _largest_groups(table: pa.Table, sizes: pa.Table, rel: list[str], phi_safe: bool) -> list[DupGroup]:
    count = f"{Col.DUP_GROUP}_count"
    top = sizes.sort_by([(count, "descending"), (Col.DUP_GROUP, "ascending")]).slice(0, DUP_GROUPS)
    wanted = pc.is_in(table[Col.DUP_GROUP], value_set=top[Col.DUP_GROUP].combine_chunks())
    idx = np.flatnonzero(wanted.fill_null(False).to_numpy(zero_copy_only=False))
    rows = table.select([Col.URI, Col.DUP_GROUP, Col.DUP_DISTANCE, Col.IS_DUPLICATE, Col.GATE_STATUS,
                         Col.GATE_REASONS]).take(pa.array(idx, pa.int64())).to_pylist()
    formats = table[Col.FORMAT].take(pa.array(idx, pa.int64())).to_pylist() if Col.FORMAT in table.column_names \
        else [None] * len(idx)
    members: dict[int, list[tuple[Image, str | None]]] = defaultdict(list)
    for i, r, fmt in zip(idx, rows, formats, strict=True):
        im = Image(r[Col.URI], rel[i], r[Col.GATE_STATUS] or "ungated", list(r[Col.GATE_REASONS] or []), {},
                   kept=r[Col.IS_DUPLICATE] is False, distance=r[Col.DUP_DISTANCE])
        members[r[Col.DUP_GROUP]].append((im, fmt))
    groups, shown = [], []
    for g in top.to_pylist():
        pairs = sorted(members[g[Col.DUP_GROUP]], key=lambda p: (not p[0].kept, p[0].distance or 0, p[0].name))
        pairs = pairs[:DUP_MEMBERS]
        groups.append(DupGroup(g[Col.DUP_GROUP], int(g[count]), g[f"{Col.DUP_DISTANCE}_max"] == 0,
                               [im for im, _ in pairs]))
        shown.extend(pairs)
    thumbnails([im for im, _ in shown], [fmt for _, fmt in shown], phi_safe)
    return groups


def duplicates_section(table: pa.Table, rel: list[str], spec: Any, phi_safe: bool = True) -> Duplicates | None:
    """Duplicate groups (counts, the largest with thumbnails) and images per hygiene check; None when the run has
    neither the collection pass's columns nor a hygiene scorer's."""
    names = set(table.column_names)
    checks = [c for c in HYGIENE_CHECKS if c[1] in names]
    if Col.DUP_GROUP not in names and Col.SIZE_OUTLIER not in names and not checks:
        return None
    out = Duplicates()
    reasons = table[Col.GATE_REASONS].to_pylist()
    if {Col.DUP_GROUP, Col.IS_DUPLICATE, Col.DUP_DISTANCE} <= names:
        out.grouped = True
        dup = _bools(table, Col.IS_DUPLICATE)
        dist = pc.fill_null(pc.cast(table[Col.DUP_DISTANCE], pa.int64()), -1).to_numpy(zero_copy_only=False)
        out.duplicates = int(dup.sum())
        out.exact, out.near = int((dup & (dist == 0)).sum()), int((dup & (dist > 0)).sum())
        grouped = table.filter(pc.is_valid(table[Col.DUP_GROUP]))
        out.images_in_groups = grouped.num_rows
        sizes = grouped.group_by(Col.DUP_GROUP).aggregate([(Col.DUP_GROUP, "count"), (Col.DUP_DISTANCE, "max")])
        out.groups = sizes.num_rows
        out.exact_groups = int(pc.sum(pc.equal(sizes[f"{Col.DUP_DISTANCE}_max"], 0)).as_py() or 0)
        out.largest = _largest_groups(table, sizes, rel, phi_safe) if sizes.num_rows else []
        out.hygiene.append(HygieneCount("duplicates (not kept)", Col.IS_DUPLICATE, Col.IS_DUPLICATE, out.duplicates,
                                        _gate_hits(reasons, spec, Col.IS_DUPLICATE)))
    if Col.SIZE_OUTLIER in names:
        out.hygiene.append(HygieneCount("size outliers (IQR fences)", Col.SIZE_OUTLIER, Col.SIZE_OUTLIER,
                                        int(_bools(table, Col.SIZE_OUTLIER).sum()),
                                        _gate_hits(reasons, spec, Col.SIZE_OUTLIER)))
    compare = {"<": np.less, ">=": np.greater_equal, "<=": np.less_equal}
    for check, col, op, constant, fallback in checks:
        threshold = _hygiene_threshold(constant, fallback)
        unknown = np.inf if op in ("<", "<=") else -np.inf  # an unscored image is never counted
        hit = compare[op](np.nan_to_num(_floats(table, col), nan=unknown), threshold)
        test = f"{col} {op} {threshold:g}"
        if col == "colour_spread" and Col.MODE in names:
            modes = [(m or "").split(";")[0] for m in table[Col.MODE].to_pylist()]
            hit &= np.array([m in _COLOUR_MODES for m in modes], dtype=bool)
            test += " (RGB files)"
        out.hygiene.append(HygieneCount(check, col, test, int(hit.sum()), _gate_hits(reasons, spec, col)))
    return out


def _floats(table: pa.Table, col: str) -> np.ndarray:
    return pc.cast(table[col], pa.float64()).to_numpy(zero_copy_only=False)
