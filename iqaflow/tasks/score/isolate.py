"""Score a batch; if the scorer raises, image by image, so only the input that breaks it fails.

Shared by the CPU path (numpy images, FR pairs) and the tensor path (device tensors).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from iqaflow.schemas.results import ErrorCode

log = logging.getLogger(__name__)

_X = TypeVar("_X")


class ScoredRow(Protocol):
    scores: dict[str, float]

    def fail(self, code: ErrorCode, message: str) -> None: ...


def score_isolated(
    name: str, outputs: Sequence[str], score: Callable[[list[_X]], Sequence[Sequence[float]]],
    items: Sequence[tuple[ScoredRow, _X]],
) -> None:
    """``score`` maps a list of inputs to one row of ``outputs`` values per input."""
    if not items:
        return
    try:
        values = score([x for _, x in items])
        for (r, _), vals in zip(items, values, strict=True):
            r.scores.update(zip(outputs, (float(v) for v in vals), strict=True))
        return
    except Exception as exc:
        log.warning("scorer %s failed on a batch (%s); retrying one by one", name, exc)
    for r, x in items:  # e.g. an image too small for ms_ssim, or one that breaks a network
        try:
            vals = score([x])[0]
            r.scores.update(zip(outputs, (float(v) for v in vals), strict=True))
        except Exception as exc:
            r.fail(ErrorCode.SCORE_ERROR, f"{name}: {type(exc).__name__}: {exc}")
