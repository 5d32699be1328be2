"""NIfTI-1/2 bytes (plain or gzipped) -> axial slices in [0, 1].

The volume is reoriented to the closest canonical (RAS+) orientation, so slices are axial (the
third voxel axis) whatever the acquisition, and shown with anterior at the top. A 4D series (fMRI,
DWI) is scored on its first volume; ``frames`` counts the slices of that volume. Intensities
(after ``scl_slope``/``scl_inter``) map linearly from [min, 99.9th percentile] of the volume onto
[0, 1], values above clipped: one range for the whole volume, so slices stay comparable, and a
few hot voxels do not crush the contrast (both estimated on every other voxel in x and y). Ratio
measures (SNR, CNR, FBER) do not depend on the scale.
"""

from __future__ import annotations

import zlib

import numpy as np

from iqaflow.schemas.results import ErrorCode
from iqaflow.tasks.decode._types import Decoded, DecodeFailure, MedicalMeta, slice_indices

# Decompressed size limit (bytes): a small gzip must not expand into the worker's whole memory.
MAX_VOLUME_BYTES = 4 << 30
RANGE_PERCENTILE = 99.9


def _gunzip(data: bytes) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
    out = inflater.decompress(data, MAX_VOLUME_BYTES)
    if inflater.unconsumed_tail:
        raise DecodeFailure(ErrorCode.TOO_LARGE, f"NIfTI volume larger than {MAX_VOLUME_BYTES >> 30} GiB unpacked")
    if not inflater.eof:
        raise DecodeFailure(ErrorCode.TRUNCATED, "gzipped NIfTI ends before its compressed stream does")
    return out


def _image(raw: bytes):  # noqa: ANN202 (a nibabel image)
    import nibabel as nib

    size = int.from_bytes(raw[:4], "little")
    if size not in (348, 540):
        size = int.from_bytes(raw[:4], "big")
    cls = nib.Nifti2Image if size == 540 else nib.Nifti1Image
    img = cls.from_bytes(raw)
    return nib.as_closest_canonical(img)


def _slice(dataobj: object, z: int, four_d: bool) -> np.ndarray:
    index = (slice(None), slice(None), z, 0) if four_d else (slice(None), slice(None), z)
    arr = np.asarray(dataobj[index], dtype=np.float64)  # type: ignore[index]
    return np.rot90(np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0))  # (y, x), anterior at the top


def decode_nifti(data: bytes, max_frames: int = 1) -> Decoded:
    """Decode a NIfTI file: the middle axial slice in ``pixels``; up to ``max_frames`` slices in ``frames``."""
    try:
        raw = _gunzip(data)
        img = _image(raw)
        shape = img.shape
        if len(shape) < 2 or len(shape) > 4 or (len(shape) == 4 and shape[3] < 1):
            raise DecodeFailure(ErrorCode.DECODE_ERROR, f"NIfTI of shape {shape}; expected a 2D, 3D or 4D image")
        four_d = len(shape) == 4
        n = int(shape[2]) if len(shape) >= 3 else 1
        dataobj = img.dataobj if len(shape) >= 3 else np.asarray(img.dataobj)[:, :, None]
        middle = n // 2
        chosen = sorted({middle, *slice_indices(n, max_frames)})
        slices = {z: _slice(dataobj, z, four_d) for z in chosen}
        volume = np.asarray(dataobj[::2, ::2, :, 0] if four_d else dataobj[::2, ::2, :], dtype=np.float64)
        volume = volume[np.isfinite(volume)]
        lo = float(volume.min()) if volume.size else 0.0
        hi = float(np.percentile(volume, RANGE_PERCENTILE)) if volume.size else 1.0
        bitpix = int(img.header["bitpix"])
    except DecodeFailure:
        raise
    except EOFError as exc:
        raise DecodeFailure(ErrorCode.TRUNCATED, f"NIfTI: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # nibabel raises many types on bad headers or short data
        code = ErrorCode.TRUNCATED if "size" in str(exc).lower() or "short" in str(exc).lower() else \
            ErrorCode.DECODE_ERROR
        raise DecodeFailure(code, f"NIfTI: {type(exc).__name__}: {exc}"[:1000]) from None
    hi = hi if hi > lo else lo + 1.0
    shown = {z: np.clip((s - lo) / (hi - lo), 0.0, 1.0).astype(np.float32) for z, s in slices.items()}
    pixels = shown[middle]
    frames = np.stack([shown[z] for z in slice_indices(n, max_frames)]) if max_frames > 1 and n > 1 else None
    return Decoded(
        pixels=pixels, width=int(pixels.shape[1]), height=int(pixels.shape[0]), format="NIfTI", mode="F",
        bit_depth=bitpix, frames=frames, n_frames=n, medical=MedicalMeta(),
    )
