"""Cut the manifest into shards with stable ids; the shard is the unit of re-runnability."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow.parquet as pq

from iqaflow.schemas.results import Col
from iqaflow.tasks.storage import join, open_fs

# Columns that identify a member: a changed size/mtime/etag makes a new shard id.
_MEMBER_COLUMNS = [Col.URI, Col.REFERENCE_URI, Col.BYTES, Col.MTIME, Col.ETAG]


@dataclass(frozen=True)
class ShardPlan:
    shard_id: str
    index: int
    manifest_path: str
    row_group: int
    size: int
    results_path: str


def shard_id(members: list[tuple[object, ...]], fingerprint: str) -> str:
    h = hashlib.sha256(fingerprint.encode())
    for member in members:
        h.update(b"\x1f".join(b"" if v is None else str(v).encode() for v in member))
        h.update(b"\x1e")
    return h.hexdigest()[:20]


def results_file(results_dir: str, sid: str) -> str:
    return join(results_dir, f"part-{sid}.parquet")


def plan_shards(manifest_path: str, results_dir: str, fingerprint: str) -> list[ShardPlan]:
    """One plan per manifest row group (written ``shard_size`` rows each by discover)."""
    fs, path = open_fs(manifest_path)
    plans: list[ShardPlan] = []
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        for i in range(pf.num_row_groups):
            cols = pf.read_row_group(i, columns=_MEMBER_COLUMNS).to_pydict()
            members = list(zip(*(cols[c] for c in _MEMBER_COLUMNS), strict=True))
            sid = shard_id(members, fingerprint)
            plans.append(ShardPlan(sid, i, manifest_path, i, len(members), results_file(results_dir, sid)))
    return plans


def read_shard_members(plan: ShardPlan) -> dict[str, list]:
    fs, path = open_fs(plan.manifest_path)
    with fs.open(path, "rb") as fh:
        return pq.ParquetFile(fh).read_row_group(plan.row_group).to_pydict()
