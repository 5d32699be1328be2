"""What the duplicate pass is asked: the near-duplicate rule and the policy that picks the kept image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from iqaflow.errors import ConfigError
from iqaflow.models.fingerprints import NEAR_RULE
from iqaflow.schemas.results import Col

Direction = Literal["max", "min"]
# Derived from width * height when the table has no such column, so the default policy works on any run.
PIXELS = "pixels"


@dataclass(frozen=True)
class NearRule:
    """Two images are near duplicates when every listed hash is within its Hamming radius.

    The first hash is the band hash: LSH candidates come from it, the others only confirm them.
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
        return cls(items)

    @property
    def band(self) -> str:
        return self.radii[0][0]

    @property
    def columns(self) -> list[str]:
        return [name for name, _ in self.radii]

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
