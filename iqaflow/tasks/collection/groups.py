"""From edges to output columns: connected components, the kept image of each group, per-row columns.

Shared by the in-memory and the Dask paths, so both give the same table for the same edges' components.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from iqaflow.schemas.results import COLLECTION_FIELDS, Col, Status
from iqaflow.tasks.collection._types import PIXELS, KeepPolicy, NearRule
from iqaflow.tasks.collection.lsh import as_uint64, hamming
from iqaflow.tasks.collection.size import size_columns

ROW = "_row"  # position of a member in the whole input
LABEL = "_label"  # its component id
_BAD = "_bad"
_FIELDS = {f.name: f for f in COLLECTION_FIELDS}
_MEMBER_COLUMNS = (Col.DUP_GROUP, Col.DUPLICATE_OF, Col.DUP_DISTANCE, Col.IS_DUPLICATE)


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component id of each of ``n`` nodes under undirected edges (a, b) (union-find done by scipy)."""
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def member_rows(labels: np.ndarray) -> np.ndarray:
    """Rows whose component has two or more nodes: the only ones the policy and the output look at."""
    return np.flatnonzero(np.bincount(labels)[labels] > 1)


def member_columns(rule: NearRule, policy: KeepPolicy) -> list[str]:
    """Input columns the kept-image choice and the distances need (those absent are skipped)."""
    wanted = [Col.IMAGE_ID, Col.STATUS, Col.PIXEL_HASH, rule.band, Col.WIDTH, Col.HEIGHT, *policy.columns]
    return list(dict.fromkeys(wanted))


def group_id(image_id: str) -> int:
    """Stable int64 id of a group: a hash of its smallest image_id, whatever the row order or the run."""
    return int.from_bytes(hashlib.blake2b(image_id.encode(), digest_size=8).digest(), "little", signed=True)


def _sort_key(members: pa.Table, column: str) -> pa.Array:
    if column in members.column_names:
        values = members.column(column).combine_chunks()
    elif column == PIXELS and {Col.WIDTH, Col.HEIGHT} <= set(members.column_names):
        values = pc.multiply(members.column(Col.WIDTH).cast(pa.int64()), members.column(Col.HEIGHT).cast(pa.int64()))
    else:
        return pa.nulls(members.num_rows, pa.int8())
    if pa.types.is_floating(values.type):  # NaN sorts last like a missing value
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    return values


def choose_kept(members: pa.Table, rule: NearRule, policy: KeepPolicy) -> pa.Table:
    """Per member row (``ROW``, ``LABEL`` and ``member_columns``): dup_group, duplicate_of, dup_distance.

    The kept row is the first by (status ok first, policy keys); the other members point at it.
    """
    if members.num_rows == 0:
        return pa.table({ROW: pa.array([], pa.int64()), **{f.name: pa.array([], f.type) for f in COLLECTION_FIELDS
                                                           if f.name in _MEMBER_COLUMNS}})
    cols = {ROW: members.column(ROW), LABEL: members.column(LABEL)}
    status = members.column(Col.STATUS) if Col.STATUS in members.column_names else None
    bad = pa.array(np.zeros(members.num_rows, bool)) if status is None else pc.fill_null(
        pc.not_equal(status, Status.OK.value), True)
    cols[_BAD] = bad
    sort_keys = [(LABEL, "ascending", "at_end"), (_BAD, "ascending", "at_end")]
    for i, (column, direction) in enumerate(policy.keys):
        cols[f"_k{i}"] = _sort_key(members, column)
        sort_keys.append((f"_k{i}", "descending" if direction == "max" else "ascending", "at_end"))
    sort_keys.append((ROW, "ascending", "at_end"))  # full ties: the first row of the input
    order = pc.sort_indices(pa.table(cols), sort_keys=sort_keys)
    t = members.take(order)
    label = t.column(LABEL).to_numpy()
    first = np.r_[True, label[1:] != label[:-1]]
    kept_at = np.maximum.accumulate(np.where(first, np.arange(label.size), 0))  # position of each row's kept row
    ids = t.column(Col.IMAGE_ID).combine_chunks()
    is_dup = ~first
    # group id: hash of the smallest image_id of each group
    by_id = pc.sort_indices(pa.table({LABEL: t.column(LABEL), Col.IMAGE_ID: ids}),
                            sort_keys=[(LABEL, "ascending"), (Col.IMAGE_ID, "ascending")])
    sorted_label = label[by_id.to_numpy()]
    smallest = ids.take(by_id).filter(pa.array(np.r_[True, sorted_label[1:] != sorted_label[:-1]]))
    gid_of_label = dict(zip(np.unique(label).tolist(), [group_id(s) for s in smallest.to_pylist()], strict=True))
    dup_group = np.fromiter((gid_of_label[x] for x in label.tolist()), dtype=np.int64, count=label.size)
    distance = _distance_to_kept(t, rule, kept_at)
    return pa.table({
        ROW: t.column(ROW),
        Col.DUP_GROUP: pa.array(dup_group, _FIELDS[Col.DUP_GROUP].type),
        Col.DUPLICATE_OF: pc.if_else(pa.array(is_dup), ids.take(pa.array(kept_at)), pa.scalar(None, pa.string())),
        Col.DUP_DISTANCE: pc.if_else(pa.array(is_dup), distance, pa.scalar(None, distance.type)),
        Col.IS_DUPLICATE: pa.array(is_dup),
    })


def _distance_to_kept(t: pa.Table, rule: NearRule, kept_at: np.ndarray) -> pa.Array:
    """0 for the same pixels as the kept row, else the band hash's Hamming distance (null when unknown)."""
    dtype = _FIELDS[Col.DUP_DISTANCE].type
    n = t.num_rows
    out = np.zeros(n, dtype=np.int64)
    known = np.zeros(n, dtype=bool)
    if rule.band in t.column_names:
        col = t.column(rule.band).combine_chunks()
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        h = as_uint64(col.fill_null(0).to_numpy())
        known = valid & valid[kept_at]
        out = hamming(h, h[kept_at]).astype(np.int64)
    if Col.PIXEL_HASH in t.column_names:
        ph = t.column(Col.PIXEL_HASH).combine_chunks()
        same = pc.fill_null(pc.equal(ph, ph.take(pa.array(kept_at))), False).to_numpy(zero_copy_only=False)
        out[same] = 0
        known |= same
    return pa.array(out, dtype, mask=~known)


def result_table(labels: np.ndarray, members: pa.Table, everyone: pa.Table, rule: NearRule,
                 policy: KeepPolicy) -> pa.Table:
    """The pass's output, row i for input row i: image_id and the collection columns.

    ``members``: the member rows' ``member_columns`` and ``ROW``; ``everyone``: image_id, width, height.
    """
    rows = members.column(ROW).to_numpy()
    kept = choose_kept(members.append_column(LABEL, pa.array(labels[rows])), rule, policy)
    size = size_columns(everyone.column(Col.WIDTH), everyone.column(Col.HEIGHT))
    return pa.table({Col.IMAGE_ID: everyone.column(Col.IMAGE_ID), **collection_columns(labels.size, kept, size)})


def collection_columns(n: int, kept: pa.Table, size: dict[str, pa.Array]) -> dict[str, pa.Array]:
    """The pass's columns for all ``n`` rows: members' values from ``kept``, null/false elsewhere."""
    rows = kept.column(ROW).to_numpy()
    out: dict[str, pa.Array] = {}
    for name in (Col.DUP_GROUP, Col.DUPLICATE_OF, Col.DUP_DISTANCE):
        index = np.full(n, -1, dtype=np.int64)
        index[rows] = np.arange(rows.size)
        taken = kept.column(name).combine_chunks().take(pa.array(index, mask=index < 0))
        out[name] = taken.cast(_FIELDS[name].type)
    is_dup = np.zeros(n, dtype=bool)
    is_dup[rows] = kept.column(Col.IS_DUPLICATE).to_numpy()
    out[Col.IS_DUPLICATE] = pa.array(is_dup)
    out.update(size)
    return out
