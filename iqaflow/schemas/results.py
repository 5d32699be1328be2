"""Results and manifest tables.

Every column name used anywhere in iqaflow is defined here; other modules refer to
``Col.X`` and never spell a column as a string literal. The schema is versioned in the
Parquet metadata so readers can tell which layout a dataset was written with.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

import pyarrow as pa

# Bump when a column is renamed, removed or changes type (adding a scorer column does not).
SCHEMA_VERSION = "1"
SCHEMA_VERSION_KEY = b"iqaflow.schema_version"


class Col:
    """Fixed column names of the manifest and results tables."""

    IMAGE_ID = "image_id"
    URI = "uri"
    REFERENCE_URI = "reference_uri"
    BYTES = "bytes"
    MTIME = "mtime"
    ETAG = "etag"
    WIDTH = "width"
    HEIGHT = "height"
    FORMAT = "format"
    MODE = "mode"
    BIT_DEPTH = "bit_depth"
    CONTENT_HASH = "content_hash"
    STATUS = "status"
    ERROR_CODE = "error_code"
    ERROR_MESSAGE = "error_message"
    SHARD_ID = "shard_id"
    READ_MS = "read_ms"
    DECODE_MS = "decode_ms"
    SCORE_MS = "score_ms"
    # Medical files (DICOM, NIfTI): attributes that do not identify a patient; null for other images.
    MODALITY = "modality"  # DICOM (0008,0060), e.g. MR, CT; "NIfTI" volumes carry none
    PHOTOMETRIC = "photometric"  # DICOM photometric interpretation, e.g. MONOCHROME1, RGB
    FRAMES = "frames"  # frames (DICOM) or slices (NIfTI) in the file; 1 for a plain image
    # Print audits: registration of the scan to its master (null when the run does not align).
    ALIGN_INLIERS = "align_inliers"  # feature matches consistent with the homography
    ALIGN_RMSE = "align_rmse"  # RANSAC reprojection error of the inliers, master pixels
    ALIGN_CORRELATION = "align_correlation"  # ECC correlation coefficient after refinement
    ALIGN_OVERLAP = "align_overlap"  # fraction of the master's area covered by the scan
    HEATMAP_URI = "heatmap_uri"  # PNG of the page's defect map (print inspection, or local SSIM below the threshold)
    # Print inspection (run config print_inspect: true; iqaflow.models.printing.defects), per page.
    DEFECT_COUNT = "defect_count"  # defects found on the page (0: clean)
    DEFECT_WORST_TYPE = "defect_worst_type"  # void, spot, streak, band, smear, colour_shift, ... (null: none)
    DEFECT_WORST_AREA_MM2 = "defect_worst_area_mm2"  # the worst defect's area, mm2 at the master's dpi
    DEFECT_WORST_SEVERITY = "defect_worst_severity"  # its peak residual in noise sigmas (colour: its ΔE2000)
    DELTA_E_P95 = "delta_e_p95"  # CIEDE2000 of the scan against the master over inked regions: 95th percentile
    DELTA_E_MAX = "delta_e_max"  # ... and the worst 1 mm region
    # Scored pixels' width / the original width: 1.0, or < 1 when a huge image was downscaled to the run's
    # max_decode_pixels before scoring (width and height stay the original size).
    DECODE_SCALE = "decode_scale"
    # Fingerprints of the decoded pixels (iqaflow.models.fingerprints), written by the shard task.
    PIXEL_HASH = "pixel_hash"  # exact duplicates: the same pixels in any container or with other metadata
    PHASH = "phash"  # 64-bit perceptual hashes as signed int64 (the uint64 bit pattern)
    DHASH = "dhash"
    CHROMA_HASH = "chroma_hash"  # 64-bit colour layout, the near rule's verification (0: grayscale, abstains)
    # The collection pass over the whole run (iqaflow.tasks.collection): duplicate groups and size outliers.
    DUP_GROUP = "dup_group"  # id shared by the members of a duplicate group; null for images without duplicates
    DUPLICATE_OF = "duplicate_of"  # image_id of the group's kept image; null for kept images and singletons
    DUP_DISTANCE = "dup_distance"  # Hamming distance to the kept image's hash (0: exact); null if not a duplicate
    IS_DUPLICATE = "is_duplicate"  # true for every group member but the kept one
    ASPECT_RATIO = "aspect_ratio"  # width / height of the original image
    MEGAPIXELS = "megapixels"  # width * height / 1e6 of the original image
    SIZE_OUTLIER = "size_outlier"  # aspect ratio or pixel count outside the collection's IQR fences
    GATE_STATUS = "gate_status"  # present when the run has a gate file (iqaflow.schemas.gates)
    GATE_REASONS = "gate_reasons"


class Status(str, Enum):
    """Processing status of one image (quality decisions are separate gate columns)."""

    OK = "ok"
    ERROR = "error"


class GateStatus(str, Enum):
    """Quality decision of one image from the gate file; ordered pass < flag < reject."""

    PASS = "pass"
    FLAG = "flag"
    REJECT = "reject"


class ErrorCode(str, Enum):
    """Why an image has no (or incomplete) scores. Stable strings: gates and reports key on them."""

    READ_ERROR = "READ_ERROR"
    EMPTY_FILE = "EMPTY_FILE"
    NOT_AN_IMAGE = "NOT_AN_IMAGE"
    TRUNCATED = "TRUNCATED"
    DECODE_ERROR = "DECODE_ERROR"
    TOO_LARGE = "TOO_LARGE"  # over a decode ceiling (iqaflow.tasks.decode); smaller huge images are downscaled
    REFERENCE_MISSING = "REFERENCE_MISSING"
    REFERENCE_ERROR = "REFERENCE_ERROR"  # the reference exists but cannot be read or decoded
    SIZE_MISMATCH = "SIZE_MISMATCH"  # image and reference differ in size (no registration yet)
    SCORE_ERROR = "SCORE_ERROR"
    REGISTRATION_FAILED = "REGISTRATION_FAILED"  # the scan could not be aligned to its master
    PHI_IN_PATH = "PHI_IN_PATH"  # a DICOM's path holds its patient's name or ID (file names need de-identifying)


MANIFEST_SCHEMA = pa.schema(
    [
        pa.field(Col.URI, pa.string(), nullable=False),
        pa.field(Col.BYTES, pa.int64()),
        pa.field(Col.MTIME, pa.float64()),
        pa.field(Col.ETAG, pa.string()),
        pa.field(Col.REFERENCE_URI, pa.string()),
    ],
    metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode()},
)

_BASE_FIELDS: tuple[pa.Field, ...] = (
    pa.field(Col.IMAGE_ID, pa.string(), nullable=False),
    pa.field(Col.URI, pa.string(), nullable=False),
    pa.field(Col.REFERENCE_URI, pa.string()),
    pa.field(Col.BYTES, pa.int64()),
    pa.field(Col.WIDTH, pa.int32()),
    pa.field(Col.HEIGHT, pa.int32()),
    pa.field(Col.FORMAT, pa.string()),
    pa.field(Col.MODE, pa.string()),
    pa.field(Col.BIT_DEPTH, pa.int16()),
    pa.field(Col.CONTENT_HASH, pa.string()),
    pa.field(Col.STATUS, pa.string(), nullable=False),
    pa.field(Col.ERROR_CODE, pa.string()),
    pa.field(Col.ERROR_MESSAGE, pa.string()),
    pa.field(Col.SHARD_ID, pa.string(), nullable=False),
    pa.field(Col.READ_MS, pa.float32()),
    pa.field(Col.DECODE_MS, pa.float32()),
    pa.field(Col.SCORE_MS, pa.float32()),
    pa.field(Col.MODALITY, pa.string()),
    pa.field(Col.PHOTOMETRIC, pa.string()),
    pa.field(Col.FRAMES, pa.int32()),
    pa.field(Col.ALIGN_INLIERS, pa.int32()),
    pa.field(Col.ALIGN_RMSE, pa.float32()),
    pa.field(Col.ALIGN_CORRELATION, pa.float32()),
    pa.field(Col.ALIGN_OVERLAP, pa.float32()),
    pa.field(Col.HEATMAP_URI, pa.string()),
    pa.field(Col.DECODE_SCALE, pa.float32()),
    pa.field(Col.PIXEL_HASH, pa.string()),
    pa.field(Col.PHASH, pa.int64()),
    pa.field(Col.DHASH, pa.int64()),
    pa.field(Col.CHROMA_HASH, pa.int64()),
)

BASE_COLUMNS: frozenset[str] = frozenset(f.name for f in _BASE_FIELDS)

# Print inspection's page columns: outputs of a run with print_inspect (after the scorer columns).
PRINT_FIELDS: tuple[pa.Field, ...] = (
    pa.field(Col.DEFECT_COUNT, pa.int32()),
    pa.field(Col.DEFECT_WORST_TYPE, pa.string()),
    pa.field(Col.DEFECT_WORST_AREA_MM2, pa.float32()),
    pa.field(Col.DEFECT_WORST_SEVERITY, pa.float32()),
    pa.field(Col.DELTA_E_P95, pa.float32()),
    pa.field(Col.DELTA_E_MAX, pa.float32()),
)
PRINT_COLUMNS: tuple[str, ...] = tuple(f.name for f in PRINT_FIELDS)
_PRINT_BY_NAME = {f.name: f for f in PRINT_FIELDS}

# One row per defect of a print inspection, in runs/RUN_ID/defects/SHARD_ID.parquet, linked by image_id.
DEFECTS_SCHEMA = pa.schema([
    pa.field(Col.IMAGE_ID, pa.string(), nullable=False),
    pa.field(Col.URI, pa.string(), nullable=False),
    pa.field("type", pa.string(), nullable=False),
    pa.field("x", pa.int32()),  # bounding box in the master's pixels
    pa.field("y", pa.int32()),
    pa.field("w", pa.int32()),
    pa.field("h", pa.int32()),
    pa.field("area_mm2", pa.float32()),
    pa.field("severity", pa.float32()),
    pa.field("density_change", pa.float32()),  # % of full scale, + darker (colour: ΔE; planes, blurred text: mm)
])

# Added after the scorer columns by the collection pass (before the gate columns).
COLLECTION_FIELDS: tuple[pa.Field, ...] = (
    pa.field(Col.DUP_GROUP, pa.int64()),
    pa.field(Col.DUPLICATE_OF, pa.string()),
    pa.field(Col.DUP_DISTANCE, pa.int16()),
    pa.field(Col.IS_DUPLICATE, pa.bool_()),
    pa.field(Col.ASPECT_RATIO, pa.float32()),
    pa.field(Col.MEGAPIXELS, pa.float32()),
    pa.field(Col.SIZE_OUTLIER, pa.bool_()),
)
COLLECTION_COLUMNS: frozenset[str] = frozenset(f.name for f in COLLECTION_FIELDS)

# Added after the scorer columns when a run has gates; reasons are the failed rules' labels in rule order.
GATE_FIELDS: tuple[pa.Field, ...] = (
    pa.field(Col.GATE_STATUS, pa.string()),
    pa.field(Col.GATE_REASONS, pa.list_(pa.string())),
)
GATE_COLUMNS: frozenset[str] = frozenset(f.name for f in GATE_FIELDS)


def scorer_columns(outputs: Iterable[str]) -> list[pa.Field]:
    """One nullable float64 column per scorer output (null where the image could not be scored); print
    inspection's page columns keep their own types."""
    fields = []
    for name in outputs:
        if name in _PRINT_BY_NAME:
            fields.append(_PRINT_BY_NAME[name])
            continue
        if name in BASE_COLUMNS or name in GATE_COLUMNS or name in COLLECTION_COLUMNS:
            raise ValueError(f"scorer output {name!r} clashes with a fixed results column")
        fields.append(pa.field(name, pa.float64()))
    return fields


def results_schema(outputs: Iterable[str]) -> pa.Schema:
    """The results table for a run whose scorers produce ``outputs`` (in this order)."""
    return pa.schema(
        [*_BASE_FIELDS, *scorer_columns(outputs)],
        metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode()},
    )
