"""The synthetic benchmark: does a scorer see each distortion type grow worse level by level?

From any folder of pristine images, every catalogue distortion (``iqaflow.evaluation.distortions``) is applied
at its five levels. Per type, the benchmark is the mean over contents of the SRCC between the
scorer's signed score (higher = better) and minus the level (0 = pristine), so 1.0 means the scorer
orders every level of that type correctly on every image, 0 means it does not see the type at all.
FR scorers get the pristine image as their reference. Image generation here is pure; running the
scorers is the tasks layer's job.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from iqaflow.evaluation.distortions import N_LEVELS, GradedDistortion


@dataclass(frozen=True)
class ContentSet:
    """One pristine image and its distorted versions; ``levels[i]`` is 0 for the pristine copies."""

    content: str
    reference: np.ndarray
    images: list[np.ndarray]
    distortions: list[str]
    levels: list[int]


def fit_size(img: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale (area) so the longer side is at most ``max_side``; keeps benchmark cost bounded."""
    import cv2

    h, w = img.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return img
    s = max_side / max(h, w)
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def content_sets(
    pristine: Sequence[tuple[str, np.ndarray]], distortions: Sequence[GradedDistortion], seed: int = 0
) -> Iterator[ContentSet]:
    """Per pristine image: one pristine row per distortion type, then its five levels (seeded)."""
    for c, (name, ref) in enumerate(pristine):
        rng = np.random.default_rng([seed, c])
        images, names, levels = [], [], []
        for d in distortions:
            for level in range(N_LEVELS + 1):
                images.append(d.at(ref, level, rng))
                names.append(d.name)
                levels.append(level)
        yield ContentSet(name, ref, images, names, levels)


def per_type_srcc(
    scores: np.ndarray, distortions: Sequence[str], levels: Sequence[int], contents: Sequence[str]
) -> dict[str, float]:
    """Mean over contents of SRCC(score, -level) per distortion type; NaN scores drop their row.

    A content whose scores are all equal for a type contributes 0 (the scorer saw nothing).
    """
    s = np.asarray(scores, np.float64)
    d, lv, c = np.asarray(distortions), np.asarray(levels), np.asarray(contents)
    out: dict[str, float] = {}
    for name in dict.fromkeys(distortions):
        values = []
        for content in np.unique(c[d == name]):
            m = (d == name) & (c == content) & np.isfinite(s)
            if m.sum() < 3:
                continue
            if np.ptp(s[m]) == 0:
                values.append(0.0)
                continue
            values.append(float(stats.spearmanr(s[m], -lv[m]).statistic))
        out[name] = float(np.mean(values)) if values else float("nan")
    return out
