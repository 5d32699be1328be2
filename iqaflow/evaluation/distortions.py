"""Graded synthetic distortions: the catalogue behind ranking pre-training and the synthetic benchmark.

Each distortion has five levels ordered from mild to severe, so level ``k`` of any type is known to
be worse than level ``k - 1`` of the same type on the same content (level 0 is the pristine image).
That ordering is the only label RankIQA-style pre-training and the synthetic benchmark need.
The functions are pure: uint8 RGB in, uint8 RGB out; the random ones take a seeded generator.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from iqaflow.evaluation import synth


def webp(img: np.ndarray, quality: float) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="WEBP", quality=int(quality), method=4)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def contrast(img: np.ndarray, factor: float) -> np.ndarray:
    """Scale deviations from the mean intensity by ``factor`` (< 1 flattens the image)."""
    x = img.astype(np.float32)
    mean = x.mean(axis=(0, 1), keepdims=True)
    return np.clip(np.rint((x - mean) * factor + mean), 0, 255).astype(np.uint8)


def colour_cast(img: np.ndarray, amount: float, direction: np.ndarray | None = None) -> np.ndarray:
    """Shift the white balance: channel gains ``1 + amount * direction`` (unit vector, default warm)."""
    d = np.array([1.0, 0.0, -1.0]) / np.sqrt(2.0) if direction is None else direction
    gains = (1.0 + amount * d).astype(np.float32)
    return np.clip(np.rint(img.astype(np.float32) * gains), 0, 255).astype(np.uint8)


def pixelate(img: np.ndarray, factor: float) -> np.ndarray:
    """Downscale by ``factor`` (area average), then back up with nearest neighbour: visible blocks."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


Apply = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class GradedDistortion:
    """A distortion type and its levels, mild to severe; ``apply(img, level_value, rng)``."""

    name: str
    levels: tuple[float, ...]
    apply: Apply

    def at(self, img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
        """The image at ``level`` (1-based; 0 returns the image itself)."""
        return img if level == 0 else self.apply(img, self.levels[level - 1], rng)


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    v -= v.mean()  # a pure cast: no overall brightness change
    return v / (np.linalg.norm(v) + 1e-12)


GRADED: tuple[GradedDistortion, ...] = (
    GradedDistortion("blur", (0.7, 1.3, 2.0, 3.0, 4.5), lambda i, v, r: synth.blur(i, v)),
    GradedDistortion("noise", (5.0, 10.0, 18.0, 28.0, 42.0),
                     lambda i, v, r: synth.noise(i, v, seed=int(r.integers(1 << 31)))),
    GradedDistortion("jpeg", (45, 25, 14, 8, 4), lambda i, v, r: synth.jpeg(i, int(v))),
    GradedDistortion("webp", (40, 20, 10, 4, 0), lambda i, v, r: webp(i, v)),
    GradedDistortion("contrast", (0.7, 0.5, 0.35, 0.22, 0.12), lambda i, v, r: contrast(i, v)),
    GradedDistortion("darken", (0.65, 0.45, 0.3, 0.2, 0.12), lambda i, v, r: synth.exposure(i, v)),
    GradedDistortion("brighten", (1.35, 1.7, 2.1, 2.7, 3.5), lambda i, v, r: synth.exposure(i, v)),
    GradedDistortion("colour", (0.1, 0.2, 0.3, 0.42, 0.56), lambda i, v, r: colour_cast(i, v, _random_direction(r))),
    GradedDistortion("pixelate", (1.5, 2.0, 3.0, 4.0, 6.0), lambda i, v, r: pixelate(i, v)),
)
GRADED_BY_NAME: dict[str, GradedDistortion] = {d.name: d for d in GRADED}
N_LEVELS = 5


def validate_names(value: list[str]) -> list[str]:
    """A pydantic field validator's body: unknown names raise ValueError with the catalogue's names."""
    from iqaflow.errors import ConfigError

    try:
        select(value)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("distortions: ")) from None
    return value


def select(names: Sequence[str] | None) -> tuple[GradedDistortion, ...]:
    """The catalogue entries named (all when ``names`` is empty or None); unknown names are errors."""
    from iqaflow.errors import ConfigError

    if not names:
        return GRADED
    unknown = [n for n in names if n not in GRADED_BY_NAME]
    if unknown:
        raise ConfigError(
            f"distortions: unknown type(s) {unknown}; expected names from {list(GRADED_BY_NAME)}. "
            "Fix: pick from that list or leave it empty for all"
        )
    return tuple(GRADED_BY_NAME[n] for n in names)
