"""The scorer interface: metadata as data, ``setup`` loads once, ``score`` is pure maths.

Images reach a scorer already decoded and converted to the colour space it declares:
float32 arrays in [0, 1], ``(H, W)`` for ``gray`` and ``(H, W, 3)`` for ``rgb``. Sizes
differ between images, so a batch is a sequence, not a stacked tensor; scorers that need a
fixed size stack after applying their own size policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from iqaflow.models.info import ColourSpace, Kind, ScorerInfo, SizePolicy, WeightSpec

__all__ = ["ColourSpace", "Kind", "Scorer", "ScorerInfo", "SizePolicy", "WeightSpec"]

if TYPE_CHECKING:
    from iqaflow.models.weights import WeightsStore

Image = np.ndarray


class Scorer:
    """Base class. Subclasses set ``info`` and implement ``score`` (and ``setup`` if they hold weights)."""

    info: ClassVar[ScorerInfo]

    def __init__(self) -> None:
        self.device = "cpu"

    @classmethod
    def make_test_weights(cls, store: WeightsStore, seed: int = 0) -> None:
        """Write usable weights for every ``info.weights`` entry into ``store``, made here, not downloaded:
        a seeded init for networks, a fit on generated images for fitted statistics. Tests and the
        contract suite call it; scorers without weights need not override it."""
        if cls.info.weights:
            raise TypeError(f"{cls.__name__} needs weights and must implement make_test_weights")

    def setup(self, device: str = "cpu") -> None:
        """Load weights and move them to ``device``. Called once per worker process."""
        self.device = device

    def score(self, images: Sequence[Image]) -> np.ndarray:
        """Score a batch of NR images; returns float64 ``(N, len(info.outputs))``."""
        raise TypeError(f"{self.info.name} is a {self.info.kind.upper()} scorer; call score_pairs")

    def score_pairs(self, images: Sequence[Image], references: Sequence[Image]) -> np.ndarray:
        """Score distorted images against references (FR); returns ``(N, len(info.outputs))``."""
        raise TypeError(f"{self.info.name} is an NR scorer; call score")


class PerImageScorer(Scorer):
    """A classical scorer whose maths is one pure function of a single image."""

    def score_one(self, image: Image) -> tuple[float, ...]:
        raise TypeError(f"{type(self).__name__} must implement score_one")

    def score(self, images: Sequence[Image]) -> np.ndarray:
        out = np.empty((len(images), len(self.info.outputs)), dtype=np.float64)
        for i, image in enumerate(images):
            out[i] = self.score_one(image)
        return out
