"""Incremental runs: score only images that are new or changed since an earlier run.

An image is unchanged when its uri, size, etag (or mtime where the store has no etag) and
reference are the same as in the earlier run's manifest, and the earlier run used the same
scorer fingerprint. Unchanged rows are copied from the earlier results into one committed
``part-carried-*.parquet`` file, so the new run's dataset is complete; the manifest is
rewritten to hold only the images that still need scoring.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from iqaflow.errors import ConfigError
from iqaflow.schemas.results import MANIFEST_SCHEMA, Col
from iqaflow.tasks.io.storage import atomic_write, join, open_fs

FINGERPRINT_FILE = "fingerprint"
# The full listing of an incremental run (its manifest holds only the images it scored); the
# next incremental run compares against this, so carried images stay carried.
LISTING_FILE = "listing.parquet"


@dataclass(frozen=True)
class IncrementalSplit:
    carried: int
    to_score: int
    carried_path: str | None
    reason: str


def previous_run_root(previous: str) -> str:
    """Accept the earlier run's folder (OUT/runs/RUN_ID) or its results folder."""
    previous = previous.rstrip("/")
    return previous.rsplit("/", 1)[0] if previous.endswith("/results") else previous


def _key(table: pa.Table) -> list[tuple]:
    cols = [table[c].to_pylist() for c in (Col.URI, Col.BYTES, Col.ETAG, Col.MTIME, Col.REFERENCE_URI)]
    return [(u, b, e if e else m, r) for u, b, e, m, r in zip(*cols, strict=True)]


def _read_text(url: str) -> str | None:
    fs, path = open_fs(url)
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        return fh.read().decode().strip()


def split_incremental(
    manifest_path: str, previous: str, fingerprint: str, results_dir: str, shard_size: int
) -> IncrementalSplit:
    prev_root = previous_run_root(previous)
    if prev_root == manifest_path.rsplit("/", 1)[0]:
        raise ConfigError("incremental: the earlier run is this run's own folder. Fix: give the new run its "
                          "own --run-id and pass the earlier run's folder to --incremental")
    fs_prev, p = open_fs(join(prev_root, LISTING_FILE))
    if not fs_prev.exists(p):
        fs_prev, p = open_fs(join(prev_root, "manifest.parquet"))
    if not fs_prev.exists(p):
        raise ConfigError(
            f"incremental: {previous!r} is not an iqaflow run (no manifest.parquet). "
            "Fix: pass an earlier run's folder OUT/runs/RUN_ID or its results folder"
        )
    fs, mpath = open_fs(manifest_path)
    with fs.open(mpath, "rb") as fh:
        current = pq.read_table(fh)
    buf = io.BytesIO()
    pq.write_table(current, buf, compression="zstd")
    atomic_write(fs, f"{mpath.rsplit('/', 1)[0]}/{LISTING_FILE}", buf.getvalue())
    if _read_text(join(prev_root, FINGERPRINT_FILE)) != fingerprint:
        return IncrementalSplit(0, current.num_rows, None, "earlier run used other scorers: scoring everything")
    with fs_prev.open(p, "rb") as fh:
        unchanged_keys = set(_key(pq.read_table(fh)))
    keep = pa.array([k not in unchanged_keys for k in _key(current)], type=pa.bool_())
    to_score = current.filter(keep)
    carried_uris = current.filter(pc.invert(keep))[Col.URI]
    carried_path = None
    if len(carried_uris):
        prev_results = join(prev_root, "results")
        rfs, rpath = open_fs(prev_results)
        old = ds.dataset(rpath, format="parquet", filesystem=rfs).to_table(filter=pc.field(Col.URI).isin(carried_uris))
        digest = hashlib.sha256(fingerprint.encode() + "\n".join(sorted(old[Col.URI].to_pylist())).encode())
        carried_path = join(results_dir, f"part-carried-{digest.hexdigest()[:20]}.parquet")
        ofs, opath = open_fs(carried_path)
        if not ofs.exists(opath):
            buf = io.BytesIO()
            pq.write_table(old, buf, compression="zstd")
            atomic_write(ofs, opath, buf.getvalue())
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, MANIFEST_SCHEMA) as writer:
        for start in range(0, to_score.num_rows, shard_size):
            writer.write_table(to_score.slice(start, shard_size).cast(MANIFEST_SCHEMA), row_group_size=shard_size)
    atomic_write(fs, mpath, buf.getvalue())
    return IncrementalSplit(len(carried_uris), to_score.num_rows, carried_path, "unchanged images carried over")
