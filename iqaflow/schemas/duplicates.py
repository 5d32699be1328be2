"""The gate file's ``duplicates:`` section: how the collection pass groups images and which one it keeps.

    duplicates:
      near: {phash: 14, dhash: 20, chroma_hash: 7}  # every listed Hamming distance within its radius;
                                                     # the first (phash) is banded, the others verify
      keep: [iqaflow_nr, pixels, uri]  # the first image by these keys is kept, the others are duplicates

A ``keep`` entry is a column, optionally followed by ``max`` or ``min``. Without one, a scorer column
takes its declared direction (best kept), ``pixels`` (width x height), ``megapixels``, ``bytes`` and
``bit_depth`` the largest, and text columns such as ``uri`` the smallest (a stable tie-break).
Runs without a gate file use the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from iqaflow.schemas.results import Col

PIXELS = "pixels"  # width x height of the original image (the pass derives it)
_LARGEST = {PIXELS, Col.MEGAPIXELS, Col.BYTES, Col.BIT_DEPTH, Col.WIDTH, Col.HEIGHT}
_SMALLEST = {Col.URI, Col.IMAGE_ID}
HASH_COLUMNS = (Col.PHASH, Col.DHASH, Col.CHROMA_HASH)
# Hashes whose value 0 means "no evidence" (chroma_hash of a grayscale image): their check passes when either
# image has 0 (or has no such column, as runs scored before it existed). Never the banded (first) hash.
ABSTAINING = frozenset({Col.CHROMA_HASH})
# The default near-duplicate rule, chosen on labelled variants of the tuning set (bench/dedup.py): LSH
# candidates within phash 14, confirmed by dhash 20, verified by the colour layout (chroma_hash 7).
NEAR_RULE: dict[str, int] = {"phash": 14, "dhash": 20, "chroma_hash": 7}


class DuplicatePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    near: dict[str, int] = Field(default_factory=lambda: dict(NEAR_RULE), min_length=1)
    keep: list[str] = Field(default_factory=lambda: ["iqaflow_nr", PIXELS, Col.URI], min_length=1)

    @field_validator("near")
    @classmethod
    def _hashes(cls, near: dict[str, int]) -> dict[str, int]:
        for name, radius in near.items():
            if name not in HASH_COLUMNS:
                raise ValueError(f"near: expected hash columns among {', '.join(HASH_COLUMNS)}, got {name!r}")
            if not 0 <= radius <= 24:
                raise ValueError(f"near: expected a Hamming radius 0-24 of 64 bits for {name!r}, got {radius}")
        if next(iter(near), None) in ABSTAINING:
            raise ValueError(f"near: the first hash is banded and must not abstain; put {', '.join(ABSTAINING)} "
                             "after phash or dhash")
        return near

    @field_validator("keep")
    @classmethod
    def _keys(cls, keep: list[str]) -> list[str]:
        for entry in keep:
            parts = entry.split()
            if not 1 <= len(parts) <= 2 or (len(parts) == 2 and parts[1] not in ("max", "min")):
                raise ValueError(f"keep: expected 'column' or 'column max|min', got {entry!r}")
        return keep

    def keep_keys(self, directions: Mapping[str, bool]) -> list[tuple[str, str]]:
        """(column, "max"|"min") pairs; ``directions``: higher_is_better of each scorer column."""
        keys = []
        for entry in self.keep:
            column, *given = entry.split()
            if given:
                keys.append((column, given[0]))
            elif column in directions:
                keys.append((column, "max" if directions[column] else "min"))
            elif column in _LARGEST:
                keys.append((column, "max"))
            elif column in _SMALLEST:
                keys.append((column, "min"))
            else:
                raise ValueError(
                    f"duplicates.keep: {column!r} is not a scorer column, so its direction is unknown. "
                    f"Fix: write '{column} max' or '{column} min'"
                )
        return keys
