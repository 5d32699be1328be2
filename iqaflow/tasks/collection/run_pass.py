"""The collection pass of a run: duplicate groups and size outliers, written into every results shard.

It runs after the shards are committed and before the final gate pass, so gate rules, routing and
the report read ``dup_group``, ``duplicate_of``, ``dup_distance``, ``is_duplicate``, ``aspect_ratio``,
``megapixels`` and ``size_outlier`` like any other column. Shards are rewritten atomically, one file
at a time, and only when their columns changed, so re-running a run rewrites nothing.

The run's hash index goes to ``<run>/dedup/index.parquet``. An incremental run whose earlier run has
an index made with the same rule and policy checks only its new images against it (``join_new``):
carried images keep their groups unless a newcomer joins or becomes a group's kept image. Size
outliers are always recomputed over the whole run (they are relative to the collection).

A full regrouping of more than ``CLUSTER_ROWS`` images runs on the Dask scheduler the run names
(``dask_address``; ``dedup_dask``, same band plan, so the same groups as in one process); smaller runs,
and runs on the local cluster the flow starts itself (its workers share this machine), stay in process.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iqaflow.schemas.duplicates import DuplicatePolicy
from iqaflow.schemas.results import COLLECTION_COLUMNS, COLLECTION_FIELDS, GATE_COLUMNS, Col
from iqaflow.tasks.collection._types import KeepPolicy, NearRule
from iqaflow.tasks.collection.dedup import group_table, input_columns
from iqaflow.tasks.collection.index import IndexFile, join_new
from iqaflow.tasks.collection.lsh import BandPlan, plan_bands
from iqaflow.tasks.collection.size import size_columns
from iqaflow.tasks.io.storage import atomic_write, join, open_fs

INDEX_FILE = ("dedup", "index.parquet")
TARGET_MISS = 1e-3  # chance that LSH misses a pair at exactly the rule's radius (lsh.plan_bands)
# Rows from which a run with a named Dask scheduler groups on it. In process the default rule takes
# ~40 CPU s for 1M rows and grows as rows x bands (~10x at 5M, bench/dedup_scale.py); the cluster path
# shuffles one 32-byte record per row and band, and took 41 s for 100k rows on 2 local workers
# against 1.3 s in process, so it pays only where one process would take minutes.
CLUSTER_ROWS = 2_000_000
PART_ROWS = 250_000  # rows per map task on the cluster (dedup_dask.group_on_cluster's parts)
_CARRIED = "part-carried-"
_SIZE = (Col.ASPECT_RATIO, Col.MEGAPIXELS, Col.SIZE_OUTLIER)
_TYPES = {f.name: f.type for f in COLLECTION_FIELDS}


@dataclass(frozen=True)
class DuplicateSummary:
    images: int
    groups: int
    duplicates: int  # images that are not their group's kept one
    exact: int  # of those, the same pixels as the kept image
    size_outliers: int
    incremental: bool  # new images checked against the earlier run's index
    rewritten: int
    seconds: float


def rule_and_policy(policy: DuplicatePolicy, directions: Mapping[str, bool]) -> tuple[NearRule, KeepPolicy]:
    return NearRule.parse(policy.near), KeepPolicy.parse(policy.keep_keys(directions))


def _read(uri: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = open_fs(uri)
    with fs.open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        names = pf.schema_arrow.names
        return pf.read(columns=None if columns is None else [c for c in columns if c in names])


def _index_uri(run_root: str) -> str:
    return join(run_root, *INDEX_FILE)


def _previous_index(previous_run: str | None, rule: NearRule, policy: KeepPolicy) -> IndexFile | None:
    """The earlier run's index if it was made with this rule and policy (else everything is regrouped)."""
    if not previous_run:
        return None
    fs, path = open_fs(_index_uri(previous_run))
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        index = IndexFile.read(io.BytesIO(fh.read()))
    return index if (index.rule, index.policy) == (rule, policy) else None


def _incremental(index: IndexFile, table: pa.Table, carried: np.ndarray, files: list[str],
                 counts: list[int]) -> tuple[pa.Table, IndexFile]:
    """Collection columns of every row: carried rows as the earlier run left them (patched where a
    newcomer changed their group), new rows from ``join_new``."""
    ids = table.column(Col.IMAGE_ID)
    kept_old = index.table.filter(pc.is_in(index.table.column(Col.IMAGE_ID), pc.filter(ids, pa.array(carried))))
    joined = join_new(IndexFile(kept_old, index.rule, index.policy, index.plan), table.filter(pa.array(~carried)))
    old_cols = pa.concat_tables(
        [_read(f, [Col.IMAGE_ID, *COLLECTION_COLUMNS]) for f, n in zip(files, counts, strict=True)
         if f.rsplit("/", 1)[-1].startswith(_CARRIED)], promote_options="default")
    changed = {r[Col.IMAGE_ID]: r for r in joined.changed.to_pylist()}
    old_rows = {r[Col.IMAGE_ID]: changed.get(r[Col.IMAGE_ID], r) for r in old_cols.to_pylist()}
    new_rows = iter(joined.new.to_pylist())
    rows = [old_rows.get(i, {}) if c else next(new_rows) for i, c in zip(ids.to_pylist(), carried, strict=True)]
    out = {name: pa.array([r.get(name) for r in rows], _TYPES[name]) for name in _TYPES if name not in _SIZE}
    return pa.table({Col.IMAGE_ID: ids, **out}), joined.index


def _write_back(files: list[str], counts: list[int], result: pa.Table) -> int:
    """Put the collection columns into each shard (before any gate columns); returns shards rewritten."""
    rewritten, start = 0, 0
    for uri, n in zip(files, counts, strict=True):
        part = result.slice(start, n)
        start += n
        table = _read(uri)
        if all(name in table.column_names and table.column(name).equals(part.column(name).cast(_TYPES[name]))
               for name in _TYPES):
            continue
        meta = table.schema.metadata
        table = table.drop_columns([c for c in table.column_names if c in COLLECTION_COLUMNS])
        at = next((i for i, c in enumerate(table.column_names) if c in GATE_COLUMNS), table.num_columns)
        for offset, field in enumerate(COLLECTION_FIELDS):
            table = table.add_column(at + offset, field, part.column(field.name).cast(field.type))
        buf = io.BytesIO()
        pq.write_table(table.replace_schema_metadata(meta), buf, compression="zstd")
        fs, path = open_fs(uri)
        atomic_write(fs, path, buf.getvalue())
        rewritten += 1
    return rewritten


def _group(table: pa.Table, rule: NearRule, keep: KeepPolicy, plan: BandPlan, dask_address: str | None) -> pa.Table:
    """The whole run's groups: on the scheduler at ``dask_address`` for large runs, else in process."""
    if dask_address is None or table.num_rows <= CLUSTER_ROWS:
        return group_table(table, rule, keep, plan, 1)
    from distributed import Client

    from iqaflow.tasks.collection.dedup_dask import group_on_cluster

    with Client(dask_address, set_as_default=False, timeout=60) as client:
        return group_on_cluster(table, rule, keep, client, target_miss=plan.target_miss, seed=plan.seed,
                                rows_per_part=PART_ROWS)


def duplicate_pass(run_root: str, files: list[str], policy: DuplicatePolicy, directions: Mapping[str, bool],
                   previous_run: str | None = None, dask_address: str | None = None) -> DuplicateSummary:
    """Group the run's images (``files``: its results shards), write the columns and the run's index.

    ``dask_address``: the flow's scheduler, used for a full regrouping of more than ``CLUSTER_ROWS`` rows.
    """
    t0 = time.perf_counter()
    rule, keep = rule_and_policy(policy, directions)
    pieces = [_read(f, input_columns(rule, keep)) for f in files]
    counts = [p.num_rows for p in pieces]
    table = pa.concat_tables(pieces, promote_options="default")
    carried = np.concatenate([np.full(n, f.rsplit("/", 1)[-1].startswith(_CARRIED)) for f, n in
                              zip(files, counts, strict=True)]) if files else np.zeros(0, bool)
    index = _previous_index(previous_run, rule, keep) if carried.any() else None
    if index is not None:
        result, new_index = _incremental(index, table, carried, files, counts)
    else:
        plan = plan_bands(rule.radius, max(2, table.num_rows), TARGET_MISS, 0)
        result = _group(table, rule, keep, plan, dask_address)
        new_index = IndexFile.build(table, result, rule, keep, plan)
    size = size_columns(table.column(Col.WIDTH), table.column(Col.HEIGHT))
    result = result.drop_columns([c for c in _SIZE if c in result.column_names])
    result = pa.table({**{c: result.column(c) for c in result.column_names}, **size})
    rewritten = _write_back(files, counts, result)
    buf = io.BytesIO()
    new_index.write(buf)
    fs, path = open_fs(_index_uri(run_root))
    atomic_write(fs, path, buf.getvalue())
    dup = result.column(Col.IS_DUPLICATE).to_numpy(zero_copy_only=False)
    dist = result.column(Col.DUP_DISTANCE).to_numpy(zero_copy_only=False)
    groups = pc.count_distinct(result.column(Col.DUP_GROUP)).as_py()
    return DuplicateSummary(
        images=table.num_rows, groups=int(groups), duplicates=int(dup.sum()),
        exact=int(np.sum(dup & (np.nan_to_num(dist.astype(float), nan=-1) == 0))),
        size_outliers=int(pc.sum(result.column(Col.SIZE_OUTLIER)).as_py() or 0),
        incremental=index is not None, rewritten=rewritten, seconds=time.perf_counter() - t0,
    )
