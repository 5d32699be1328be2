"""The run's hash index, and checking a later run's new images against it without re-grouping everything.

The index (one Parquet file) holds, per image of the earlier run: image_id, pixel_hash, the rule's
hashes, the policy's keys, dup_group and a kept flag; its metadata holds the rule, the policy and the
band plan. ``join_new`` finds only edges that touch a new image: exact matches, and LSH candidates of
each stored band among the old images whose band value a new image shares (a bitmap lookup over the
old hashes), confirmed by the compiled kernel started from the earlier groups (``kernel.forest_edges``:
no old-old pair is joined). The earlier groups are taken as they were.

Decisions: a newcomer joins the group it is near (and can merge two earlier groups it bridges); the
kept image is re-chosen by the policy over the whole group, so a better newcomer becomes the kept image
and the earlier kept image becomes its duplicate. Those earlier rows are returned in ``changed`` so
routing can be redone for them. Group ids are a hash of the group's smallest image_id, so they equal
what grouping everything at once gives (and change when a newcomer has a smaller id).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from iqaflow.schemas.results import Col
from iqaflow.tasks.collection._types import KeepPolicy, NearRule, rule_hashes
from iqaflow.tasks.collection.dedup import exact_edges, input_columns
from iqaflow.tasks.collection.groups import ROW, components, member_rows, result_table
from iqaflow.tasks.collection.kernel import forest_edges
from iqaflow.tasks.collection.lsh import BandPlan, identical_tuples

KEPT = "kept"  # true for the kept image of a group and for images without duplicates
_GROUP_COLUMNS = (Col.DUP_GROUP, Col.DUPLICATE_OF, KEPT)
_META_KEY = b"iqaflow.dedup_index"
_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class IndexFile:
    """A run's hash index: its rows and the rule, policy and band plan its groups were made with."""

    table: pa.Table
    rule: NearRule
    policy: KeepPolicy
    plan: BandPlan

    @classmethod
    def build(cls, table: pa.Table, result: pa.Table, rule: NearRule, policy: KeepPolicy, plan: BandPlan) -> IndexFile:
        """From a run's input table and ``group_duplicates``' result (same row order)."""
        keep = [c for c in input_columns(rule, policy) if c in table.column_names]
        return cls(_with_groups(table.select(keep), result), rule, policy, plan)

    def write(self, where: str | Path | BinaryIO) -> None:
        """To a local path or a binary file object (the run writes it atomically through fsspec)."""
        meta = {"rule": self.rule.radii, "policy": self.policy.keys, "plan": asdict(self.plan)}
        table = self.table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
        pq.write_table(table, where if hasattr(where, "write") else str(where))

    @classmethod
    def read(cls, where: str | Path | BinaryIO) -> IndexFile:
        table = pq.read_table(where if hasattr(where, "read") else str(where))
        meta = json.loads((table.schema.metadata or {})[_META_KEY])
        rule = NearRule(tuple((k, int(v)) for k, v in meta["rule"]))
        policy = KeepPolicy(tuple((k, d) for k, d in meta["policy"]))
        return cls(table.replace_schema_metadata(None), rule, policy, BandPlan(**meta["plan"]))


@dataclass(frozen=True)
class Joined:
    """``new``: collection columns of the new rows (input order); ``changed``: earlier rows whose
    group, kept image or distance changed; ``index``: the index of old + new for the next run."""

    new: pa.Table
    changed: pa.Table
    index: IndexFile


def _new_near_edges(hashes: np.ndarray, valid: np.ndarray, n_old: int, rule: NearRule, plan: BandPlan,
                    old_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges with at least one new row, from the compiled kernel over the new rows and the old rows that
    share a band value with one of them (a bitmap lookup per band; no old-old pair is generated).

    ``old_groups``: the earlier run's group label of every old row. The kernel starts from those groups
    and never joins two old rows, so its forest plus the earlier groups has the components of the
    earlier groups and every pair touching a new row.
    """
    rows = np.flatnonzero(valid)
    old, new = rows[rows < n_old], rows[rows >= n_old]
    if new.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    q = min(30, max(8, int(new.size).bit_length() + 4))
    shift = np.uint64(64 - q)
    touched = np.zeros(old.size, dtype=bool)
    for mask in plan.masks:
        new_keys = hashes[0, new] & mask
        bitmap = np.zeros(1 << q, dtype=bool)
        bitmap[((new_keys * _MIX) >> shift).astype(np.intp)] = True
        maybe = np.flatnonzero(bitmap[(((hashes[0, old] & mask) * _MIX) >> shift).astype(np.intp)])
        touched[maybe[np.isin(hashes[0, old[maybe]] & mask, new_keys)]] = True
    subset = np.concatenate([old[touched], new])  # old rows first: positions below n_sub_old are old
    n_sub_old = int(touched.sum())
    first, inverse = identical_tuples(hashes[:, subset])  # copies collapse (a bucket of blanks stays small)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    first, inverse = first[order], rank[inverse]
    same = first[inverse] != np.arange(subset.size)  # identical to an earlier (old-first) subset row
    is_old = first < n_sub_old
    labels = -1 - np.arange(first.size)  # new rows: a group each
    labels[is_old] = old_groups[subset[first[is_old]]]
    a, b = forest_edges(np.ascontiguousarray(hashes[:, subset[first]].T), np.array([r for _, r in rule.radii]),
                        plan.masks, plan.k, np.array(rule.abstain), labels, int(is_old.sum()))
    reps = subset[first]
    return (np.concatenate([subset[same], reps[a]]).astype(np.int64),
            np.concatenate([subset[first[inverse[same]]], reps[b]]).astype(np.int64))


def join_new(index: IndexFile, new: pa.Table) -> Joined:
    """Group ``new`` images against an earlier run's ``index`` (its rule, policy and bands)."""
    old = index.table
    columns = [c for c in old.column_names if c not in _GROUP_COLUMNS]
    both = pa.concat_tables([old.select(columns), new.select([c for c in columns if c in new.column_names])],
                            promote_options="default")
    n_old, n = old.num_rows, both.num_rows
    edges = [exact_edges(old.column(Col.DUP_GROUP))]  # the earlier groups, as they were
    if Col.PIXEL_HASH in both.column_names:
        edges.append(exact_edges(both.column(Col.PIXEL_HASH)))
    hashes, valid = rule_hashes(both, index.rule)
    old_groups = components(n_old, *edges[0])  # the earlier groups as labels
    edges.append(_new_near_edges(hashes, valid, n_old, index.rule, index.plan, old_groups))
    labels = components(n, np.concatenate([a for a, _ in edges]), np.concatenate([b for _, b in edges]))
    rows = member_rows(labels)
    members = both.take(pa.array(rows)).append_column(ROW, pa.array(rows))
    result = result_table(labels, members, both, index.rule, index.policy)
    old_part = result.slice(0, n_old)
    changed = pc.or_(_differs(old_part.column(Col.DUP_GROUP), old.column(Col.DUP_GROUP)),
                     _differs(old_part.column(Col.DUPLICATE_OF), old.column(Col.DUPLICATE_OF)))
    return Joined(new=result.slice(n_old), changed=old_part.filter(changed),
                  index=IndexFile(_with_groups(both, result), index.rule, index.policy, index.plan))


def _with_groups(table: pa.Table, result: pa.Table) -> pa.Table:
    for name in (Col.DUP_GROUP, Col.DUPLICATE_OF):
        table = table.append_column(name, result.column(name))
    return table.append_column(KEPT, pc.invert(result.column(Col.IS_DUPLICATE)))


def _differs(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.Array:
    """Not equal, a null and a value counting as different and two nulls as equal."""
    same = pc.or_kleene(pc.equal(a, b), pc.and_(pc.is_null(a), pc.is_null(b)))
    return pc.invert(pc.fill_null(same, False))
