"""The print job report: pass/fail for every page, then the worst pages with their defect heatmaps.

One self-contained HTML file (heatmaps inline as PNG data URIs, no scripts, every value escaped)
beside the run's results, for the operator at the press. A page passes when it was scored
without error and, with a gate file, its gate status is ``pass``; without one, when no heatmap
was written for it (its worst region's local SSIM is at or above ``heatmap_below``). Pages are ranked worst
first by the print inspection's defect count, else ``ssim_worst``, else ``ssim``, else the streak score. With
print inspection each failing page lists its defects (type, place, area in mm2, severity) from the run's
defects table.
"""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any

import pyarrow.dataset as ds

from iqaflow.schemas.results import Col, GateStatus, Status
from iqaflow.tasks.io.storage import atomic_write, open_fs

REPORT_NAME = "print_report.html"
WORST = 12
_RANK = ((Col.DEFECT_COUNT, False), ("ssim_worst", True), ("ssim", True), ("streaks", False))
_SHOWN = (Col.DEFECT_COUNT, Col.DEFECT_WORST_TYPE, Col.DEFECT_WORST_AREA_MM2, Col.DELTA_E_P95, "ssim", "ssim_worst",
          "psnr", "streaks", "banding", Col.ALIGN_CORRELATION, Col.ALIGN_RMSE)
_BOXES = (("ssim_worst", "worst region"), ("streak", "streak"), ("banding", "band"))


def _parts(folder: str) -> list[dict[str, Any]] | None:
    """Every row of the Parquet part files under ``folder``; None when there are no such files."""
    fs, path = open_fs(folder)
    files = sorted(f for f in fs.find(path) if f.endswith(".parquet")) if fs.exists(path) else []
    return ds.dataset(files, format="parquet", filesystem=fs).to_table().to_pylist() if files else None


def _rows(results_dir: str) -> list[dict[str, Any]]:
    rows = _parts(results_dir)
    if rows is None:
        raise FileNotFoundError(f"no results in {results_dir!r}; expected part files of a scoring run")
    return rows


def _defects(results_dir: str) -> dict[str, list[dict[str, Any]]]:
    """The run's defect rows by image id (``runs/RUN_ID/defects``, beside the results); empty without inspection."""
    out: dict[str, list[dict[str, Any]]] = {}
    for d in _parts(results_dir.rstrip("/").rsplit("/", 1)[0] + "/defects") or []:
        out.setdefault(d[Col.IMAGE_ID], []).append(d)
    return out


def _defect_list(defects: list[dict[str, Any]]) -> str:
    if not defects:
        return ""
    items = "".join(
        f"<li>{html.escape(d['type'])} at x {d['x']}, y {d['y']} ({d['w']}x{d['h']} px): "
        f"{d['area_mm2']:.1f} mm2, severity {d['severity']:.3g}</li>"
        for d in sorted(defects, key=lambda d: -d["severity"]))
    return f"<ul>{items}</ul>"


def page_passes(row: dict[str, Any]) -> bool:
    if row.get(Col.STATUS) != Status.OK.value:
        return False
    if row.get(Col.GATE_STATUS) is not None:
        return row[Col.GATE_STATUS] == GateStatus.PASS.value
    return row.get(Col.HEATMAP_URI) is None


def _rank_key(row: dict[str, Any]) -> tuple[int, float]:
    for col, higher_is_better in _RANK:
        v = row.get(col)
        if v is not None and math.isfinite(v):
            return 0, (v if higher_is_better else -v)
    return 1, 0.0


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))


def _boxes(row: dict[str, Any]) -> str:
    out = []
    for prefix, label in _BOXES:
        box = [row.get(f"{prefix}_{k}") for k in ("x0", "y0", "x1", "y1")]
        if all(isinstance(b, float) and math.isfinite(b) for b in box):
            out.append(f"{label} x {box[0]:.0f}-{box[2]:.0f}, y {box[1]:.0f}-{box[3]:.0f}")
    return "; ".join(out)


def _heatmap(uri: str | None) -> str:
    if not uri:
        return ""
    try:
        fs, path = open_fs(uri)
        data = fs.cat_file(path)
    except OSError as exc:
        return f"<p>heatmap unreadable: {html.escape(type(exc).__name__)}</p>"
    return f'<img alt="defect heatmap" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def render(rows: list[dict[str, Any]], heatmap_below: float | None, worst: int = WORST,
           defects: dict[str, list[dict[str, Any]]] | None = None) -> str:
    defects = defects or {}
    ranked = sorted(rows, key=_rank_key)
    passed = sum(page_passes(r) for r in rows)
    shown = [c for c in _SHOWN if any(r.get(c) is not None for r in rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("page", "result", *shown, "error", "defects"))
    lines = []
    for r in ranked:
        cells = [str(r[Col.URI]), "pass" if page_passes(r) else "FAIL", *(_fmt(r.get(c)) for c in shown),
                 _fmt(r.get(Col.ERROR_CODE)), _boxes(r)]
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    cards = []
    for r in [r for r in ranked if not page_passes(r)][:worst]:
        scores = ", ".join(f"{c} {_fmt(r.get(c))}" for c in shown if r.get(c) is not None)
        cards.append(f"<section><h3>{html.escape(str(r[Col.URI]))}</h3><p>{html.escape(scores)}</p>"
                     f"<p>{html.escape(_boxes(r))}</p>{_defect_list(defects.get(r[Col.IMAGE_ID], []))}"
                     f"{_heatmap(r.get(Col.HEATMAP_URI))}</section>")
    rule = "a gate or an error"
    if heatmap_below is not None:
        rule = f"worst-region local SSIM below {heatmap_below:g}, a gate or an error"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Print job report</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:13px}img{max-width:100%;border:1px solid #999}</style></head><body>"
        f"<h1>Print job report</h1><p>{passed} of {len(rows)} pages pass; {len(rows) - passed} fail "
        f"({html.escape(rule)}).</p>"
        f"<h2>Worst failing pages</h2>{''.join(cards) or '<p>none</p>'}"
        f"<h2>All pages, worst first</h2><table><tr>{head}</tr>{''.join(lines)}</table></body></html>"
    )


def write_print_report(results_dir: str, out: str, heatmap_below: float | None = None) -> str:
    """Write the report (HTML) and its page list (JSON, same name) and return the HTML's location."""
    rows = _rows(results_dir)
    fs, path = open_fs(out)
    defects = _defects(results_dir)
    atomic_write(fs, path, render(rows, heatmap_below, defects=defects).encode())
    pages = [{"uri": r[Col.URI], "image_id": r[Col.IMAGE_ID], "pass": page_passes(r),
              "heatmap": r.get(Col.HEATMAP_URI),
              "defects": [{k: d[k] for k in ("type", "x", "y", "w", "h", "area_mm2", "severity")}
                          for d in defects.get(r[Col.IMAGE_ID], [])]}
             for r in sorted(rows, key=_rank_key)]
    atomic_write(fs, path.rsplit(".", 1)[0] + ".json", json.dumps(pages, indent=1).encode())
    return out
