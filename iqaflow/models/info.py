"""What a scorer declares about itself, as data: its kind, direction, range, colour, size policy and weight files.

Below ``base`` (the interface) and ``weights`` (the store), which both read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["nr", "fr"]
ColourSpace = Literal["gray", "rgb"]
SizePolicy = Literal["native", "resize", "patches"]


@dataclass(frozen=True)
class WeightSpec:
    """A weight file a scorer needs from the weights store."""

    filename: str
    # Published weights pin their hash here; fitted or trained ones are checked against the
    # hash the weights store recorded when they were added (None).
    sha256: str | None = None


@dataclass(frozen=True)
class ScorerInfo:
    """Everything a pipeline, a gate or a report needs to know about a scorer without running it."""

    name: str
    kind: Kind
    higher_is_better: bool
    score_range: tuple[float | None, float | None]
    description: str
    colour: ColourSpace = "rgb"
    size_policy: SizePolicy = "native"
    batchable: bool = False
    weights: tuple[WeightSpec, ...] = ()
    # Extra columns beside the main score (e.g. exposure's clipped fractions). The main
    # score column is always ``name`` and comes first.
    extra_outputs: tuple[str, ...] = ()
    extra_descriptions: dict[str, str] = field(default_factory=dict)

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.name, *self.extra_outputs)

    def range_text(self) -> str:
        lo, hi = self.score_range
        return f"[{'-inf' if lo is None else f'{lo:g}'}, {'inf' if hi is None else f'{hi:g}'}]"
