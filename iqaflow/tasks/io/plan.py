"""Cut the manifest into shards with stable ids; the shard is the unit of re-runnability.

One shard per manifest row group (discover writes ``shard_size`` rows each), except the last row
group, which is cut into halving pieces (500 -> 250, 125, 63, 62). Workers take shards in order,
so the small pieces come last and the worker that finishes first takes them: the run ends when
the last worker does, and that worker's last shard is small. Without the cut, one worker could
score a whole last shard alone while the others wait; and a collection of one row group would
use one worker. The cut depends only on the manifest, never on the worker count, so a re-run
plans the same shard ids.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow.parquet as pq

from iqaflow.schemas.results import Col
from iqaflow.tasks.io.storage import join, open_fs

log = logging.getLogger(__name__)

# Columns that identify a member: a changed size/mtime/etag makes a new shard id.
_MEMBER_COLUMNS = [Col.URI, Col.REFERENCE_URI, Col.BYTES, Col.MTIME, Col.ETAG]
# The smallest tail piece: below this a shard's fixed cost (a Prefect task run, a Parquet commit)
# outweighs what a finer tail saves.
MIN_TAIL_PIECE = 32


@dataclass(frozen=True)
class ShardPlan:
    shard_id: str
    index: int
    manifest_path: str
    row_group: int
    size: int
    results_path: str
    offset: int = 0  # first row of the shard in its row group


def shard_id(members: list[tuple[object, ...]], fingerprint: str) -> str:
    h = hashlib.sha256(fingerprint.encode())
    for member in members:
        h.update(b"\x1f".join(b"" if v is None else str(v).encode() for v in member))
        h.update(b"\x1e")
    return h.hexdigest()[:20]


def results_file(results_dir: str, sid: str) -> str:
    return join(results_dir, f"part-{sid}.parquet")


def tail_pieces(rows: int, smallest: int = MIN_TAIL_PIECE) -> list[int]:
    """Sizes of the last row group's shards: halves while a half keeps at least ``smallest`` rows."""
    pieces: list[int] = []
    while rows // 2 >= smallest:
        pieces.append(rows - rows // 2)
        rows //= 2
    return [*pieces, rows]


def plan_shards(manifest_path: str, results_dir: str, fingerprint: str, keep: Iterable[str] = ()) -> list[ShardPlan]:
    """The run's shards; result files in ``results_dir`` that are neither planned nor in ``keep`` are removed.

    Such files come from an earlier attempt of this run whose shards no longer exist: an image
    changed since (its shard has a new id) or the shard layout did. Left there, their rows would
    appear twice in the dataset.
    """
    fs, path = open_fs(manifest_path)
    plans: list[ShardPlan] = []
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        last = pf.num_row_groups - 1
        for group in range(pf.num_row_groups):
            cols = pf.read_row_group(group, columns=_MEMBER_COLUMNS).to_pydict()
            members = list(zip(*(cols[c] for c in _MEMBER_COLUMNS), strict=True))
            offset = 0
            for size in tail_pieces(len(members)) if group == last else [len(members)]:
                sid = shard_id(members[offset:offset + size], fingerprint)
                plans.append(ShardPlan(sid, len(plans), manifest_path, group, size, results_file(results_dir, sid),
                                       offset))
                offset += size
    _remove_unplanned(results_dir, {p.results_path for p in plans} | set(keep))
    return plans


def _remove_unplanned(results_dir: str, planned: set[str]) -> None:
    """Every planned file is in ``results_dir``, so names are compared: no URL parsing per shard."""
    fs, path = open_fs(results_dir)
    wanted = {p.rsplit("/", 1)[-1] for p in planned}
    stale = [f for f in fs.glob(join(path, "part-*.parquet")) if f.rsplit("/", 1)[-1] not in wanted]
    for f in stale:
        fs.rm(f)
    if stale:
        log.warning("removed %d result file(s) of an earlier attempt of this run that its plan no longer has "
                    "(images changed since, or the shard layout did): %s", len(stale), ", ".join(stale[:3]))


def read_shard_members(plan: ShardPlan) -> dict[str, list]:
    fs, path = open_fs(plan.manifest_path)
    with fs.open(path, "rb") as fh:
        group = pq.ParquetFile(fh).read_row_group(plan.row_group)
    return group.slice(plan.offset, plan.size).to_pydict()
