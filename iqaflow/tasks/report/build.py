"""The run report: one self-contained HTML file (plots and thumbnails inline) beside a run's results.

Sections: run summary, per-scorer histograms with the gate file's per-image thresholds drawn on them,
pass/flag/reject counts per folder (the image's parent folder relative to the source root), the N
worst images as thumbnails with scores and reasons, an error breakdown, the gate report (collection
checks, routing), drift against a baseline run, and (when the run has the collection pass's columns or
hygiene scores) duplicate groups and hygiene counts. Works on local and object-store run folders.
"""

from __future__ import annotations

import json
import logging
import posixpath
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iqaflow.schemas.results import BASE_COLUMNS, COLLECTION_COLUMNS, GATE_COLUMNS, Col, GateStatus, Status
from iqaflow.tasks.io.storage import atomic_write, join, open_fs
from iqaflow.tasks.report.dups import Duplicates, duplicates_section
from iqaflow.tasks.report.images import Image, thumbnails
from iqaflow.tasks.report.plots import Threshold, drift_png, histogram_png

log = logging.getLogger(__name__)

DEFAULT_WORST = 24
MAX_PLOTS = 16
MAX_FOLDERS = 200
ERROR_EXAMPLES = 3
_SEVERITY = {GateStatus.REJECT.value: 2, GateStatus.FLAG.value: 1}
@dataclass
class ReportData:
    run_id: str
    run_root: str
    results_dir: str
    generated: str
    summary: dict[str, Any]
    source_root: str
    columns: list[str]
    histograms: list[tuple[str, str]] = field(default_factory=list)  # (column, base64 png)
    thresholds: list[Threshold] = field(default_factory=list)
    gate_file: str | None = None
    gated: bool = False
    status_counts: dict[str, int] = field(default_factory=dict)
    folders: list[dict[str, Any]] = field(default_factory=list)
    folders_total: int = 0
    worst: list[Image] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    gate_report: dict[str, Any] | None = None
    baseline: str | None = None
    drift: list[dict[str, Any]] = field(default_factory=list)
    duplicates: Duplicates | None = None  # None: the run has neither collection columns nor hygiene scores
    notes: list[str] = field(default_factory=list)


_READ = (Col.URI, Col.IMAGE_ID, Col.STATUS, Col.ERROR_CODE, Col.ERROR_MESSAGE, Col.FORMAT, Col.MODE, Col.GATE_STATUS,
         Col.GATE_REASONS, *sorted(COLLECTION_COLUMNS))


def read_results(results_dir: str) -> pa.Table:
    """What the report needs of every shard (fixed columns + scores), concatenated; columns a shard lacks
    (gate columns before gating) read as null. Object stores serve only those column chunks."""
    from iqaflow.tasks.gates.gate import list_shards

    def one(uri: str) -> pa.Table:
        fs, path = open_fs(uri)
        with fs.open(path, "rb") as fh:
            pf = pq.ParquetFile(fh)
            names = pf.schema_arrow.names
            wanted = [c for c in names if c in _READ] + score_columns(pf.schema_arrow)
            return pf.read(columns=wanted).replace_schema_metadata(None)

    files = list_shards(results_dir)
    with ThreadPoolExecutor(max_workers=8) as pool:
        tables = list(pool.map(one, files))
    if not tables:
        from iqaflow.errors import ConfigError

        raise ConfigError(f"{results_dir}: no results files (part-*.parquet). Fix: run `iqaflow score` first, "
                          "and pass the run folder it printed")
    return pa.concat_tables(tables, promote_options="default")


def score_columns(schema: pa.Schema) -> list[str]:
    fixed = BASE_COLUMNS | GATE_COLUMNS | COLLECTION_COLUMNS
    return [f.name for f in schema if f.name not in fixed and pa.types.is_floating(f.type)]


def gate_thresholds(spec: Any) -> list[Threshold]:
    """``column <op> number`` bounds in the gate file's per-image rules (inside and/or/not too)."""
    from iqaflow.schemas import gate_expr as ge

    out: list[Threshold] = []
    flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}

    def walk(node: Any, rule: Any) -> None:
        if isinstance(node, ge.BoolOp):
            for item in node.items:
                walk(item, rule)
        elif isinstance(node, ge.Not):
            walk(node.item, rule)
        elif isinstance(node, ge.Compare):
            left, right, op = node.left, node.right, node.op
            if isinstance(left, ge.Literal) and isinstance(right, ge.Column):
                left, right, op = right, left, flip[op]
            if isinstance(left, ge.Column) and isinstance(right, ge.Literal) and right.kind == "number":
                out.append(Threshold(left.name, float(right.value), op, rule.reason_key, rule.outcome))

    for rule in spec.image_rules:
        walk(rule.ast(), rule)
    return out


def _read_json(uri: str) -> dict[str, Any] | None:
    fs, path = open_fs(uri)
    try:
        with fs.open(path, "rb") as fh:
            value = json.loads(fh.read())
    except FileNotFoundError:
        return None
    return value if isinstance(value, dict) else None


def _folders(rel: list[str], status: list[str], errors: list[bool]) -> tuple[list[dict[str, Any]], int]:
    """Gate decisions and processing errors per folder (an unreadable image is usually also rejected)."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, s, err in zip(rel, status, errors, strict=True):
        c = counts[posixpath.dirname(name) or "."]
        c[s] += 1
        c["error"] += err
    rows = []
    for folder, c in counts.items():
        total = c["pass"] + c["flag"] + c["reject"] + c["ungated"]
        rows.append({"folder": folder, "images": total, "pass": c["pass"], "flag": c["flag"],
                     "reject": c["reject"], "ungated": c["ungated"], "error": c["error"],
                     "reject_rate": c["reject"] / total if total else 0.0})
    rows.sort(key=lambda r: (-r["reject_rate"], -r["images"], r["folder"]))
    return rows[:MAX_FOLDERS], len(rows)


def _badness(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Mean oriented percentile rank over the scorers' main columns: 0 best, 1 worst; NaN when unknown."""
    from iqaflow.models.registry import all_scorers

    higher = {name: cls.info.higher_is_better for name, cls in all_scorers().items()}
    ranks = []
    for col in columns:
        if col not in higher:
            continue
        v = pc.cast(table[col], pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        ok = np.isfinite(v)
        if ok.sum() < 2:
            continue
        r = np.full(v.shape, np.nan)
        order = np.argsort(np.argsort(v[ok], kind="stable"), kind="stable")
        r[ok] = order / (ok.sum() - 1)
        ranks.append(1.0 - r if higher[col] else r)
    if not ranks:
        return np.full(table.num_rows, np.nan)
    with np.errstate(all="ignore"):
        stacked = np.vstack(ranks)
        counts = np.isfinite(stacked).sum(axis=0)
        return np.where(counts > 0, np.nansum(stacked, axis=0) / np.maximum(counts, 1), np.nan)


def _worst(table: pa.Table, columns: list[str], rel: list[str], n: int, phi_safe: bool = True) -> list[Image]:
    """The ``n`` worst readable images with thumbnails; medical images in a PHI-safe run get none."""
    if n <= 0 or table.num_rows == 0:
        return []
    ok = np.asarray(pc.equal(table[Col.STATUS], Status.OK.value).to_numpy(zero_copy_only=False), dtype=bool)
    gates = table[Col.GATE_STATUS].to_pylist()
    reasons = table[Col.GATE_REASONS].to_pylist()
    severity = np.array([_SEVERITY.get(g or "", 0) for g in gates])
    n_reasons = np.array([len(r or []) for r in reasons])
    bad = np.nan_to_num(_badness(table, columns), nan=-1.0)
    order = [i for i in np.lexsort((bad, n_reasons, severity))[::-1] if ok[i]][:n]
    picked = table.take(pa.array(order, pa.int64())) if order else table.slice(0, 0)
    rows = picked.select([Col.URI, *columns]).to_pylist()
    images = [Image(r[Col.URI], rel[i], gates[i] or "ungated", list(reasons[i] or []),
                    {c: r[c] for c in columns}) for i, r in zip(order, rows, strict=True)]
    formats = picked[Col.FORMAT].to_pylist() if Col.FORMAT in picked.column_names else [None] * len(images)
    thumbnails(images, formats, phi_safe)
    return images


def _errors(table: pa.Table, rel: list[str]) -> list[dict[str, Any]]:
    codes = table[Col.ERROR_CODE].to_pylist()
    messages = table[Col.ERROR_MESSAGE].to_pylist()
    by_code: dict[str, dict[str, Any]] = {}
    for i, code in enumerate(codes):
        if code is None:
            continue
        entry = by_code.setdefault(code, {"code": code, "count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < ERROR_EXAMPLES:
            entry["examples"].append({"name": rel[i], "message": (messages[i] or "")[:200]})
    return sorted(by_code.values(), key=lambda e: (-e["count"], e["code"]))


def _floats(table: pa.Table, col: str) -> np.ndarray:
    return pc.cast(table[col], pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)


def _drift(table: pa.Table, columns: list[str], baseline: str) -> tuple[list[dict[str, Any]], str]:
    from iqaflow.tasks.gates.gate import drift_distance, locate_run

    base_run = locate_run(baseline)
    base = read_results(base_run.results_dir)
    rows = []
    for col in [c for c in columns if c in base.column_names][:MAX_PLOTS]:
        cur, ref = _floats(table, col), _floats(base, col)
        fc, fr = cur[np.isfinite(cur)], ref[np.isfinite(ref)]
        rows.append({
            "column": col, "ks": drift_distance(cur, ref, "ks"), "wasserstein": drift_distance(cur, ref, "wasserstein"),
            "mean": float(fc.mean()) if fc.size else None, "baseline_mean": float(fr.mean()) if fr.size else None,
            "median": float(np.median(fc)) if fc.size else None,
            "baseline_median": float(np.median(fr)) if fr.size else None,
            "n": int(fc.size), "baseline_n": int(fr.size), "plot": drift_png(col, cur, ref),
        })
    return rows, base_run.root


def _summary(table: pa.Table, stored: dict[str, Any] | None) -> dict[str, Any]:
    if stored:
        return stored
    ok = int(pc.sum(pc.equal(table[Col.STATUS], Status.OK.value)).as_py() or 0)
    return {"images": table.num_rows, "ok": ok, "errors": table.num_rows - ok}


def build_report(results: str, gates: str | None = None, baseline: str | None = None,
                 worst: int = DEFAULT_WORST) -> ReportData:
    """Gather everything the report shows. ``gates``/``baseline`` default to the run's own config."""
    from iqaflow.schemas.gates import load_gate_file
    from iqaflow.tasks.gates.gate import locate_run
    from iqaflow.tasks.gates.route import source_root
    from iqaflow.tasks.gates.router import configured_source

    run = locate_run(results)
    table = read_results(run.results_dir)
    for f in (Col.GATE_STATUS, Col.GATE_REASONS):
        if f not in table.column_names:
            typ = pa.string() if f == Col.GATE_STATUS else pa.list_(pa.string())
            table = table.append_column(f, pa.nulls(table.num_rows, typ))
    config = _read_json(run.config_file) or {}
    columns = score_columns(table.schema)
    uris = table[Col.URI].to_pylist()
    root = source_root(uris, configured_source(run))
    prefix = root.rstrip("/") + "/" if root else ""
    rel = [u[len(prefix):] if prefix and u.startswith(prefix) else u for u in uris]
    errors = [s != Status.OK.value for s in table[Col.STATUS].to_pylist()]
    gate_status = table[Col.GATE_STATUS].to_pylist()
    status = [g or "ungated" for g in gate_status]
    data = ReportData(
        run_id=run.run_id, run_root=run.root, results_dir=run.results_dir,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=_summary(table, _read_json(join(run.root, "summary.json"))), source_root=root, columns=columns,
        gated=any(g is not None for g in gate_status), status_counts=dict(Counter(status)),
    )
    data.gate_report = _read_json(join(run.gates_dir, "report.json"))
    data.gate_file = gates or config.get("gates") or (data.gate_report or {}).get("gate_file")
    spec = None
    if data.gate_file:
        try:
            spec = load_gate_file(data.gate_file)
            data.thresholds = gate_thresholds(spec)
        except Exception as exc:
            data.notes.append(f"gate file {data.gate_file} not read ({exc}); histograms have no thresholds")
    status_arr = np.array(status, dtype=object)
    masks = {s: status_arr == s for s in ("pass", "flag", "reject", "ungated")}
    for col in columns[:MAX_PLOTS]:
        values = _floats(table, col)
        groups = {s: values[m] for s, m in masks.items()}
        data.histograms.append((col, histogram_png(col, groups, [t for t in data.thresholds if t.column == col])))
    if len(columns) > MAX_PLOTS:
        data.notes.append(f"{len(columns) - MAX_PLOTS} more score columns are not plotted")
    data.folders, data.folders_total = _folders(rel, status, errors)
    data.worst = _worst(table, columns, rel, worst, bool(config.get("phi_safe", True)))
    data.errors = _errors(table, rel)
    data.duplicates = duplicates_section(table, rel, spec, bool(config.get("phi_safe", True)))
    data.baseline = baseline or config.get("baseline")
    if data.baseline:
        try:
            data.drift, data.baseline = _drift(table, columns, data.baseline)
        except Exception as exc:
            data.notes.append(f"baseline {data.baseline} not compared ({type(exc).__name__}: {exc})")
    return data


def report_path(results: str) -> str:
    """Default place of the report: ``report.html`` in the run folder."""
    from iqaflow.tasks.gates.gate import locate_run

    return join(locate_run(results).root, "report.html")


def write_report(results: str, out: str | None = None, gates: str | None = None, baseline: str | None = None,
                 worst: int = DEFAULT_WORST) -> str:
    """Build and write the HTML report (one PUT on object stores); returns where it went."""
    from iqaflow.tasks.report.html import render

    data = build_report(results, gates, baseline, worst)
    target = out or join(data.run_root, "report.html")
    fs, path = open_fs(target)
    atomic_write(fs, path, render(data).encode("utf-8"))
    log.info("report for run %s: %s", data.run_id, target)
    return target
