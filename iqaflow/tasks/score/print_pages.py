"""Print inspection in the shard loop: each registered scan against its master gives page columns,
one row per defect (``runs/RUN_ID/defects/SHARD_ID.parquet``) and a heatmap with the defects boxed.

The maths is :mod:`iqaflow.models.printing.defects`; this module feeds it the shard's rows. Areas are
in mm2 at the master's resolution (the scan is brought into the master's frame): ``print_dpi`` from the
run config, else the master file's own dpi, else the page is a ``SCORE_ERROR`` row that says so.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from iqaflow.models.colour import convert
from iqaflow.models.printing.defects import Inspection, inspect, unregistered
from iqaflow.schemas.results import DEFECTS_SCHEMA, PRINT_COLUMNS, Col, ErrorCode
from iqaflow.tasks.io.storage import atomic_write, join, open_fs
from iqaflow.tasks.score.domain import HEATMAP_MAX_SIDE, DomainSettings, encode_png, write_pngs

Z_SHOWN, Z_FULL = 4.0, 12.0  # heatmap: |z| (noise sigmas) where colour starts, and where it saturates
_COLOURS = {"void": (255, 255, 0), "spot": (0, 255, 255), "streak": (255, 0, 255), "band": (0, 165, 255),
            "colour_shift": (0, 255, 0)}  # BGR; other types draw white


def _levels(*pixels: np.ndarray) -> list[np.ndarray]:
    """Decoded pixels as 8-bit levels, the inspector's unit; in colour when any of them is (a gray page
    against a colour master is compared in colour), alpha dropped."""
    space = "rgb" if any(p.ndim == 3 and p.shape[2] > 1 for p in pixels) else "gray"
    ready = (lambda p: p.ndim == 3 and p.shape[2] == 3) if space == "rgb" else (lambda p: p.ndim == 2)
    # 8-bit pixels already in that space are used as they are: no float copy of a page on the hot path.
    return [p if p.dtype == np.uint8 and ready(p) else (convert(p, space) * 255.0 + 0.5).astype(np.uint8)
            for p in pixels]


def inspect_row(row: Any, master_dpi: float | None, master_full: np.ndarray, settings: DomainSettings) -> None:
    """Set ``row.inspection`` after registration (or its failure); a missing dpi fails the row."""
    dpi = settings.print_dpi or master_dpi
    if dpi is None:
        row.fail(ErrorCode.SCORE_ERROR, f"print inspection: master {row.reference_uri} declares no dpi. Fix: set "
                 "print_dpi (the masters' resolution) in the run config")
        return
    try:
        if row.ref_pixels is None:  # registration failed: tell a blank scan from another page
            if row.error_code == ErrorCode.REGISTRATION_FAILED.value and row.decoded is not None:
                scan, master = _levels(row.decoded.pixels, master_full)
                row.inspection = unregistered(scan, master, dpi)
                row.error_message = f"{row.inspection.worst_type}: {row.error_message}"[:1000]
            return
        scan, master = _levels(row.decoded.pixels, row.ref_pixels)
        origin = row.align.origin if row.align is not None else (0, 0)
        row.inspection = inspect(scan, master, dpi, origin)
    except Exception as exc:  # one page's failure is its own row, never the shard's
        row.fail(ErrorCode.SCORE_ERROR, f"print inspection: {type(exc).__name__}: {exc}")


def page_columns(inspection: Inspection | None) -> dict[str, Any]:
    if inspection is None:
        return dict.fromkeys(PRINT_COLUMNS)
    finite = lambda v: float(v) if v is not None and math.isfinite(v) else None  # noqa: E731
    return {
        Col.DEFECT_COUNT: inspection.defect_count,
        Col.DEFECT_WORST_TYPE: inspection.worst_type,
        Col.DEFECT_WORST_AREA_MM2: finite(inspection.worst_area_mm2) if inspection.defect_count else None,
        Col.DEFECT_WORST_SEVERITY: finite(inspection.worst_severity) if inspection.defect_count else None,
        Col.DELTA_E_P95: finite(inspection.delta_e_p95),
        Col.DELTA_E_MAX: finite(inspection.delta_e_max),
    }


def defect_rows(rows: Sequence[Any], ids: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for r, image_id in zip(rows, ids, strict=True):
        for d in (r.inspection.defects if r.inspection is not None else ()):
            x, y, w, h = (int(v) for v in d.box)
            out.append({Col.IMAGE_ID: image_id, Col.URI: r.uri, "type": d.type, "x": x, "y": y, "w": w, "h": h,
                        "area_mm2": float(d.area_mm2), "severity": float(d.severity),
                        "density_change": float(d.density_change)})
    return out


def write_defects(defects: list[dict[str, Any]], settings: DomainSettings, shard_id: str) -> None:
    """The shard's defect rows, committed before its results file (which marks the shard done)."""
    if settings.defects_dir is None:
        return
    table = pa.Table.from_pylist(defects, schema=DEFECTS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    fs, folder = open_fs(settings.defects_dir)
    atomic_write(fs, join(folder, f"{shard_id}.parquet"), buf.getvalue())


def heatmap_png(master: np.ndarray, inspection: Inspection, origin: tuple[int, int]) -> bytes:
    """The master (gray) under the residual map (|z| over the noise floor, inferno), each defect boxed and named."""
    gray = master if master.ndim == 2 else cv2.cvtColor(master, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    scale = min(1.0, HEATMAP_MAX_SIDE / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    base = cv2.cvtColor(cv2.resize(gray, size, interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
    z = np.nan_to_num(inspection.z_map.astype(np.float32))
    z = cv2.resize(z, size, interpolation=cv2.INTER_NEAREST) if z.size > 1 else np.zeros(size[::-1], np.float32)
    heat = cv2.applyColorMap((np.clip(z / Z_FULL, 0.0, 1.0) * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    # Only residuals above the page's noise floor are coloured; the rest of the page stays plain gray.
    alpha = (0.75 * np.clip((z - Z_SHOWN) / (Z_FULL - Z_SHOWN), 0.0, 1.0))[..., None]
    out = (heat * alpha + base * (1.0 - alpha)).astype(np.uint8)
    for d in inspection.defects:
        x, y, bw, bh = d.box
        x0, y0 = round((x - origin[0]) * scale), round((y - origin[1]) * scale)
        x1, y1 = round((x - origin[0] + bw) * scale), round((y - origin[1] + bh) * scale)
        colour = _COLOURS.get(d.type, (255, 255, 255))
        cv2.rectangle(out, (x0, y0), (max(x0 + 1, x1), max(y0 + 1, y1)), colour, 2)
        cv2.putText(out, f"{d.type} {d.area_mm2:.1f}mm2", (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
    return encode_png(out)


def write_heatmaps(rows: Sequence[Any], ids: Sequence[str], settings: DomainSettings) -> None:
    """A heatmap for every inspected page with a defect (before the batch's pixels are freed)."""
    if settings.heatmap_dir is None:
        return

    def render(r: Any) -> bytes | None:
        if r.inspection is None or not r.inspection.defect_count or r.ref_pixels is None:
            return None
        origin = r.align.origin if r.align is not None else (0, 0)
        return heatmap_png(_levels(r.ref_pixels)[0], r.inspection, origin)

    write_pngs(rows, ids, settings.heatmap_dir, render)
