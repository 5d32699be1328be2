"""Blurred-text model (``iqaflow.models.printing.sharpness``) on synthetic text at 150 dpi: the prediction is a
text block under a scanner blur, the "scan" the same with part of it blurred further by a known sigma.

References: the linear model says the gain is (extra / TEMPLATE_MM)^2; on pixels (sigma ~1 px) it holds to
within 30 % from 0.1 to 0.3 mm extra blur (measured: 0.38, 0.76, 1.12, 1.71 for 0.25, 0.56, 1.0, 2.25). The
test takes the model at the template's own sigma within 25 %, monotonicity, and ~0 on the clean part.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from iqaflow.evaluation.print_sim import _text_block
from iqaflow.models.printing import sharpness as S

DPI = 150
MM = DPI / 25.4
SPLIT = 400  # columns from here on are blurred further


def _pair(extra_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(residual, prediction) of a 600 px square text page whose right third is blurred by ``extra_mm``."""
    m = np.full((600, 600, 3), 255, np.uint8)
    _text_block(m, np.random.default_rng(0), 20, 20, 580, 580, DPI, cap_mm=3.0)
    pred = cv2.GaussianBlur(m[..., 0].astype(np.float32), (0, 0), 0.6)
    scan = pred.copy()
    if extra_mm > 0:
        scan[:, SPLIT:] = cv2.GaussianBlur(pred, (0, 0), extra_mm * MM)[:, SPLIT:]
    return scan - pred, pred


def _median_gain(extra_mm: float, cols: slice) -> float:
    gain, measured = S.directional_gains(*_pair(extra_mm), MM)
    return float(np.median(gain[100:500, cols][measured[100:500, cols]]))


def test_gain_follows_the_blur_model() -> None:
    inside = [_median_gain(e, slice(450, 550)) for e in (0.1, 0.15, 0.2, 0.3)]
    assert all(a < b for a, b in zip(inside, inside[1:], strict=False)), inside
    assert abs(inside[2] - 1.0) <= 0.25, inside  # extra blur = the template's sigma
    assert abs(_median_gain(0.2, slice(50, 300))) <= 0.05  # the clean part


@pytest.mark.parametrize(("extra_mm", "found"), [(0.0, False), (0.05, False), (0.2, True), (0.3, True)])
def test_regions_only_where_blurred(extra_mm: float, found: bool) -> None:
    regions = S.find_blurred_text(*_pair(extra_mm), MM)
    assert bool(regions) == found, regions
    assert all(r.box[0] + r.box[2] > SPLIT - S.WINDOW_MM * MM / 2 for r in regions), regions


def test_a_single_edge_is_not_blurred_text() -> None:
    """A patch border blurred more than predicted has one direction of the template only: never measured."""
    m = np.full((600, 600), 255, np.float32)
    m[150:450, :] = 60.0
    pred = cv2.GaussianBlur(m, (0, 0), 0.6)
    scan = cv2.GaussianBlur(m, (0, 0), 0.6 + 0.3 * MM)
    assert S.find_blurred_text(scan - pred, pred, MM) == []
