"""Score one shard: read ahead, decode, batch per scorer, build an Arrow table, commit it atomically.

Failures are rows: a file that cannot be read or decoded, or a scorer that raises on one image,
gives that row an error code and leaves the rest of the shard untouched.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from iqaflow.models.base import ColourSpace, Scorer
from iqaflow.models.colour import convert
from iqaflow.models.device import resolve_device
from iqaflow.models.fingerprints import fingerprints
from iqaflow.models.registry import create_scorer, set_model_registry_uri
from iqaflow.models.weights import configure_store
from iqaflow.schemas.gates import GateFile
from iqaflow.schemas.results import PRINT_COLUMNS, Col, ErrorCode, Status, results_schema
from iqaflow.tasks.decode import DEFAULT_MAX_PIXELS, DecodeFailure, decode
from iqaflow.tasks.gates.decide import apply_image_gates
from iqaflow.tasks.io.plan import ShardPlan, read_shard_members
from iqaflow.tasks.io.read import Fetched, prefetch
from iqaflow.tasks.io.storage import atomic_write, open_fs
from iqaflow.tasks.score import print_pages
from iqaflow.tasks.score.domain import (
    DomainSettings,
    align_row,
    medical_image_id,
    phi_in_path,
    score_slices,
    write_heatmaps,
)
from iqaflow.tasks.score.gpu import GpuDecode, TensorPath
from iqaflow.tasks.score.isolate import score_isolated
from iqaflow.tasks.score.malloc import keep_freed_memory, release_freed_memory
from iqaflow.tasks.score.row import Row

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreSettings:
    models: tuple[str, ...]
    device: str = "cpu"
    batch_size: int = 32
    prefetch: int = 8
    weights: str | None = None
    allow_download: bool = False
    gates: GateFile | None = None  # per-image rules applied as the shard is written (bound to the run's columns)
    registry_uri: str | None = None  # MLflow registry for mlflow:models:/ scorers (workers resolve them too)
    domain: DomainSettings = field(default_factory=DomainSettings)  # volumes, PHI, registration, heatmaps
    max_decode_pixels: int | None = DEFAULT_MAX_PIXELS  # larger images are downscaled (iqaflow.tasks.decode)
    gpu_decode: GpuDecode = "auto"  # JPEGs straight to tensors on the scorers' device (iqaflow.tasks.score.gpu)


@dataclass(frozen=True)
class ShardResult:
    shard_id: str
    index: int
    path: str
    rows: int
    errors: int
    skipped: bool
    seconds: float


_FREED = np.empty((0, 0), dtype=np.uint8)
_DECODE_POOL: ThreadPoolExecutor | None = None


def _decode_pool() -> ThreadPoolExecutor:
    """One decode pool per worker process, sized to the cores a worker can use."""
    global _DECODE_POOL
    if _DECODE_POOL is None:
        n = int(os.environ.get("IQAFLOW_DECODE_THREADS", "0")) or min(8, len(os.sched_getaffinity(0)))
        _DECODE_POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="iqaflow-decode")
    return _DECODE_POOL

# One instance per (scorer, device) per worker process: weights load once, reused across shards.
_SCORERS: dict[tuple[str, str], Scorer] = {}


def load_scorers(names: Sequence[str], device: str) -> list[Scorer]:
    keep_freed_memory()  # once per worker process: Dask's malloc settings halve the scorers' speed
    out = []
    for name in names:
        key = (name, device)
        if key not in _SCORERS:
            _SCORERS[key] = create_scorer(name, device)
        out.append(_SCORERS[key])
    return out


def image_id(uri: str) -> str:
    return hashlib.blake2b(uri.encode(), digest_size=8).hexdigest()


def _decode_row(row: Row) -> None:
    if row.fetched.error is not None:
        row.fail(ErrorCode.READ_ERROR, row.fetched.error)
        return
    t0 = time.perf_counter()
    try:
        row.decoded = decode(row.fetched.data or b"", row.domain.volume_slices, row.max_pixels)
        row.fingerprint = fingerprints(row.decoded.pixels)  # in the decode threads, while the pixels are warm
    except DecodeFailure as exc:
        row.fail(exc.code, exc.message)
    if phi_in_path(row.uri, row.decoded, row.domain):
        row.fail(ErrorCode.PHI_IN_PATH, "the file's path holds its patient's name or ID (from the DICOM header). "
                 "Fix: de-identify file names before intake, e.g. name files by a pseudonym")
    if row.decoded is not None and row.needs_reference:
        _decode_reference(row)
    row.decode_ms = (time.perf_counter() - t0) * 1e3


def _decode_reference(row: Row) -> None:
    """Decode the row's reference; any problem fails only its FR columns (NR scores are still computed)."""
    ref, where = row.ref_fetched, f"reference {row.reference_uri}"
    if ref is None or not row.reference_uri:
        row.fail(ErrorCode.REFERENCE_MISSING, "no reference image found for this image (same relative path or "
                 "stem under reference_root, or the manifest's reference_uri); FR scores are empty")
        return
    if ref.error is not None:
        missing = ref.error.startswith(FileNotFoundError.__name__)
        row.fail(ErrorCode.REFERENCE_MISSING if missing else ErrorCode.REFERENCE_ERROR, f"{where}: {ref.error}")
        return
    try:
        decoded = decode(ref.data or b"", max_pixels=row.max_pixels)
    except DecodeFailure as exc:
        row.fail(ErrorCode.REFERENCE_ERROR, f"{where}: {exc.code.value}: {exc.message}")
        return
    img = row.decoded
    if img is None:
        return
    if row.domain.align != "none":
        align_row(row, decoded.pixels, row.domain)
        if row.domain.print_inspect:
            print_pages.inspect_row(row, decoded.dpi, decoded.pixels, row.domain)
        return
    if (decoded.width, decoded.height) != (img.width, img.height):
        row.fail(ErrorCode.SIZE_MISMATCH, f"image is {img.width}x{img.height} but {where} is "
                 f"{decoded.width}x{decoded.height}; FR scores need the same size. Fix: set align (tiles) to register "
                 "scans to their masters")
        return
    if decoded.pixels.shape[:2] != img.pixels.shape[:2]:  # same original size is downscaled alike; never expected
        row.fail(ErrorCode.SIZE_MISMATCH, f"image and {where} are both {img.width}x{img.height} but decoded to "
                 f"{img.pixels.shape[1]}x{img.pixels.shape[0]} and {decoded.pixels.shape[1]}x"
                 f"{decoded.pixels.shape[0]} pixels (downscaled to max_decode_pixels differently)")
        return
    row.ref_pixels = decoded.pixels
    if row.domain.print_inspect:
        print_pages.inspect_row(row, decoded.dpi, decoded.pixels, row.domain)


def _reference_pairs(
    pairs: list[tuple[Row, np.ndarray]], colour: ColourSpace
) -> list[tuple[Row, np.ndarray, np.ndarray]]:
    """(row, image, reference) for rows whose reference is usable, the reference in ``colour``."""
    out = []
    for r, img in pairs:
        if r.ref_pixels is None:
            continue
        if colour not in r.ref_converted:
            try:
                r.ref_converted[colour] = convert(r.ref_pixels, colour)
            except ValueError as exc:
                r.fail(ErrorCode.REFERENCE_ERROR, f"reference {r.reference_uri}: {exc}")
                r.ref_pixels = None
                continue
        out.append((r, img, r.ref_converted[colour]))
    return out


def _score_batch(rows: list[Row], scorers: Sequence[Scorer]) -> None:
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
        if scorer.info.kind == "fr":
            _apply_fr(scorer, _reference_pairs(pairs, colour))
            continue
        _apply(scorer, pairs)
    per_image = (time.perf_counter() - t0) * 1e3 / len(ok)
    for r in ok:
        r.score_ms = per_image


def _apply(scorer: Scorer, pairs: list[tuple[Row, np.ndarray]]) -> None:
    score_isolated(scorer.info.name, scorer.info.outputs, scorer.score, pairs)


def _apply_fr(scorer: Scorer, triples: list[tuple[Row, np.ndarray, np.ndarray]]) -> None:
    def score(xs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        return scorer.score_pairs([img for img, _ in xs], [ref for _, ref in xs])

    score_isolated(scorer.info.name, scorer.info.outputs, score, [(r, (img, ref)) for r, img, ref in triples])


_T = TypeVar("_T")


def _batched(it: Iterator[_T], n: int) -> Iterator[list[_T]]:
    while chunk := list(islice(it, n)):
        yield chunk


def _fetch_pairs(
    uris: Sequence[str], references: Sequence[str | None], window: int, with_references: bool
) -> Iterator[tuple[Fetched, str | None, Fetched | None]]:
    """(image, reference uri, reference) in input order; images and references share one bounded read-ahead."""
    if not with_references:
        for f, ref in zip(prefetch(uris, window), references, strict=True):
            yield f, ref, None
        return
    flat = (u for uri, ref in zip(uris, references, strict=True) for u in ((uri, ref) if ref else (uri,)))
    stream = prefetch(flat, window)
    for ref in references:
        img = next(stream)
        yield img, ref, (next(stream) if ref else None)


def _row_id(r: Row) -> str:
    return medical_image_id(r.uri, r.decoded, r.domain) or image_id(r.uri)


def _to_table(rows: list[Row], outputs: list[str], sid: str) -> pa.Table:
    schema = results_schema(outputs)
    cols: dict[str, list] = {f.name: [] for f in schema}
    for r in rows:
        d = r.decoded
        data = r.fetched.data
        med = d.medical if d else None
        cols[Col.IMAGE_ID].append(_row_id(r))
        cols[Col.MODALITY].append(med.modality if med else None)
        cols[Col.PHOTOMETRIC].append(med.photometric if med else None)
        cols[Col.FRAMES].append(d.n_frames if d else None)
        cols[Col.ALIGN_INLIERS].append(r.align.inliers if r.align else None)
        cols[Col.ALIGN_RMSE].append(r.align.rmse if r.align else None)
        cols[Col.ALIGN_CORRELATION].append(r.align.correlation if r.align else None)
        cols[Col.ALIGN_OVERLAP].append(r.align.overlap if r.align else None)
        cols[Col.HEATMAP_URI].append(r.heatmap_uri)
        cols[Col.DECODE_SCALE].append(d.scale if d else None)
        cols[Col.URI].append(r.uri)
        cols[Col.REFERENCE_URI].append(r.reference_uri)
        cols[Col.BYTES].append(len(data) if data is not None else None)
        cols[Col.WIDTH].append(d.width if d else None)
        cols[Col.HEIGHT].append(d.height if d else None)
        cols[Col.FORMAT].append(d.format if d else None)
        cols[Col.MODE].append(d.mode if d else None)
        cols[Col.BIT_DEPTH].append(d.bit_depth if d else None)
        cols[Col.CONTENT_HASH].append(hashlib.sha256(data).hexdigest() if data is not None else None)
        fp = r.fingerprint
        cols[Col.PIXEL_HASH].append(fp.pixel_hash if fp else None)
        cols[Col.PHASH].append(fp.phash if fp else None)
        cols[Col.DHASH].append(fp.dhash if fp else None)
        cols[Col.CHROMA_HASH].append(fp.chroma_hash if fp else None)
        cols[Col.STATUS].append(Status.ERROR.value if r.error_code else Status.OK.value)
        cols[Col.ERROR_CODE].append(r.error_code)
        cols[Col.ERROR_MESSAGE].append(r.error_message)
        cols[Col.SHARD_ID].append(sid)
        cols[Col.READ_MS].append(r.fetched.read_ms)
        cols[Col.DECODE_MS].append(r.decode_ms)
        cols[Col.SCORE_MS].append(r.score_ms)
        page = print_pages.page_columns(r.inspection)
        for name in outputs:
            if name in page:
                cols[name].append(page[name])
                continue
            v = r.scores.get(name)
            cols[name].append(None if v is None or not np.isfinite(v) else v)
    return pa.table(cols, schema=schema)


def score_members(
    uris: Sequence[str], references: Sequence[str | None], scorers: Sequence[Scorer], sid: str,
    batch_size: int = 32, window: int = 8, domain: DomainSettings | None = None, gpu_decode: GpuDecode = "auto",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> pa.Table:
    """Score a list of images into a results table (one row per input, in input order).

    Images of more than ``max_pixels`` pixels are scored downscaled (``decode``; None: at full size).
    """
    domain = domain or DomainSettings()
    tensor_path = TensorPath.for_shard(gpu_decode, scorers, domain, max_pixels,  # larger: the CPU path downscales
                                      mapper=_decode_pool().map)
    outputs = [o for s in scorers for o in s.info.outputs] + (list(PRINT_COLUMNS) if domain.print_inspect else [])
    rows: list[Row] = []
    defects: list[dict] = []
    with_references = any(s.info.kind == "fr" for s in scorers) or domain.print_inspect
    for chunk in _batched(_fetch_pairs(uris, references, window, with_references), batch_size):
        batch = [Row(f.uri, ref, f, needs_reference=with_references, ref_fetched=rf, domain=domain,
                      max_pixels=max_pixels) for f, ref, rf in chunk]
        # PIL and OpenCV release the GIL while decoding, so threads decode in parallel.
        rest = tensor_path.take(batch) if tensor_path else batch  # decodes and scores what it can on the device
        list(_decode_pool().map(_decode_row, rest))
        _score_batch(rest, scorers)
        score_slices(batch, scorers, domain)
        ids = [_row_id(r) for r in batch]
        if domain.print_inspect:
            print_pages.write_heatmaps(batch, ids, domain)
            defects += print_pages.defect_rows(batch, ids)
        else:
            write_heatmaps(batch, ids, domain)
        for r in batch:
            if r.decoded is not None:
                r.decoded.pixels = _FREED  # keep the metadata, free the pixels once the batch is scored
                r.decoded.frames = None
            r.ref_fetched, r.ref_pixels, r.ref_converted = None, None, {}
        rows.extend(batch)
    if domain.print_inspect:
        print_pages.write_defects(defects, domain, sid)
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
    if settings.registry_uri:
        set_model_registry_uri(settings.registry_uri)
    scorers = load_scorers(settings.models, resolve_device(settings.device))
    try:
        table = score_members(
            members[Col.URI], members[Col.REFERENCE_URI], scorers, plan.shard_id,
            settings.batch_size, settings.prefetch, settings.domain, settings.gpu_decode, settings.max_decode_pixels,
        )
    finally:
        release_freed_memory()  # the shard's image buffers go back to the OS, not kept by an idle worker
    if settings.gates is not None:
        table = apply_image_gates(table, settings.gates)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write(fs, path, buf.getvalue())
    errors = table.num_rows - sum(1 for s in table[Col.STATUS].to_pylist() if s == Status.OK.value)
    return ShardResult(
        plan.shard_id, plan.index, plan.results_path, table.num_rows, errors, False, time.perf_counter() - t0
    )
