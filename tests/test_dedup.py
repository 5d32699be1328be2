"""The duplicate pass (iqaflow.tasks.collection) against brute-force references."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from iqaflow.errors import ConfigError
from iqaflow.schemas.duplicates import DuplicatePolicy
from iqaflow.schemas.results import Col
from iqaflow.tasks.collection import (
    IndexFile,
    KeepPolicy,
    NearRule,
    dedup_dask,
    group_duplicates,
    join_new,
    plan_bands,
    run_pass,
)
from iqaflow.tasks.collection.kernel import forest_edges
from iqaflow.tasks.collection.run_pass import duplicate_pass
from iqaflow.tasks.collection.size import IQR_FACTOR

# LSH misses a pair at the radius with probability target_miss (1e-3 by default); the exactness tests
# ask for 1e-9 so that "identical to all pairs" holds for every seed, and one test checks the default.
EXACT = 1e-9

# These tables carry only phash; the default rule also confirms with dhash.
PHASH_ONLY = {"phash": 10}


def _flip(rng: np.random.Generator, h: np.uint64, bits: int) -> np.uint64:
    pos = rng.choice(64, bits, replace=False).astype(np.uint64)
    return h ^ np.bitwise_or.reduce(np.uint64(1) << pos) if bits else h


def _collection(n: int = 3000, seed: int = 0) -> pa.Table:
    """Random phash/dhash/chroma_hash, planted near groups (<= 12 bits off a base), exact copies, error
    rows; chroma_hash is 0 (grayscale: the colour check abstains) on a tenth of the rows."""
    rng = np.random.default_rng(seed)
    ph = rng.integers(0, 2**64, n, dtype=np.uint64)
    dh = rng.integers(0, 2**64, n, dtype=np.uint64)
    ch = rng.integers(0, 2**64, n, dtype=np.uint64)
    for _ in range(n // 8):
        base = rng.integers(n)
        for j in rng.integers(0, n, rng.integers(1, 4)):
            ph[j], dh[j] = _flip(rng, ph[base], rng.integers(0, 13)), _flip(rng, dh[base], rng.integers(0, 15))
            ch[j] = _flip(rng, ch[base], rng.integers(0, 10))
    ch[rng.random(n) < 0.1] = 0
    pixel = np.array([f"{x:032x}" for x in rng.integers(0, 2**62, n)], dtype=object)
    copies = rng.integers(0, n, n // 20)
    pixel[copies] = pixel[rng.integers(0, n, copies.size)]
    status = np.where(rng.random(n) < 0.02, "error", "ok")
    bad = status == "error"
    return pa.table({
        Col.IMAGE_ID: [f"id{i:05d}" for i in range(n)],
        Col.URI: [f"file:///c/{i:05d}.jpg" for i in range(n)],
        Col.STATUS: status,
        Col.WIDTH: rng.integers(100, 400, n),
        Col.HEIGHT: rng.integers(100, 400, n),
        Col.PIXEL_HASH: pa.array(pixel, mask=bad),
        Col.PHASH: pa.array(ph.view(np.int64), mask=bad),
        Col.DHASH: pa.array(dh.view(np.int64), mask=bad),
        Col.CHROMA_HASH: pa.array(ch.view(np.int64), mask=bad),
        "iqaflow_nr": rng.random(n),
    })


def _brute_groups(t: pa.Table, radii: dict[str, int]) -> set[frozenset[int]]:
    """Components of all pairs: same pixel_hash, or every listed hash within its radius (chroma_hash: or
    0 on either side, whether 0, null or absent: no colour evidence)."""
    adj = np.zeros((t.num_rows, t.num_rows), dtype=bool)
    near = np.ones_like(adj)
    for name, r in radii.items():
        if name == Col.CHROMA_HASH:
            h = (t.column(name).fill_null(0).to_numpy() if name in t.column_names else np.zeros(t.num_rows, np.int64))
            near &= (np.bitwise_count((h[:, None] ^ h[None, :]).view(np.uint64)) <= r) | (h == 0)[:, None] | (h == 0)
            continue
        col = t.column(name)
        h = col.fill_null(0).to_numpy().view(np.uint64)
        ok = col.is_valid().to_numpy(zero_copy_only=False)
        near &= (np.bitwise_count(h[:, None] ^ h[None, :]) <= r) & ok[:, None] & ok[None, :]
    ph = np.array(t.column(Col.PIXEL_HASH).to_pylist(), dtype=object)
    adj |= near | ((ph[:, None] == ph[None, :]) & (ph != None)[:, None])  # noqa: E711
    _, labels = connected_components(coo_matrix(adj), directed=False)
    sizes = np.bincount(labels)
    return {frozenset(np.flatnonzero(labels == g).tolist()) for g in np.flatnonzero(sizes > 1)}


def _groups(out: pa.Table) -> set[frozenset[int]]:
    gid = out.column(Col.DUP_GROUP).to_pylist()
    by: dict[int, set[int]] = {}
    for i, g in enumerate(gid):
        if g is not None:
            by.setdefault(g, set()).add(i)
    return {frozenset(v) for v in by.values()}


VERIFIED = {"phash": 10, "dhash": 12, "chroma_hash": 6}  # with the colour check, which abstains on 0


@pytest.mark.parametrize("rule", [{"phash": 10}, {"phash": 10, "dhash": 12}, VERIFIED])
def test_groups_equal_all_pairs_reference(rule: dict[str, int]) -> None:
    t = _collection()
    out = group_duplicates(t, rule, target_miss=EXACT)
    assert _groups(out) == _brute_groups(t, rule)
    assert out.column(Col.IMAGE_ID).equals(t.column(Col.IMAGE_ID))


def test_colour_check_vetoes_pairs_and_abstains_without_colour() -> None:
    t = _collection()
    luma_only = _groups(group_duplicates(t, {"phash": 10, "dhash": 12}, target_miss=EXACT))
    verified = _groups(group_duplicates(t, VERIFIED, target_miss=EXACT))
    assert verified != luma_only and sum(map(len, verified)) < sum(map(len, luma_only))  # some pairs vetoed
    # a run scored before chroma_hash existed (no column, or nulls) groups as if the check were not there
    without = group_duplicates(t.drop_columns([Col.CHROMA_HASH]), VERIFIED, target_miss=EXACT)
    assert _groups(without) == luma_only
    nulls = t.set_column(t.schema.get_field_index(Col.CHROMA_HASH), Col.CHROMA_HASH, pa.nulls(t.num_rows, pa.int64()))
    assert _groups(group_duplicates(nulls, VERIFIED, target_miss=EXACT)) == luma_only
    with pytest.raises(ConfigError, match="must not abstain"):
        NearRule.parse({"chroma_hash": 6, "phash": 10})


def _planted_hashes(n: int, seed: int, radii: tuple[int, int]) -> np.ndarray:
    """(n, 2) phash/dhash: random rows, a third of them within the radii of another row."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, (n, 2), dtype=np.uint64)
    for j in rng.choice(n, n // 3, replace=False):
        base = rng.integers(n)
        h[j] = [_flip(rng, h[base, c], int(rng.integers(0, r + 2))) for c, r in enumerate(radii)]
    h[rng.choice(n, 50)] = h[rng.choice(n, 50)]  # identical tuples: a bucket holding several copies
    return h


def test_kernel_forest_has_the_components_of_all_pairs() -> None:
    """12,000 rows: pass 1 splits them into partitions (n >= 8,192), unlike the 3,000-row tables."""
    radii = (10, 12)
    h = _planted_hashes(12_000, 5, radii)
    plan = plan_bands(radii[0], h.shape[0], EXACT)
    a, b = forest_edges(h, np.array(radii), plan.masks, plan.k)
    within = np.bitwise_count(h[a] ^ h[b]) <= np.array(radii)
    assert within.all() and a.size < h.shape[0]
    near = [np.flatnonzero((np.bitwise_count(h[i + 1:] ^ h[i]) <= np.array(radii)).all(axis=1)) + i + 1
            for i in range(h.shape[0])]  # all pairs, one row at a time
    ref_a = np.repeat(np.arange(h.shape[0]), [x.size for x in near])
    ref = connected_components(coo_matrix((np.ones(ref_a.size), (ref_a, np.concatenate(near))),
                                          shape=(h.shape[0],) * 2), directed=False)[1]
    got = connected_components(coo_matrix((np.ones(a.size), (a, b)), shape=(h.shape[0],) * 2), directed=False)[1]
    assert np.unique(np.c_[ref, got], axis=0).shape[0] == np.unique(ref).size == np.unique(got).size
    assert np.unique(ref).size < h.shape[0] - 2000  # the planted pairs are there to find


def test_kernel_started_from_given_groups_never_joins_two_given_rows() -> None:
    """Incremental use: rows below ``fixed`` keep their groups; only pairs touching a later row join."""
    rng = np.random.default_rng(7)
    base = rng.integers(0, 2**64, 3, dtype=np.uint64)
    # o1 ~ o2 (within the radius, but given as separate groups), n ~ o1 and n ~ o2; a far pair p1 ~ p2 of old rows
    o1, o2 = base[0], _flip(rng, base[0], 3)
    n = _flip(rng, base[0], 2)
    p1, p2 = base[1], _flip(rng, base[1], 2)
    h = np.array([[o1], [o2], [p1], [p2], [n]], dtype=np.uint64)
    plan = plan_bands(6, 5, EXACT)
    groups = np.array([0, 1, 2, 3, -1])
    a, b = forest_edges(h, np.array([6]), plan.masks, plan.k, None, groups, fixed=4)
    pairs = {frozenset(e) for e in zip(a.tolist(), b.tolist(), strict=True)}
    assert pairs == {frozenset({0, 4}), frozenset({1, 4})}  # n bridges o1 and o2; p1, p2 and o1-o2 stay apart
    a, b = forest_edges(h, np.array([6]), plan.masks, plan.k, None, np.array([0, 0, 2, 3, -1]), fixed=4)
    assert len(a) == 1 and {int(a[0]), int(b[0])} in ({0, 4}, {1, 4})  # o1, o2 given as one group: one edge


def test_threads_split_bands_without_changing_groups() -> None:
    t = _collection(3000, seed=4)
    rule = {"phash": 10, "dhash": 12}
    assert group_duplicates(t, rule, threads=2).equals(group_duplicates(t, rule, threads=1))


def test_default_plan_misses_pairs_at_the_radius_as_stated() -> None:
    rng = np.random.default_rng(3)
    pairs, r = 4000, 10
    base = rng.integers(0, 2**64, pairs, dtype=np.uint64)
    other = np.array([_flip(rng, b, r) for b in base], dtype=np.uint64)
    h = np.concatenate([base, other])
    t = pa.table({Col.IMAGE_ID: [str(i) for i in range(h.size)], Col.WIDTH: np.ones(h.size, int),
                  Col.HEIGHT: np.ones(h.size, int), Col.PHASH: h.view(np.int64)})
    plan = plan_bands(r, h.size)
    assert plan.miss() < 1e-3
    g = np.array(group_duplicates(t, {"phash": r}).column(Col.DUP_GROUP).to_pylist(), dtype=object)
    missed = int(sum(g[i] is None or g[i] != g[i + pairs] for i in range(pairs)))
    assert missed <= 3 * pairs * plan.miss() + 5  # expected ~4; a loose Poisson bound


def _policy_table(nr: list[float], status: list[str], sizes: list[int], uris: list[str]) -> pa.Table:
    n = len(nr)
    return pa.table({
        Col.IMAGE_ID: [f"i{k}" for k in range(n)], Col.URI: uris, Col.STATUS: status,
        Col.WIDTH: sizes, Col.HEIGHT: [100] * n,
        Col.PIXEL_HASH: ["same"] * 2 + [f"p{k}" for k in range(2, n)],
        Col.PHASH: pa.array([0, 0] + [(1 << k) - 1 for k in range(2, n)], pa.int64()),  # k bits set: distance k
        "iqaflow_nr": nr,
    })


def test_best_image_is_kept_and_the_others_point_at_it() -> None:
    t = _policy_table([0.5, 0.1, 0.9, float("nan")], ["ok"] * 4, [100] * 4, ["d", "c", "b", "a"])
    out = group_duplicates(t, PHASH_ONLY).to_pydict()
    assert out[Col.IS_DUPLICATE] == [True, True, False, True]
    assert out[Col.DUPLICATE_OF] == ["i2", "i2", None, "i2"]
    assert out[Col.DUP_DISTANCE] == [2, 2, None, 1]  # popcount(0b11 ^ 0) = 2, popcount(0b11 ^ 0b111) = 1
    assert len(set(out[Col.DUP_GROUP])) == 1 and out[Col.DUP_GROUP][0] is not None


def test_ties_go_to_the_next_key_and_error_rows_are_never_kept() -> None:
    t = _policy_table([0.7, 0.7, 0.7, 0.99], ["ok", "ok", "ok", "error"], [100, 300, 300, 900], ["z", "y", "x", "w"])
    out = group_duplicates(t, PHASH_ONLY).to_pydict()
    assert out[Col.IS_DUPLICATE] == [True, True, False, True]  # pixels tie between 1 and 2, uri "x" < "y"
    custom = group_duplicates(t, PHASH_ONLY, policy=[("missing_score", "max"), (Col.URI, "max")]).to_pydict()
    assert custom[Col.IS_DUPLICATE] == [False, True, True, True]
    only_errors = t.set_column(2, Col.STATUS, pa.array(["error"] * 4))
    assert group_duplicates(only_errors, PHASH_ONLY).to_pydict()[Col.IS_DUPLICATE] == [True, True, True, False]


def test_exact_copy_has_distance_zero_and_singletons_are_null() -> None:
    t = _policy_table([0.9, 0.1, 0.5], ["ok"] * 3, [100] * 3, ["a", "b", "c"])
    t = t.set_column(6, Col.PHASH, pa.array([0, -1, 2**32 - 1], pa.int64()))  # 32 or 64 bits apart: exact only
    out = group_duplicates(t, PHASH_ONLY).to_pydict()
    assert out[Col.DUP_DISTANCE] == [None, 0, None]
    assert out[Col.DUP_GROUP][2] is None and out[Col.IS_DUPLICATE] == [False, True, False]


def test_size_outliers_match_a_numpy_iqr_reference() -> None:
    rng = np.random.default_rng(5)
    w, h = rng.integers(800, 1200, 500), rng.integers(600, 900, 500)
    w[:5], h[5:10] = 30, 9000  # tiny, and very tall
    t = pa.table({Col.IMAGE_ID: [str(i) for i in range(500)], Col.WIDTH: w, Col.HEIGHT: h,
                  Col.PHASH: rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64)})
    out = group_duplicates(t, PHASH_ONLY).to_pydict()

    def outside(x: np.ndarray) -> np.ndarray:
        q1, q3 = np.quantile(x, 0.25), np.quantile(x, 0.75)
        return (x < q1 - IQR_FACTOR * (q3 - q1)) | (x > q3 + IQR_FACTOR * (q3 - q1))

    expected = outside(np.sqrt(w * h.astype(float))) | outside(np.minimum(w / h, h / w))
    assert out[Col.SIZE_OUTLIER] == expected.tolist() and expected[:10].all() and expected.sum() < 20
    np.testing.assert_allclose(out[Col.ASPECT_RATIO], w / h, rtol=1e-6)
    np.testing.assert_allclose(out[Col.MEGAPIXELS], w * h / 1e6, rtol=1e-6)


def test_incremental_join_equals_grouping_everything(tmp_path: Path) -> None:
    t = _collection(2400, seed=1)
    rule, policy = NearRule.parse({"phash": 10, "dhash": 12, "chroma_hash": 6}), KeepPolicy()
    full = group_duplicates(t, rule, target_miss=EXACT)
    old, new = t.slice(0, 1600), t.slice(1600)
    first = group_duplicates(old, rule, target_miss=EXACT)
    IndexFile.build(old, first, rule, policy, plan_bands(10, old.num_rows, EXACT)).write(tmp_path / "index.parquet")
    joined = join_new(IndexFile.read(tmp_path / "index.parquet"), new)
    assert joined.new.equals(full.slice(1600))
    # the earlier rows: as first grouped, patched with the changed ones, equal grouping everything
    changed = dict(zip(joined.changed.column(Col.IMAGE_ID).to_pylist(), joined.changed.to_pylist(), strict=True))
    patched = [changed.get(row[Col.IMAGE_ID], row) for row in first.to_pylist()]
    assert patched == full.slice(0, 1600).to_pylist()
    assert joined.index.table.num_rows == t.num_rows


def test_a_better_newcomer_becomes_the_kept_image() -> None:
    old = _policy_table([0.5, 0.4], ["ok"] * 2, [100] * 2, ["a", "b"])
    rule, policy = NearRule.parse(PHASH_ONLY), KeepPolicy()
    first = group_duplicates(old, rule)
    index = IndexFile.build(old, first, rule, policy, plan_bands(10, 2))
    newcomer = old.slice(0, 1).set_column(0, Col.IMAGE_ID, pa.array(["new"])).set_column(
        7, "iqaflow_nr", pa.array([0.95]))
    joined = join_new(index, newcomer)
    assert joined.new.to_pydict()[Col.IS_DUPLICATE] == [False]
    assert joined.changed.to_pydict()[Col.DUPLICATE_OF] == ["new", "new"]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A two-process Dask cluster on loopback for this module's cluster tests; closed after them."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_dask_path_equals_in_memory_path(tmp_path: Path, scheduler: str) -> None:
    from distributed import Client

    t = _collection(2000, seed=2)
    rule = VERIFIED
    expected = group_duplicates(t, rule)
    paths = []
    for k, start in enumerate(range(0, t.num_rows, 700)):
        paths.append(tmp_path / f"part-{k}.parquet")
        pq.write_table(t.slice(start, 700), paths[-1])
    with Client(scheduler, set_as_default=False) as client:
        assert group_duplicates(t, rule, client=client).equals(expected)
        assert group_duplicates(paths, rule, client=client).equals(expected)


def _run_shards(root: Path, t: pa.Table, rows: int) -> list[str]:
    (root / "results").mkdir(parents=True)
    files = []
    for k, start in enumerate(range(0, t.num_rows, rows)):
        files.append(str(root / "results" / f"part-{k:05d}.parquet"))
        pq.write_table(t.slice(start, rows), files[-1])
    return files


def test_run_pass_groups_on_the_flows_cluster_like_in_process(
    tmp_path: Path, scheduler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection pass with the default rule, once in process and once on the cluster (threshold
    lowered below the run's rows, several map parts): the same columns in every shard and index."""
    t = _collection(4000, seed=6)
    policy, directions = DuplicatePolicy(), {"iqaflow_nr": True}
    local, remote = tmp_path / "local", tmp_path / "remote"
    done = duplicate_pass(str(local), _run_shards(local, t, 1500), policy, directions, dask_address=scheduler)
    monkeypatch.setattr(run_pass, "CLUSTER_ROWS", 1000)
    monkeypatch.setattr(run_pass, "PART_ROWS", 900)
    seen: list[int] = []
    original = dedup_dask.group_on_cluster

    def spy(table: pa.Table, *args: object, **kwargs: Any) -> pa.Table:
        seen.append(kwargs["rows_per_part"])
        return original(table, *args, **kwargs)

    monkeypatch.setattr(dedup_dask, "group_on_cluster", spy)
    on_cluster = duplicate_pass(str(remote), _run_shards(remote, t, 1500), policy, directions,
                                dask_address=scheduler)
    assert seen == [900]  # the cluster path ran, on 5 parts of <= 900 rows
    assert done.groups == on_cluster.groups > 50 and done.duplicates == on_cluster.duplicates
    for name in sorted(p.name for p in (local / "results").iterdir()):
        assert pq.read_table(remote / "results" / name).equals(pq.read_table(local / "results" / name))
    assert pq.read_table(remote / "dedup" / "index.parquet").equals(pq.read_table(local / "dedup" / "index.parquet"))
