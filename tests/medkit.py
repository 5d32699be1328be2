"""Helpers for medical tests: DICOM files written with pydicom, NIfTI with nibabel, MR-like phantoms."""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "PHI-123456"


def dicom_bytes(pixels: np.ndarray, transfer_syntax: str | None = None, modality: str = "MR",
                photometric: str = "MONOCHROME2", bits_stored: int = 12, **attrs: Any) -> bytes:
    """A DICOM Part 10 file (MR image storage) of ``pixels`` (rows, cols), (frames, rows, cols) or (rows, cols, 3)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.PatientBirthDate, ds.InstitutionName = "19700101", "General Hospital of Jane Doe"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    colour = pixels.ndim == 3 and pixels.shape[-1] == 3
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else photometric
    if colour:
        ds.PlanarConfiguration = 0
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, min(bits_stored, bits), min(bits_stored, bits) - 1
    ds.PixelRepresentation = 1 if np.issubdtype(pixels.dtype, np.signedinteger) else 0
    if (pixels.ndim == 3 and not colour) or pixels.ndim == 4:
        ds.NumberOfFrames = pixels.shape[0]
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    if transfer_syntax is not None:
        ds.compress(transfer_syntax)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def nifti_bytes(volume: np.ndarray, affine: np.ndarray | None = None, gz: bool = False) -> bytes:
    import gzip

    import nibabel as nib

    data = nib.Nifti1Image(volume, np.eye(4) if affine is None else affine).to_bytes()
    return gzip.compress(data) if gz else data


def phantom(size: int = 128, mu: float = 0.5, sigma: float = 0.02, contrast: float = 0.0,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An MR-like magnitude slice: a disc of mean ``mu`` (its right half ``mu + contrast``) with Gaussian
    noise ``sigma``, in air whose magnitude noise is Rayleigh with the same sigma. Returns (image, disc)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    disc = (yy - c) ** 2 + (xx - c) ** 2 <= (0.3 * size) ** 2
    signal = np.where(disc, mu + np.where(xx > c, contrast, 0.0), 0.0)
    real = signal + rng.normal(0, sigma, signal.shape)
    imag = rng.normal(0, sigma, signal.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float64), disc


def rayleigh_std(sigma: float) -> float:
    return sigma * math.sqrt((4 - math.pi) / 2)


def gdcm_transcode(data: bytes, syntax: str, folder: str) -> bytes:
    """``data`` re-encoded by GDCM ("jpeg-lossless" or "jpeg-ls"): pydicom has no encoder for these."""
    import os

    import gdcm

    src, dst = os.path.join(folder, "in.dcm"), os.path.join(folder, "out.dcm")
    with open(src, "wb") as fh:
        fh.write(data)
    reader = gdcm.ImageReader()
    reader.SetFileName(src)
    if not reader.Read():
        raise ValueError("GDCM could not read the test file")
    ts = {"jpeg-lossless": gdcm.TransferSyntax.JPEGLosslessProcess14_1, "jpeg-ls": gdcm.TransferSyntax.JPEGLSLossless}
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(ts[syntax]))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise ValueError(f"GDCM could not encode {syntax}")
    writer = gdcm.ImageWriter()
    writer.SetFileName(dst)
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise ValueError(f"GDCM could not write {syntax}")
    with open(dst, "rb") as fh:
        return fh.read()
