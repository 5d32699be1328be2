"""Exact and near-duplicate groups of a whole run, in memory (numpy arrays of the needed columns only).

Edges: rows sharing ``pixel_hash`` (exact), rows with identical rule hashes, and LSH candidates
(``kernel.forest_edges``) confirmed by the full rule. Groups are connected components of all edges, so a
chain a~b~c groups a and c even when they are farther apart than the radius (bench/dedup_scale.py
reports group diameters). ``group_duplicates`` is the entry point; it hands over to the Dask path
when given a client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iqaflow.errors import ConfigError
from iqaflow.schemas.results import Col
from iqaflow.tasks.collection._types import KeepPolicy, NearRule, rule_hashes
from iqaflow.tasks.collection.groups import ROW, components, member_columns, member_rows, result_table
from iqaflow.tasks.collection.kernel import forest_edges
from iqaflow.tasks.collection.lsh import BandPlan, identical_tuples, plan_bands

_EMPTY = np.empty(0, dtype=np.int64)
MAX_IN_MEMORY_ROWS = 50_000_000  # ~8 bytes per hash column per row; beyond this ask for a cluster


def exact_edges(keys: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Each row with a non-null key joined to the first row with the same key."""
    flat = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    codes = pc.fill_null(pc.dictionary_encode(flat).indices, -1).to_numpy().astype(np.int64)
    rows = np.flatnonzero(codes >= 0)
    if not rows.size:
        return _EMPTY, _EMPTY
    _, first, inverse = np.unique(codes[rows], return_index=True, return_inverse=True)
    target = rows[first[inverse]]
    keep = target != rows
    return rows[keep], target[keep]


def near_edges(
    hashes: np.ndarray, valid: np.ndarray, rule: NearRule, plan: BandPlan, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Row edges whose components are those of every pair within the rule that LSH finds.

    Identical tuples are collapsed first (a thousand blank images with hash 0 would otherwise put a
    million pairs in every band), then each thread runs a share of the bands through the compiled
    kernel and returns a spanning forest of its confirmed pairs (``kernel.forest_edges``).
    """
    rows = np.flatnonzero(valid)
    if rows.size < 2:
        return _EMPTY, _EMPTY
    first, inverse = identical_tuples(hashes[:, rows])
    same = first[inverse] != np.arange(rows.size)
    items = np.ascontiguousarray(hashes[:, rows[first]].T)
    radii = np.array([r for _, r in rule.radii])
    shares = [m for m in np.array_split(plan.masks, max(1, threads)) if m.size]
    with ThreadPoolExecutor(max(1, len(shares))) as pool:  # the kernel releases the GIL
        forests = list(pool.map(lambda m: forest_edges(items, radii, m, plan.k, np.array(rule.abstain)), shares))
    item_rows = rows[first]
    return (np.concatenate([rows[same], *(item_rows[a] for a, _ in forests)]),
            np.concatenate([rows[first[inverse[same]]], *(item_rows[b] for _, b in forests)]))


def group_table(table: pa.Table, rule: NearRule, policy: KeepPolicy, plan: BandPlan, threads: int = 1) -> pa.Table:
    """The in-memory pass: image_id plus the collection columns, row i for input row i."""
    n = table.num_rows
    edges = [exact_edges(table.column(Col.PIXEL_HASH))] if Col.PIXEL_HASH in table.column_names else []
    hashes, valid = rule_hashes(table, rule)
    edges.append(near_edges(hashes, valid, rule, plan, threads))
    labels = components(n, np.concatenate([a for a, _ in edges]), np.concatenate([b for _, b in edges]))
    rows = member_rows(labels)
    present = [c for c in member_columns(rule, policy) if c in table.column_names]
    members = table.select(present).take(pa.array(rows)).append_column(ROW, pa.array(rows))
    return result_table(labels, members, table, rule, policy)


def group_duplicates(
    table_or_paths: pa.Table | Sequence[str | Path],
    rule: NearRule | Mapping[str, int] | None = None,
    policy: KeepPolicy | Sequence[tuple[str, str]] | None = None,
    client: object | None = None,
    *,
    target_miss: float = 1e-3,
    seed: int = 0,
    threads: int = 1,
) -> pa.Table:
    """Duplicate groups and size outliers of a run: a table (image_id + collection columns) in input row order.

    ``table_or_paths``: the results table, or the run's Parquet files (read in this order). With a
    Dask ``client`` the work runs on the cluster (``dedup_dask``); the result is the same table.
    ``target_miss``: chance that LSH misses a pair at exactly the band radius (``lsh.plan_bands``);
    ``seed`` draws the bands; ``threads`` run bands in parallel in memory.
    """
    near, keep = NearRule.parse(rule), KeepPolicy.parse(policy)
    if client is not None:
        from iqaflow.tasks.collection.dedup_dask import group_on_cluster

        return group_on_cluster(table_or_paths, near, keep, client, target_miss=target_miss, seed=seed)
    if isinstance(table_or_paths, pa.Table):
        table = table_or_paths
    else:
        paths = [str(p) for p in table_or_paths]
        total = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
        if total > MAX_IN_MEMORY_ROWS:
            raise ConfigError(f"duplicate pass: expected at most {MAX_IN_MEMORY_ROWS} rows in memory, got {total}; "
                              "pass a Dask client to run it on the cluster")
        wanted = list(dict.fromkeys([*input_columns(near, keep)]))
        table = pa.concat_tables([_read(p, wanted) for p in paths], promote_options="default")
    return group_table(table, near, keep, plan_bands(near.radius, table.num_rows, target_miss, seed), threads)


def input_columns(rule: NearRule, policy: KeepPolicy) -> list[str]:
    """Every column the pass reads: ids, status, sizes, hashes and the policy's keys."""
    return list(dict.fromkeys([*member_columns(rule, policy), *rule.columns]))


def _read(path: str, wanted: list[str]) -> pa.Table:
    names = pq.ParquetFile(path).schema_arrow.names
    return pq.read_table(path, columns=[c for c in wanted if c in names])
