"""The duplicate pass on a Dask cluster, for runs whose hashes do not fit one worker.

Each input part (a Parquet file, or a slice of a table) emits one record per (band, row); records
are shuffled by (band, band value) so every LSH bucket lands whole in one partition, which finds and
confirms its pairs with the same kernel as the in-memory path (``kernel.forest_edges``). Only the edges
come back; components are computed once on the client, then the members' columns are gathered for
the kept-image choice. Bands run in rounds so a map task holds at most ``records_per_task`` records.
With the same band plan the edges' components, hence the output, equal the in-memory path's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from iqaflow.schemas.results import Col
from iqaflow.tasks.collection._types import KeepPolicy, NearRule, rule_hashes
from iqaflow.tasks.collection.groups import ROW, components, member_columns, member_rows, result_table
from iqaflow.tasks.collection.lsh import BandPlan, as_uint64, band_edges, plan_bands

Part = tuple[pa.Table | str, int]  # (slice of a table or a Parquet path, its first row in the whole input)
_DEST, _BAND, _KEY, _A, _B = "_dest", "_band", "_key", "_a", "_b"
_MIX = np.uint64(0xBF58476D1CE4E5B9)
RECORD_BYTES = 32  # dest, band, row and one int64 hash per shuffled record (+8 per extra rule hash)


def _load(source: pa.Table | str, columns: list[str]) -> pa.Table:
    if isinstance(source, pa.Table):
        return source.select([c for c in columns if c in source.column_names])
    names = pq.ParquetFile(source).schema_arrow.names
    return pq.read_table(source, columns=[c for c in columns if c in names])


def _hash_names(rule: NearRule) -> list[str]:
    return [f"_h{i}" for i in range(len(rule.columns))]


def _band_records(part: Part, rule: NearRule, masks: np.ndarray, first_band: int, parts: int) -> pd.DataFrame:
    """One record per (band, row with every rule hash), its destination a hash of (band, band value)."""
    source, offset = part
    hashes_all, valid = rule_hashes(_load(source, rule.columns), rule)  # abstaining hashes: null/absent is 0
    rows = np.flatnonzero(valid)
    hashes = list(hashes_all[:, rows])
    band = np.repeat(np.arange(first_band, first_band + masks.size, dtype=np.int64), rows.size)
    value = (np.tile(hashes[0], masks.size) & np.repeat(masks, rows.size)) ^ (band.astype(np.uint64) * _MIX)
    dest = ((value * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)) % np.uint64(parts)
    out = {_DEST: dest.astype(np.int64), _BAND: band, ROW: np.tile(rows + offset, masks.size)}
    for name, h in zip(_hash_names(rule), hashes, strict=True):
        out[name] = np.tile(h.view(np.int64), masks.size)
    return pd.DataFrame(out)


def _partition_edges(df: pd.DataFrame, rule: NearRule, masks: np.ndarray, first_band: int, k: int) -> pd.DataFrame:
    """Confirmed pairs of one shuffled partition: identical hash tuples, then each band's buckets."""
    radii = np.array([r for _, r in rule.radii])
    out_a, out_b = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for band, group in df.groupby(_BAND, sort=True):
        rows = group[ROW].to_numpy()
        hashes = np.vstack([as_uint64(group[c].to_numpy()) for c in _hash_names(rule)])
        a, b = band_edges(rows, hashes, radii, masks[int(band) - first_band], k, np.array(rule.abstain))
        out_a.append(a)
        out_b.append(b)
    return pd.DataFrame({_A: np.concatenate(out_a), _B: np.concatenate(out_b)})


def _exact_records(part: Part) -> pd.DataFrame:
    source, offset = part
    t = _load(source, [Col.PIXEL_HASH])
    if Col.PIXEL_HASH not in t.column_names:
        return pd.DataFrame({_KEY: pd.Series([], dtype=object), ROW: pd.Series([], dtype=np.int64)})
    keys = t.column(Col.PIXEL_HASH).to_pandas()
    rows = np.arange(offset, offset + t.num_rows)
    keep = keys.notna().to_numpy()
    return pd.DataFrame({_KEY: keys[keep].to_numpy(dtype=object), ROW: rows[keep]})


def _exact_edges(df: pd.DataFrame) -> pd.DataFrame:
    """Each row joined to the first row with the same pixel hash."""
    first = df.groupby(_KEY)[ROW].transform("min").to_numpy()
    rows = df[ROW].to_numpy()
    keep = first != rows
    return pd.DataFrame({_A: rows[keep], _B: first[keep]})


def _members_and_sizes(part: Part, columns: list[str], members: np.ndarray) -> tuple[pa.Table, pa.Table]:
    """The member rows' columns (for the kept-image choice) and every row's id and size."""
    source, offset = part
    t = _load(source, columns)
    local = members[(members >= offset) & (members < offset + t.num_rows)] - offset
    picked = t.take(pa.array(local)).append_column(ROW, pa.array(local + offset))
    return picked, t.select([Col.IMAGE_ID, Col.WIDTH, Col.HEIGHT])


def _parts(table_or_paths: pa.Table | Sequence[str | Path], rows_per_part: int) -> list[Part]:
    if isinstance(table_or_paths, pa.Table):
        n = table_or_paths.num_rows
        return [(table_or_paths.slice(s, rows_per_part), s) for s in range(0, max(n, 1), rows_per_part)]
    parts, offset = [], 0
    for path in map(str, table_or_paths):
        parts.append((path, offset))
        offset += pq.ParquetFile(path).metadata.num_rows
    return parts


def _num_rows(parts: list[Part]) -> int:
    source, offset = parts[-1]
    return offset + (source.num_rows if isinstance(source, pa.Table) else pq.ParquetFile(source).metadata.num_rows)


def cluster_edges(parts: list[Part], rule: NearRule, plan: BandPlan, client: object,
                  records_per_task: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Exact and near edges of the whole input, band rounds shuffled on the cluster."""
    n = _num_rows(parts)
    rows_per_part = max(1, -(-n // len(parts)))
    exact = dd.from_map(_exact_records, parts, enforce_metadata=False)
    rounds = [_exact_edge_frame(exact)]
    masks = plan.masks
    per_round = max(1, records_per_task // rows_per_part)
    for start in range(0, masks.size, per_round):
        chunk = masks[start:start + per_round]
        out = max(1, -(-(n * chunk.size) // records_per_task))
        records = dd.from_map(_band_records, parts, rule=rule, masks=chunk, first_band=start, parts=out,
                              enforce_metadata=False)
        shuffled = records.shuffle(on=_DEST, npartitions=out)
        rounds.append(shuffled.map_partitions(_partition_edges, rule, chunk, start, plan.k,
                                              meta={_A: np.int64, _B: np.int64}))
    # one round at a time: a worker then holds one round's records, whatever the number of bands
    edges = pd.concat([r.compute(scheduler=client.get) for r in rounds], ignore_index=True)  # type: ignore[attr-defined]
    return edges[_A].to_numpy(np.int64), edges[_B].to_numpy(np.int64)


def _exact_edge_frame(exact: dd.DataFrame) -> dd.DataFrame:
    return exact.shuffle(on=_KEY, npartitions=exact.npartitions).map_partitions(
        _exact_edges, meta={_A: np.int64, _B: np.int64})


def group_on_cluster(table_or_paths: pa.Table | Sequence[str | Path], rule: NearRule, policy: KeepPolicy,
                     client: object, *, target_miss: float = 1e-3, seed: int = 0,
                     rows_per_part: int = 250_000) -> pa.Table:
    """``group_duplicates`` on a Dask client: the same table as the in-memory path."""
    parts = _parts(table_or_paths, rows_per_part)
    n = _num_rows(parts)
    plan = plan_bands(rule.radius, n, target_miss, seed)
    a, b = cluster_edges(parts, rule, plan, client)
    labels = components(n, a, b)
    rows = member_rows(labels)
    futures = [dask.delayed(_members_and_sizes)(p, member_columns(rule, policy), rows) for p in parts]
    pieces = dask.compute(*futures, scheduler=client.get)  # type: ignore[attr-defined]
    members = pa.concat_tables([m for m, _ in pieces], promote_options="default")
    return result_table(labels, members, pa.concat_tables([s for _, s in pieces]), rule, policy)
