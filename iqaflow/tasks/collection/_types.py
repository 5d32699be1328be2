"""What the duplicate pass is asked: the near-duplicate rule and the policy that picks the kept image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from iqaflow.errors import ConfigError
from iqaflow.models.fingerprints import NEAR_RULE
from iqaflow.schemas.duplicates import ABSTAINING
from iqaflow.schemas.results import Col

Direction = Literal["max", "min"]
# Derived from width * height when the table has no such column, so the default policy works on any run.
PIXELS = "pixels"


@dataclass(frozen=True)
class NearRule:
    """Two images are near duplicates when every listed hash is within its Hamming radius.

    The first hash is the band hash: LSH candidates come from it, the others only confirm them. An
    abstaining hash (``schemas.duplicates.ABSTAINING``: chroma_hash) confirms any pair where either value is 0.
    """

    # The rule measured on labelled variants (iqaflow.models.fingerprints.NEAR_RULE).
    radii: tuple[tuple[str, int], ...] = tuple(NEAR_RULE.items())

    @classmethod
    def parse(cls, rule: NearRule | Mapping[str, int] | None) -> NearRule:
        if rule is None:
            return cls()
        if isinstance(rule, NearRule):
            return rule
        items = tuple((str(k), int(v)) for k, v in rule.items())
        if not items:
            raise ConfigError("near-duplicate rule: expected at least one hash and radius, e.g. {'phash': 10}; got {}")
        for name, radius in items:
            if not 0 <= radius < 32:
                raise ConfigError(f"near-duplicate rule: expected a radius in [0, 32) for {name!r}, got {radius}")
        if items[0][0] in ABSTAINING:
            raise ConfigError(f"near-duplicate rule: the first hash is banded and must not abstain, got "
                              f"{items[0][0]!r} first; put it after phash or dhash")
        return cls(items)

    @property
    def band(self) -> str:
        return self.radii[0][0]

    @property
    def columns(self) -> list[str]:
        return [name for name, _ in self.radii]

    @property
    def abstain(self) -> tuple[bool, ...]:
        """Per column: True where a 0 hash (no evidence) passes the check."""
        return tuple(name in ABSTAINING for name, _ in self.radii)

    @property
    def radius(self) -> int:
        return self.radii[0][1]


@dataclass(frozen=True)
class KeepPolicy:
    """Ordered (column, direction) keys: the first row by these keys is kept; missing/NaN sort last.

    Rows whose status is not ``ok`` come after every good row whatever their keys.
    """

    keys: tuple[tuple[str, Direction], ...] = (("iqaflow_nr", "max"), (PIXELS, "max"), (Col.URI, "min"))

    @classmethod
    def parse(cls, policy: KeepPolicy | Sequence[tuple[str, str]] | None) -> KeepPolicy:
        if policy is None:
            return cls()
        if isinstance(policy, KeepPolicy):
            return policy
        keys = []
        for column, direction in policy:
            if direction not in ("max", "min"):
                raise ConfigError(f"keep policy: expected 'max' or 'min' for {column!r}, got {direction!r}")
            keys.append((str(column), direction))
        return cls(tuple(keys))  # type: ignore[arg-type]

    @property
    def columns(self) -> list[str]:
        return [column for column, _ in self.keys]


def rule_hashes(table: pa.Table, rule: NearRule) -> tuple[np.ndarray, np.ndarray]:
    """(c, n) uint64 hashes of the rule's columns, band hash first, and the rows where all are present.

    An abstaining hash (``NearRule.abstain``) that is null or absent (runs scored before it existed) is 0:
    no evidence, so the row stays valid and that check passes.
    """
    names = table.column_names
    missing = [c for c, skip in zip(rule.columns, rule.abstain, strict=True) if c not in names and not skip]
    if missing:
        raise ConfigError(f"near-duplicate rule: expected hash columns {rule.columns}, got no {missing}; "
                          "score the run with the fingerprint columns or change the rule")
    valid = np.ones(table.num_rows, dtype=bool)
    rows = []
    for name, skip in zip(rule.columns, rule.abstain, strict=True):
        if name not in table.column_names:
            rows.append(np.zeros(table.num_rows, np.uint64))
            continue
        col = table.column(name)
        if col.null_count and not skip:
            valid &= col.is_valid().to_numpy(zero_copy_only=False)
        rows.append(np.ascontiguousarray(pc.fill_null(col, 0).to_numpy(), dtype=np.int64).view(np.uint64))
    return np.vstack(rows) if rows else np.empty((0, table.num_rows), np.uint64), valid
