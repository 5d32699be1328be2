"""DICOM bytes -> display pixels in [0, 1], reading only what the pixels and non-identifying metadata need.

The display pipeline of PS3.3 C.11: stored values -> Modality LUT (Rescale Slope/Intercept, or the
Modality LUT Sequence; per frame for enhanced multi-frame objects) -> VOI (the VOI LUT Sequence,
else Window Center/Width with the VOI LUT Function LINEAR, LINEAR_EXACT or SIGMOID, else the range
[min, 99.9th percentile] of the chosen frames) -> float32 in [0, 1]; MONOCHROME1 (stored minimum
shown white) is inverted, so both monochrome kinds read as displayed, 1 = white. Colour (RGB, YBR_*,
PALETTE COLOR) comes out as RGB.

Compressed transfer syntaxes decode through pydicom's plug-ins: JPEG 2000 (pylibjpeg-openjpeg), RLE
(pylibjpeg-rle), JPEG baseline (Pillow), JPEG Lossless and JPEG-LS (python-gdcm).

PHI: the file is parsed with pydicom's ``specific_tags``, so attributes not listed below (names,
dates, addresses, accession numbers...) are never read. Patient name and ID are read only into
``MedicalMeta.phi_tokens`` (hidden from repr) to check paths and scrub messages; pydicom's warnings
and log records, which can quote values, are suppressed while a file is read.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from iqaflow.schemas.results import ErrorCode
from iqaflow.tasks.decode._types import Decoded, DecodeFailure, MedicalMeta, slice_indices

_PIXEL_TAGS = (
    "PixelData", "FloatPixelData", "DoubleFloatPixelData", "Rows", "Columns", "SamplesPerPixel",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PhotometricInterpretation",
    "PlanarConfiguration", "NumberOfFrames", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "ModalityLUTSequence", "VOILUTSequence", "WindowCenter",
    "WindowWidth", "VOILUTFunction", "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData",
)
_META_TAGS = ("Modality", "SOPInstanceUID")
_PHI_TAGS = ("PatientName", "PatientID")  # read for path checks and scrubbing only; never output
READ_TAGS: tuple[str, ...] = _PIXEL_TAGS + _META_TAGS + _PHI_TAGS
# The largest frame decoded (pixels); larger is TOO_LARGE, like Pillow's decompression-bomb guard.
MAX_FRAME_PIXELS = 2 * 89_478_485
VOI_RANGE_PERCENTILE = 99.9
REDACTED = "[redacted]"


def phi_tokens(name: Any, patient_id: Any) -> tuple[str, ...]:
    """Strings that identify the patient: the whole name, its parts (3+ characters) and the ID."""
    out: list[str] = []
    text = str(name or "").strip()
    if text:
        out.append(text)
        out.extend(p for p in re.split(r"[\^=\s]+", text) if len(p) >= 3)
    pid = str(patient_id or "").strip()
    if pid:
        out.append(pid)
    return tuple(dict.fromkeys(out))


def scrub(text: str, tokens: Sequence[str]) -> str:
    """``text`` with every patient token (any case) replaced by ``[redacted]``."""
    for tok in sorted(tokens, key=len, reverse=True):
        text = re.sub(re.escape(tok), REDACTED, text, flags=re.IGNORECASE)
    return text


def _first(value: Any) -> float:
    return float(value[0]) if isinstance(value, Sequence) and not isinstance(value, str) else float(value)


def _functional_item(ds: Any, frame: int, sequence: str) -> Any | None:
    """The per-frame item of ``sequence`` for ``frame``, else the shared one (enhanced multi-frame objects)."""
    for groups, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(groups)
        inner = seq[index].get(sequence) if seq is not None and len(seq) > index else None
        if inner:
            return inner[0]
    return None


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """The VOI window of PS3.3 C.11.2.1.2 onto [0, 1]."""
    x = values.astype(np.float64, copy=False)
    function = function.upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-12)))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / max(width, 1e-12) + 0.5, 0.0, 1.0)
    width = max(width, 1.0)
    return np.clip((x - (center - 0.5)) / max(width - 1.0, 1e-12) + 0.5, 0.0, 1.0)


def _modality(raw: np.ndarray, ds: Any, frame: int) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    item = _functional_item(ds, frame, "PixelValueTransformationSequence")
    if item is not None and "RescaleSlope" in item:
        return raw.astype(np.float64) * float(item.RescaleSlope) + float(item.get("RescaleIntercept", 0.0))
    return np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)


def _voi(values: np.ndarray, ds: Any, frame: int) -> np.ndarray | None:
    """Values through the file's VOI LUT or window onto [0, 1]; None when the file has neither."""
    from pydicom.pixels import apply_voi

    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        descriptor = ds.VOILUTSequence[0].LUTDescriptor
        bits = int(descriptor[2]) if int(descriptor[2]) in range(8, 17) else 16
        out = np.asarray(apply_voi(np.rint(values).astype(np.int64), ds, 0), dtype=np.float64)
        return np.clip(out / float(2**bits - 1), 0.0, 1.0)
    item = _functional_item(ds, frame, "FrameVOILUTSequence")
    source = item if item is not None and "WindowCenter" in item else ds
    if "WindowCenter" in source and "WindowWidth" in source:
        function = str(source.get("VOILUTFunction", ds.get("VOILUTFunction", "LINEAR")) or "LINEAR")
        return window(values, _first(source.WindowCenter), _first(source.WindowWidth), function)
    return None


def _display(frames: list[np.ndarray], raws: list[np.ndarray], ds: Any, indices: list[int]) -> list[np.ndarray]:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("SamplesPerPixel", 1)) > 1 or photometric == "PALETTE COLOR":
        return [_colour(raw, ds) for raw in raws]
    out: list[np.ndarray | None] = [_voi(v, ds, i) for v, i in zip(frames, indices, strict=True)]
    if any(o is None for o in out):  # no VOI: one range for all chosen frames, so slices stay comparable
        sample = np.concatenate([f[::4, ::4].ravel() for f in frames])
        sample = sample[np.isfinite(sample)]
        lo = float(sample.min()) if sample.size else 0.0
        hi = float(np.percentile(sample, VOI_RANGE_PERCENTILE)) if sample.size else 1.0
        hi = hi if hi > lo else lo + 1.0
        out = [o if o is not None else np.clip((f - lo) / (hi - lo), 0.0, 1.0)
               for o, f in zip(out, frames, strict=True)]
    result = [np.nan_to_num(o, nan=0.0).astype(np.float32) for o in out if o is not None]
    if photometric == "MONOCHROME1":
        result = [1.0 - r for r in result]
    return result


def _colour(raw: np.ndarray, ds: Any) -> np.ndarray:
    from pydicom.pixels import apply_color_lut

    if str(ds.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR":
        raw = np.asarray(apply_color_lut(raw, ds))
    if np.issubdtype(raw.dtype, np.integer):
        top = 255.0 if raw.max(initial=0) <= 255 else float(2 ** int(ds.get("BitsStored", 16)) - 1)
        return np.clip(raw.astype(np.float32) / np.float32(top), 0.0, 1.0)
    return np.clip(raw.astype(np.float32), 0.0, 1.0)


def _read(data: bytes) -> Any:
    import pydicom
    from pydicom import config

    previous = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    try:
        return pydicom.dcmread(io.BytesIO(data), specific_tags=list(READ_TAGS))
    finally:
        config.settings.reading_validation_mode = previous


def _code_for(exc: Exception) -> ErrorCode:
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "truncat" in text or "end of file" in text or "expected length" in text \
            or "less than expected" in text:
        return ErrorCode.TRUNCATED
    return ErrorCode.DECODE_ERROR


def decode_dicom(data: bytes, max_frames: int = 1) -> Decoded:
    """Decode a DICOM file's bytes: the middle frame in ``pixels``; up to ``max_frames`` frames in ``frames``."""
    tokens: tuple[str, ...] = ()
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.CRITICAL)  # its records can quote element values
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = _read(data)
            tokens = phi_tokens(ds.get("PatientName"), ds.get("PatientID"))
            if not any(t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                raise DecodeFailure(ErrorCode.NOT_AN_IMAGE, "DICOM file without pixel data (e.g. a DICOMDIR, "
                                    "structured report or presentation state); nothing to score")
            rows, cols = int(ds.Rows), int(ds.Columns)
            if rows * cols > MAX_FRAME_PIXELS:
                raise DecodeFailure(ErrorCode.TOO_LARGE, f"DICOM frame of {cols}x{rows} pixels exceeds the "
                                    f"{MAX_FRAME_PIXELS} pixel limit")
            n = int(ds.get("NumberOfFrames", 1) or 1)
            middle = n // 2
            chosen = sorted({middle, *slice_indices(n, max_frames)}) if max_frames > 1 else [middle]
            raws = [_frame(ds, i, n) for i in chosen]
            values = [_modality(r, ds, i) if r.ndim == 2 else r for r, i in zip(raws, chosen, strict=True)]
            shown = _display(values, raws, ds, chosen)
    except DecodeFailure as exc:
        raise DecodeFailure(exc.code, scrub(exc.message, tokens)) from None
    except Exception as exc:  # pydicom and its plug-ins raise many types on bad or unsupported data
        raise DecodeFailure(_code_for(exc), scrub(f"DICOM: {type(exc).__name__}: {exc}", tokens)[:1000]) from None
    finally:
        pydicom_log.setLevel(level)
    pixels = shown[chosen.index(middle)]
    frames = None
    if max_frames > 1 and n > 1:
        keep = [chosen.index(i) for i in slice_indices(n, max_frames)]
        frames = np.stack([shown[k] for k in keep])
    meta = MedicalMeta(
        modality=str(ds.get("Modality") or "") or None,
        photometric=str(ds.get("PhotometricInterpretation") or "") or None,
        instance_uid=str(ds.get("SOPInstanceUID") or "") or None,
        phi_tokens=tokens,
    )
    return Decoded(
        pixels=pixels, width=cols, height=rows, format="DICOM", mode="RGB" if pixels.ndim == 3 else "F",
        bit_depth=int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16), frames=frames, n_frames=n,
        medical=meta,
    )


def _frame(ds: Any, index: int, n: int) -> np.ndarray:
    from pydicom.pixels import pixel_array

    arr = np.asarray(pixel_array(ds, index=index) if n > 1 else ds.pixel_array)
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):  # a single-frame read that still has a frame axis
        arr = arr[0]
    return arr
