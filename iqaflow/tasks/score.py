"""Score one shard: read ahead, decode, batch per scorer, build an Arrow table, commit it atomically.

Failures are rows: a file that cannot be read or decoded, or a scorer that raises on one image,
gives that row an error code and leaves the rest of the shard untouched.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from iqaflow.models.base import Scorer
from iqaflow.models.colour import convert
from iqaflow.models.device import resolve_device
from iqaflow.models.registry import create_scorer
from iqaflow.models.weights import configure_store
from iqaflow.schemas.results import Col, ErrorCode, Status, results_schema
from iqaflow.tasks.decode import Decoded, DecodeFailure, decode
from iqaflow.tasks.plan import ShardPlan, read_shard_members
from iqaflow.tasks.read import Fetched, prefetch
from iqaflow.tasks.storage import atomic_write, open_fs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreSettings:
    models: tuple[str, ...]
    device: str = "cpu"
    batch_size: int = 32
    prefetch: int = 8
    weights: str | None = None
    allow_download: bool = False


@dataclass(frozen=True)
class ShardResult:
    shard_id: str
    index: int
    path: str
    rows: int
    errors: int
    skipped: bool
    seconds: float


# One instance per (scorer, device) per worker process: weights load once, reused across shards.
_SCORERS: dict[tuple[str, str], Scorer] = {}


def load_scorers(names: Sequence[str], device: str) -> list[Scorer]:
    out = []
    for name in names:
        key = (name, device)
        if key not in _SCORERS:
            _SCORERS[key] = create_scorer(name, device)
        out.append(_SCORERS[key])
    return out


def image_id(uri: str) -> str:
    return hashlib.blake2b(uri.encode(), digest_size=8).hexdigest()


@dataclass
class _Row:
    uri: str
    reference_uri: str | None
    fetched: Fetched
    decoded: Decoded | None = None
    error_code: str | None = None
    error_message: str | None = None
    decode_ms: float = 0.0
    score_ms: float | None = None
    scores: dict[str, float] = field(default_factory=dict)

    def fail(self, code: ErrorCode, message: str) -> None:
        if self.error_code is None:  # the first failure is the cause
            self.error_code, self.error_message = code.value, message[:1000]


def _decode_row(row: _Row) -> None:
    if row.fetched.error is not None:
        row.fail(ErrorCode.READ_ERROR, row.fetched.error)
        return
    t0 = time.perf_counter()
    try:
        row.decoded = decode(row.fetched.data or b"")
    except DecodeFailure as exc:
        row.fail(exc.code, exc.message)
    row.decode_ms = (time.perf_counter() - t0) * 1e3


def _score_batch(rows: list[_Row], scorers: Sequence[Scorer]) -> None:
    ok = [r for r in rows if r.decoded is not None]
    if not ok:
        return
    t0 = time.perf_counter()
    converted: dict[str, list[np.ndarray | None]] = {}
    for scorer in scorers:
        colour = scorer.info.colour
        if colour not in converted:
            converted[colour] = []
            for r in ok:
                try:
                    converted[colour].append(convert(r.decoded.pixels, colour))  # type: ignore[union-attr]
                except ValueError as exc:
                    r.fail(ErrorCode.DECODE_ERROR, str(exc))
                    converted[colour].append(None)
        pairs = [(r, img) for r, img in zip(ok, converted[colour], strict=True) if img is not None]
        if scorer.info.kind != "nr":
            continue  # FR scorers are paired with references in the FR path
        _apply(scorer, pairs)
    per_image = (time.perf_counter() - t0) * 1e3 / len(ok)
    for r in ok:
        r.score_ms = per_image


def _apply(scorer: Scorer, pairs: list[tuple[_Row, np.ndarray]]) -> None:
    outputs = scorer.info.outputs
    try:
        values = scorer.score([img for _, img in pairs])
        for (r, _), vals in zip(pairs, values, strict=True):
            r.scores.update(zip(outputs, (float(v) for v in vals), strict=True))
        return
    except Exception as exc:
        log.warning("scorer %s failed on a batch (%s); retrying image by image", scorer.info.name, exc)
    for r, img in pairs:  # isolate the image that breaks the scorer
        try:
            vals = scorer.score([img])[0]
            r.scores.update(zip(outputs, (float(v) for v in vals), strict=True))
        except Exception as exc:
            r.fail(ErrorCode.SCORE_ERROR, f"{scorer.info.name}: {type(exc).__name__}: {exc}")


def _batched(it: Iterator[Fetched], n: int) -> Iterator[list[Fetched]]:
    while chunk := list(islice(it, n)):
        yield chunk


def _to_table(rows: list[_Row], outputs: list[str], sid: str) -> pa.Table:
    schema = results_schema(outputs)
    cols: dict[str, list] = {f.name: [] for f in schema}
    for r in rows:
        d = r.decoded
        data = r.fetched.data
        cols[Col.IMAGE_ID].append(image_id(r.uri))
        cols[Col.URI].append(r.uri)
        cols[Col.REFERENCE_URI].append(r.reference_uri)
        cols[Col.BYTES].append(len(data) if data is not None else None)
        cols[Col.WIDTH].append(d.width if d else None)
        cols[Col.HEIGHT].append(d.height if d else None)
        cols[Col.FORMAT].append(d.format if d else None)
        cols[Col.MODE].append(d.mode if d else None)
        cols[Col.BIT_DEPTH].append(d.bit_depth if d else None)
        cols[Col.CONTENT_HASH].append(hashlib.sha256(data).hexdigest() if data is not None else None)
        cols[Col.STATUS].append(Status.ERROR.value if r.error_code else Status.OK.value)
        cols[Col.ERROR_CODE].append(r.error_code)
        cols[Col.ERROR_MESSAGE].append(r.error_message)
        cols[Col.SHARD_ID].append(sid)
        cols[Col.READ_MS].append(r.fetched.read_ms)
        cols[Col.DECODE_MS].append(r.decode_ms)
        cols[Col.SCORE_MS].append(r.score_ms)
        for name in outputs:
            v = r.scores.get(name)
            cols[name].append(None if v is None or not np.isfinite(v) else v)
    return pa.table(cols, schema=schema)


def score_members(
    uris: Sequence[str], references: Sequence[str | None], scorers: Sequence[Scorer], sid: str,
    batch_size: int = 32, window: int = 8,
) -> pa.Table:
    """Score a list of images into a results table (one row per input, in input order)."""
    outputs = [o for s in scorers for o in s.info.outputs]
    rows: list[_Row] = []
    ref_of = dict(zip(uris, references, strict=True))
    for chunk in _batched(prefetch(uris, window), batch_size):
        batch = [_Row(f.uri, ref_of[f.uri], f) for f in chunk]
        for r in batch:
            _decode_row(r)
        _score_batch(batch, scorers)
        for r in batch:
            r.decoded = None  # free pixels as soon as the batch is scored
        rows.extend(batch)
    return _to_table(rows, outputs, sid)


def score_shard(plan: ShardPlan, settings: ScoreSettings) -> ShardResult:
    """Score a planned shard and commit its Parquet file; a shard already committed is skipped."""
    t0 = time.perf_counter()
    fs, path = open_fs(plan.results_path)
    if fs.exists(path):
        with fs.open(path, "rb") as fh:
            meta = pq.ParquetFile(fh).metadata
        return ShardResult(plan.shard_id, plan.index, plan.results_path, meta.num_rows, -1, True, 0.0)
    members = read_shard_members(plan)
    if settings.weights or settings.allow_download:
        configure_store(settings.weights, settings.allow_download)
    scorers = load_scorers(settings.models, resolve_device(settings.device))
    table = score_members(
        members[Col.URI], members[Col.REFERENCE_URI], scorers, plan.shard_id,
        settings.batch_size, settings.prefetch,
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write(fs, path, buf.getvalue())
    errors = table.num_rows - sum(1 for s in table[Col.STATUS].to_pylist() if s == Status.OK.value)
    return ShardResult(
        plan.shard_id, plan.index, plan.results_path, table.num_rows, errors, False, time.perf_counter() - t0
    )
