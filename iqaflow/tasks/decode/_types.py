"""What every decoder returns or raises: ``Decoded`` pixels (with medical metadata) and ``DecodeFailure``.

Below the dispatch (the package) and the format decoders (``photo``, ``dicom``, ``nifti``), which all import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iqaflow.schemas.results import ErrorCode


@dataclass(frozen=True)
class MedicalMeta:
    """What a medical file tells about itself. Only ``modality`` and ``photometric`` are ever written out."""

    modality: str | None = None
    photometric: str | None = None
    # Never written: the keyed image id is derived from it (iqaflow.tasks.score.phi).
    instance_uid: str | None = field(default=None, repr=False)
    # Never written: patient name parts and ID, kept only to check paths and scrub messages.
    phi_tokens: tuple[str, ...] = field(default=(), repr=False)


@dataclass
class Decoded:
    pixels: np.ndarray  # (H, W) or (H, W, 3); uint8, uint16 or float32 (the middle slice of a volume)
    width: int
    height: int
    format: str
    mode: str
    bit_depth: int
    frames: np.ndarray | None = None  # (K, H, W[, 3]) slices chosen for per-slice scoring, or None
    n_frames: int = 1  # frames (DICOM) or slices (NIfTI) in the file
    medical: MedicalMeta | None = None
    # pixels' width / the original width: 1.0 unless the image was downscaled to max_pixels (width and
    # height above are always the original, displayed size).
    scale: float = 1.0
    dpi: float | None = None  # horizontal resolution the file declares (PNG pHYs, JPEG JFIF/EXIF, TIFF), if any


def slice_indices(n: int, k: int) -> list[int]:
    """``k`` slice indices spread evenly over the central 80% of ``n`` (the edges of a volume are mostly air)."""
    if k <= 1 or n <= 1:
        return [n // 2]
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0.1 * (n - 1), 0.9 * (n - 1), k)})


class DecodeFailure(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
