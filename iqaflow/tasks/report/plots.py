"""Report figures: matplotlib (Agg) PNGs returned as base64 text, and JPEG thumbnails from image bytes.

Pure functions of arrays and bytes; the report module decides what to draw and where it goes.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

STATUS_COLOURS = {"pass": "#4daf4a", "flag": "#ff7f00", "reject": "#e41a1c", "ungated": "#4477aa"}
OUTCOME_COLOURS = {"flag": "#b35806", "reject": "#b2182b"}


@dataclass(frozen=True)
class Threshold:
    """A vertical line on a histogram: a per-image rule's bound on one column."""

    column: str
    value: float
    op: str
    rule: str
    outcome: str  # flag | reject

    @property
    def label(self) -> str:
        return f"{self.rule}: {self.column} {self.op} {self.value:g} ({self.outcome})"


def _pyplot():  # noqa: ANN202 - the pyplot module
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> str:  # noqa: ANN001 - a matplotlib Figure
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _bins(values: list[np.ndarray], extra: list[float]) -> np.ndarray:
    finite = np.concatenate([v[np.isfinite(v)] for v in values] + [np.asarray(extra, dtype=np.float64)])
    if finite.size == 0:
        return np.linspace(0.0, 1.0, 11)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, 41)


def histogram_png(column: str, by_status: dict[str, np.ndarray], thresholds: list[Threshold]) -> str:
    """Histogram of one score column, stacked by gate status, with the gate thresholds as dashed lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 2.9))
    groups = [(s, v[np.isfinite(v)]) for s, v in by_status.items() if np.isfinite(v).any()]
    bins = _bins([v for _, v in groups], [t.value for t in thresholds])
    if groups:
        ax.hist([v for _, v in groups], bins=bins, stacked=True, label=[s for s, _ in groups],
                color=[STATUS_COLOURS.get(s, "#999999") for s, _ in groups])
    for t in thresholds:
        ax.axvline(t.value, color=OUTCOME_COLOURS.get(t.outcome, "#333333"), linestyle="--", linewidth=1.4,
                   label=t.label)
    ax.set_title(column, fontsize=10)
    ax.set_ylabel("images", fontsize=8)
    ax.tick_params(labelsize=7)
    if groups or thresholds:
        ax.legend(fontsize=6, loc="best", frameon=False)
    fig.tight_layout()
    return _png(fig)


def drift_png(column: str, current: np.ndarray, baseline: np.ndarray) -> str:
    """Overlaid density histograms of this run and the baseline run for one column."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 2.6))
    cur, base = current[np.isfinite(current)], baseline[np.isfinite(baseline)]
    bins = _bins([cur, base], [])
    if base.size:
        ax.hist(base, bins=bins, density=True, histtype="stepfilled", alpha=0.35, color="#888888", label="baseline")
    if cur.size:
        ax.hist(cur, bins=bins, density=True, histtype="step", linewidth=1.6, color="#4477aa", label="this run")
    ax.set_title(column, fontsize=10)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _png(fig)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Any decoded array (uint8/uint16/float, gray or RGB) scaled to uint8 for display."""
    if pixels.dtype == np.uint8:
        return pixels
    arr = pixels.astype(np.float64)
    lo, hi = np.nanpercentile(arr, 0.5), np.nanpercentile(arr, 99.5)
    if not np.isfinite(lo) or hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return (np.clip((arr - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)


def thumbnail_jpeg(data: bytes, size: int = 160) -> str:
    """Base64 JPEG, longest side ``size``, from an image file's bytes (decoded as the scorers decode it)."""
    from PIL import Image

    from iqaflow.tasks.decode import decode

    pixels = to_uint8(decode(data).pixels)
    if pixels.ndim == 3 and pixels.shape[2] not in (1, 3):
        pixels = pixels[..., :3]
    img = Image.fromarray(pixels.squeeze())
    img = img.convert("RGB")
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")
