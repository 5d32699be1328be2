"""The final gate pass over a run: decide every image, check collection gates, write beside the results.

Final statuses live in the results dataset itself: the pass recomputes per-image and relative
decisions from the scores and rewrites (atomically, one shard file at a time) only the shards whose
``gate_status``/``gate_reasons`` or gate-file fingerprint differ. A reader of ``results/`` always
sees final statuses; a re-run with the same gate file rewrites nothing.

Collection gates run through Great Expectations (``iqaflow.tasks.gates.gx``); drift against a baseline
run is a Kolmogorov-Smirnov (or Wasserstein) distance computed here with scipy and recorded beside
the GX result in ``gates/report.json``.
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iqaflow.errors import ConfigError
from iqaflow.models.gate_binding import collection_hints, directions
from iqaflow.schemas.gates import GATES_KEY, DriftGate, GateFile, gate_name
from iqaflow.schemas.gx_suite import compile_suite, frame_columns, severity, with_ignored_reasons
from iqaflow.schemas.results import COLLECTION_FIELDS, GATE_FIELDS, Col, GateStatus
from iqaflow.tasks.gates.decide import decide, with_gate_columns
from iqaflow.tasks.io.storage import atomic_write, full_uri, join, open_fs


@dataclass(frozen=True)
class RunPaths:
    """A run's folder (``OUT/runs/RUN_ID``) and the places the gate pass reads and writes."""

    root: str
    results_dir: str

    @property
    def run_id(self) -> str:
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    @property
    def gates_dir(self) -> str:
        return join(self.root, "gates")

    @property
    def config_file(self) -> str:
        return join(self.root, "config.json")


def locate_run(results: str) -> RunPaths:
    """Accept a run folder or its ``results`` folder."""
    fs, path = open_fs(results)
    path = path.rstrip("/")
    if fs.isdir(join(path, "results")):
        return RunPaths(results.rstrip("/"), join(results, "results"))
    if fs.isdir(path) and fs.glob(join(path, "part-*.parquet")):
        return RunPaths(results.rstrip("/").rsplit("/", 1)[0], results.rstrip("/"))
    raise ConfigError(f"results {results!r}: expected a run folder (OUT/runs/RUN_ID) or its results folder with "
                      "part-*.parquet files. Fix: pass the path `iqaflow score` printed after 'results:'")


def list_shards(results_dir: str) -> list[str]:
    fs, path = open_fs(results_dir)
    return [full_uri(fs, p) for p in sorted(fs.glob(join(path, "part-*.parquet")))]


def _read_parquet(uri: str, columns: list[str] | None = None) -> tuple[pa.Table, pa.Schema]:
    """Only the wanted columns are fetched (ranged reads on object stores); returns the file schema too."""
    fs, path = open_fs(uri)
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        schema = pf.schema_arrow
        wanted = None if columns is None else [c for c in columns if c in schema.names]
        return pf.read(columns=wanted), schema


def read_columns(files: list[str], columns: list[str]) -> tuple[pa.Table, list[int], list[bytes | None]]:
    """The ``columns`` of every shard, concatenated; absent columns (e.g. gate columns) read as null.

    Also returns rows per file and each file's gate fingerprint."""
    gate_types = {f.name: f.type for f in (*GATE_FIELDS, *COLLECTION_FIELDS)}
    pieces, counts, prints = [], [], []
    for uri in files:
        table, schema = _read_parquet(uri, columns)
        names = schema.names
        for c in columns:
            if c not in names:
                table = table.append_column(pa.field(c, gate_types.get(c, pa.float64())),
                                            pa.nulls(table.num_rows, gate_types.get(c, pa.float64())))
        pieces.append(table.select(columns).replace_schema_metadata(None))
        counts.append(table.num_rows)
        prints.append((schema.metadata or {}).get(GATES_KEY))
    if not pieces:
        raise ConfigError("no results files (part-*.parquet) to gate. Fix: run `iqaflow score` first")
    return pa.concat_tables(pieces), counts, prints


def results_schema_of(run: RunPaths) -> pa.Schema:
    files = list_shards(run.results_dir)
    if not files:
        raise ConfigError(f"{run.results_dir}: no results files to gate. Fix: run `iqaflow score` first")
    return _read_parquet(files[0], [])[1]


@dataclass
class DecisionSummary:
    images: int
    counts: dict[str, int]
    reasons: dict[str, int]
    shards: int
    rewritten: int
    skipped_rules: list[str] = field(default_factory=list)


def _rewrite(uri: str, status: pa.Array, reasons: pa.Array, fingerprint: str) -> None:
    table, _ = _read_parquet(uri)
    buf = io.BytesIO()
    pq.write_table(with_gate_columns(table, status, reasons, fingerprint), buf, compression="zstd")
    fs, path = open_fs(uri)
    atomic_write(fs, path, buf.getvalue())


def _check_deferred(spec: GateFile, run: RunPaths) -> None:
    """A spec bound before the collection pass (for the shard task) is only usable here once its columns exist;
    absent columns would otherwise read as null and every deferred rule would fail as ``:missing``."""
    if not spec.deferred:
        return
    names = set(results_schema_of(run).names)
    hints = collection_hints()
    for rule in spec.image_rules:
        absent = [c for c in rule.used_columns() if c in hints and c not in names]
        if rule.name in spec.deferred and absent:
            raise ConfigError(f"{spec.source}: rule {rule.name!r} reads {absent[0]!r}, which the results in "
                              f"{run.results_dir} do not have. Fix: {hints[absent[0]]}")


def apply_decisions(run: RunPaths, spec: GateFile) -> DecisionSummary:
    """Recompute every image's status from its scores and commit shards whose gate columns changed."""
    files = list_shards(run.results_dir)
    _check_deferred(spec, run)
    used = [c for r in (*spec.image_rules, *spec.relative_rules) for c in r.used_columns()]
    columns = list(dict.fromkeys([Col.IMAGE_ID, *used, Col.GATE_STATUS, Col.GATE_REASONS]))
    table, counts, prints = read_columns(files, columns)
    decisions = decide(table, spec, directions())
    status, reasons = decisions.status(), decisions.reasons()

    fingerprint = spec.fingerprint()
    todo, offset = [], 0
    for uri, n, fp in zip(files, counts, prints, strict=True):
        s, r = status.slice(offset, n), reasons.slice(offset, n)
        old = table.slice(offset, n)
        offset += n
        same = fp == fingerprint.encode() and old[Col.GATE_STATUS].equals(pa.chunked_array([s])) and \
            old[Col.GATE_REASONS].equals(pa.chunked_array([r], pa.list_(pa.string())))
        if not same:
            todo.append((uri, s, r))
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda job: _rewrite(*job, fingerprint), todo))
    values = status.value_counts().to_pylist()
    counts_by = {s.value: 0 for s in GateStatus} | {v["values"]: int(v["counts"]) for v in values}
    return DecisionSummary(table.num_rows, counts_by, decisions.reason_counts(), len(files), len(todo),
                           spec.skipped)


def drift_distance(current: np.ndarray, baseline: np.ndarray, metric: str = "ks") -> float:
    """KS statistic (0 = same distribution, 1 = disjoint) or Wasserstein distance (column units)."""
    from scipy import stats

    current, baseline = current[~np.isnan(current)], baseline[~np.isnan(baseline)]
    if len(current) == 0 or len(baseline) == 0:
        return math.nan
    if metric == "ks":
        return float(stats.ks_2samp(current, baseline).statistic)
    return float(stats.wasserstein_distance(current, baseline))


@dataclass
class GateCheck:
    name: str
    type: str
    severity: str
    success: bool | None  # None: not checked (e.g. drift without a baseline)
    observed: Any
    expected: str
    detail: str = ""

    def observed_text(self) -> str:
        return f"{self.observed:.4g}" if isinstance(self.observed, float) else str(self.observed)


@dataclass
class CollectionReport:
    checks: list[GateCheck]
    validation_file: str
    data_docs: str

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if c.success is False and c.severity == "fail"]

    @property
    def warned(self) -> list[GateCheck]:
        return [c for c in self.checks if c.success is False and c.severity == "warn"]


def _observed(exp_type: str, result: dict[str, Any]) -> Any:
    if "observed_value" in result:
        obs = result["observed_value"]
        return obs["values"][0] if isinstance(obs, dict) and obs.get("values") else obs
    total = (result.get("element_count") or 0) - (result.get("missing_count") or 0)  # GX's mostly is of non-null
    bad = result.get("unexpected_count") or 0
    share = bad / total if total else 0.0
    return share if exp_type != "expect_column_values_to_be_between" else 1.0 - share


def _expected(kwargs: dict[str, Any], exp_type: str) -> str:
    if "mostly" in kwargs and exp_type != "expect_column_values_to_be_between":
        return f"<= {round(1 - kwargs['mostly'], 12):g}"
    if "quantile_ranges" in kwargs:
        lo, hi = kwargs["quantile_ranges"]["value_ranges"][0]
    else:
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    text = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
    return text + (f" for >= {kwargs['mostly']:g} of values" if "mostly" in kwargs else "")


def _write_tree(local: Path, dest: str) -> None:
    fs, root = open_fs(dest)
    for f in sorted(p for p in local.rglob("*") if p.is_file()):
        atomic_write(fs, join(root, f.relative_to(local).as_posix()), f.read_bytes())


def _drift_check(spec: GateFile, gate: DriftGate, run: RunPaths, current: pa.Table, baseline: str | None) -> GateCheck:
    source = baseline or gate.baseline
    check = GateCheck(gate_name(gate), gate.type, severity(spec, gate), None, None, f"{gate.metric} <= {gate.max:g}")
    if source is None:
        check.detail = "no baseline run given (--baseline or the gate's baseline:); not checked"
        return check
    base_run = locate_run(source)
    base_files = list_shards(base_run.results_dir)
    if gate.column not in (_read_parquet(base_files[0], [])[1].names if base_files else []):
        raise ConfigError(f"drift gate {check.name!r}: baseline {source!r} has no column {gate.column!r}. "
                          "Fix: use a baseline run scored with the same scorer, or drop the gate")
    base, _, _ = read_columns(base_files, [gate.column])
    dist = drift_distance(_floats(current[gate.column]), _floats(base[gate.column]), gate.metric)
    check.observed = None if math.isnan(dist) else dist
    check.success = None if math.isnan(dist) else dist <= gate.max
    check.detail = f"baseline {base_run.root}" if not math.isnan(dist) else "no values to compare; not checked"
    return check


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(col, pa.float64()).to_numpy().astype(np.float64)


def validate_collection(run: RunPaths, spec: GateFile, baseline: str | None = None) -> CollectionReport:
    """Run the GX suite over the results (only the needed columns), compute drift, write both beside."""
    from iqaflow.tasks.gates.gx import run_suite

    table, _, _ = read_columns(list_shards(run.results_dir), frame_columns(spec))
    expectations = compile_suite(spec)
    fs, gates_dir = open_fs(run.gates_dir)
    with tempfile.TemporaryDirectory(prefix="iqaflow-gx-") as tmp:
        frame = with_ignored_reasons(table.to_pandas(), spec)
        outcome = run_suite(frame, expectations, spec.name, run.run_id, Path(tmp))
        atomic_write(fs, join(gates_dir, "validation.json"), json.dumps(outcome.result, indent=2).encode())
        _write_tree(outcome.docs_root, join(run.gates_dir, "data_docs"))
    checks = []
    for res in outcome.result["results"]:
        cfg = res["expectation_config"]
        meta = cfg.get("meta") or {}
        checks.append(GateCheck(meta.get("gate", cfg["type"]), meta.get("gate_type", cfg["type"]),
                                meta.get("on_fail", spec.collection.on_fail), bool(res["success"]),
                                _observed(cfg["type"], res.get("result") or {}), _expected(cfg["kwargs"], cfg["type"])))
    for gate in spec.collection.gates:
        if isinstance(gate, DriftGate):
            if gate.column not in table.column_names:
                raise ConfigError(f"drift gate {gate_name(gate)!r}: no column {gate.column!r} in the results")
            checks.append(_drift_check(spec, gate, run, table, baseline))
    return CollectionReport(checks, join(run.gates_dir, "validation.json"),
                            join(run.gates_dir, "data_docs", "index.html"))


def write_report(path: str, report: Any) -> None:
    fs, p = open_fs(path)
    atomic_write(fs, p, json.dumps(asdict(report), indent=2, default=str).encode())
