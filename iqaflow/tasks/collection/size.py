"""Size outliers relative to the collection, with cleanvision's IQR rule.

cleanvision (``SizeProperty``, issue type ``odd_size``) flags an image whose sqrt(width * height) lies
outside [Q1 - k * IQR, Q3 + k * IQR] with ``iqr_factor`` k = 3.0 by default. We apply the same fence
to the shape as well: min(w/h, h/w), cleanvision's orientation-free aspect quantity (it thresholds
that one at 0.35 instead; a fence adapts to collections of panoramas or of scans). A row is a size
outlier when it is outside either fence. When half the collection shares one size the IQR is 0 and
every other size is outside the fence, as in cleanvision.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from iqaflow.schemas.results import COLLECTION_FIELDS, Col

IQR_FACTOR = 3.0  # cleanvision's default iqr_factor for odd_size
_TYPES = {f.name: f.type for f in COLLECTION_FIELDS}


def iqr_outside(values: np.ndarray, valid: np.ndarray, k: float = IQR_FACTOR) -> np.ndarray:
    """True where a valid value is outside the collection's [Q1 - k IQR, Q3 + k IQR] (numpy's linear quantiles)."""
    if not valid.any():
        return np.zeros(values.size, dtype=bool)
    q1, q3 = np.percentile(values[valid], [25, 75])
    low, high = q1 - k * (q3 - q1), q3 + k * (q3 - q1)
    return valid & ((values < low) | (values > high))


def size_columns(width: pa.Array, height: pa.Array, k: float = IQR_FACTOR) -> dict[str, pa.Array]:
    """aspect_ratio (w/h), megapixels (w*h/1e6) and size_outlier; null where a side is missing or 0."""
    w = np.asarray(width.to_numpy(zero_copy_only=False), dtype=np.float64)
    h = np.asarray(height.to_numpy(zero_copy_only=False), dtype=np.float64)
    valid = np.isfinite(w) & np.isfinite(h) & (w > 0) & (h > 0)
    w, h = np.where(valid, w, 1.0), np.where(valid, h, 1.0)
    shape = np.minimum(w / h, h / w)
    outlier = iqr_outside(np.sqrt(w * h), valid, k) | iqr_outside(shape, valid, k)
    return {
        Col.ASPECT_RATIO: pa.array(w / h, _TYPES[Col.ASPECT_RATIO], mask=~valid),
        Col.MEGAPIXELS: pa.array(w * h / 1e6, _TYPES[Col.MEGAPIXELS], mask=~valid),
        Col.SIZE_OUTLIER: pa.array(outlier, pa.bool_(), mask=~valid),
    }
