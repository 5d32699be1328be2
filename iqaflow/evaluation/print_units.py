"""Units and the truth record of the print simulator (below ``print_sim`` and its defect catalogue)."""

from __future__ import annotations

from dataclasses import dataclass, field


def mm_px(mm: float, dpi: float) -> float:
    """Millimetres -> pixels at ``dpi``."""
    return mm * dpi / 25.4


def px_mm2(n_px: float, dpi: float) -> float:
    """A pixel count -> mm² at ``dpi``."""
    return n_px * (25.4 / dpi) ** 2


@dataclass(frozen=True)
class DefectTruth:
    """One defect drawn on a printed page. ``bbox`` is (x, y, w, h) in master px.

    ``strength`` depends on the type: density change fraction (void 1.0, spot/streak/band), CIEDE2000 ΔE
    (colour_shift), plane shift in mm (misregistration), blur or drag length in mm (blurred_text, smear),
    1.0 for wrong_page/missing_page. ``grade`` names the size/strength bin the benchmark reports by."""

    type: str
    bbox: tuple[int, int, int, int]
    area_mm2: float
    strength: float
    grade: str
    params: dict[str, float | str | bool] = field(default_factory=dict)
