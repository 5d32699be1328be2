"""Shard planning: every manifest row in exactly one shard, a halving tail, stable ids, stale parts removed."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iqaflow.schemas.results import MANIFEST_SCHEMA, Col
from iqaflow.tasks.io.plan import MIN_TAIL_PIECE, plan_shards, read_shard_members, tail_pieces
from iqaflow.tasks.io.storage import join, open_fs


@pytest.mark.parametrize(("rows", "pieces"), [
    (500, [250, 125, 63, 62]),
    (1000, [500, 250, 125, 63, 62]),
    (80, [40, 40]),
    (64, [32, 32]),
    (63, [63]),  # a half would be under MIN_TAIL_PIECE
    (1, [1]),
    (0, [0]),
])
def test_tail_pieces_halve_down_to_the_smallest_piece(rows: int, pieces: list[int]) -> None:
    assert MIN_TAIL_PIECE == 32
    assert tail_pieces(rows) == pieces


def _write_manifest(url: str, groups: list[int], mtime: float = 1.0) -> list[str]:
    uris = [f"/photos/img{i:04d}.jpg" for i in range(sum(groups))]
    table = pa.table({Col.URI: uris, Col.BYTES: [1000 + i for i in range(len(uris))], Col.MTIME: [mtime] * len(uris),
                      Col.ETAG: [None] * len(uris), Col.REFERENCE_URI: [None] * len(uris)}, schema=MANIFEST_SCHEMA)
    fs, path = open_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh, pq.ParquetWriter(fh, MANIFEST_SCHEMA) as writer:
        start = 0
        for n in groups:
            writer.write_table(table.slice(start, n), row_group_size=n)
            start += n
    return uris


@pytest.fixture(params=["local", "memory"])
def run_root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A run folder on local disk and on a non-local fsspec store (paths without the local form)."""
    return str(tmp_path) if request.param == "local" else f"memory://plan-{uuid.uuid4().hex}"


def test_every_row_in_exactly_one_shard_in_manifest_order(run_root: str) -> None:
    manifest, results = join(run_root, "manifest.parquet"), join(run_root, "results")
    uris = _write_manifest(manifest, [100, 100, 80])
    plans = plan_shards(manifest, results, "fp")
    assert [(p.index, p.row_group, p.offset, p.size) for p in plans] == [
        (0, 0, 0, 100), (1, 1, 0, 100), (2, 2, 0, 40), (3, 2, 40, 40)]
    assert [u for p in plans for u in read_shard_members(p)[Col.URI]] == uris
    assert len({p.shard_id for p in plans}) == len(plans)
    assert plan_shards(manifest, results, "fp") == plans  # a re-run plans the same shards
    assert {p.shard_id for p in plan_shards(manifest, results, "other scorers")}.isdisjoint(p.shard_id for p in plans)


def test_one_row_group_is_cut_so_that_several_workers_share_it(tmp_path: Path) -> None:
    manifest = str(tmp_path / "manifest.parquet")
    _write_manifest(manifest, [1000])
    assert [p.size for p in plan_shards(manifest, str(tmp_path / "results"), "fp")] == [500, 250, 125, 63, 62]


def _commit(fs: fsspec.AbstractFileSystem, path: str) -> None:
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, b"x")


def test_result_files_the_plan_no_longer_has_are_removed(run_root: str) -> None:
    manifest, results = join(run_root, "manifest.parquet"), join(run_root, "results")
    _write_manifest(manifest, [50, 50])
    fs, rpath = open_fs(results)
    plans = plan_shards(manifest, results, "fp")
    for p in plans:
        _commit(fs, open_fs(p.results_path)[1])
    carried = join(results, "part-carried-0123.parquet")
    foreign = [join(rpath, "part-0123456789abcdef0123.parquet"), join(rpath, "part-carried-old.parquet")]
    untouched = [join(rpath, "part-x.parquet.tmp-1234"), join(rpath, "notes.txt")]
    for path in [open_fs(carried)[1], *foreign, *untouched]:
        _commit(fs, path)

    assert plan_shards(manifest, results, "fp", [carried]) == plans
    left = set(fs.ls(rpath, detail=False))
    assert {open_fs(p.results_path)[1] for p in plans} | {open_fs(carried)[1], *untouched} == left

    # an image changed (new mtime) since the attempt that committed these: its shards get new ids,
    # and the old files, which would duplicate its rows, go
    _write_manifest(manifest, [50, 50], mtime=2.0)
    replanned = plan_shards(manifest, results, "fp", [carried])
    assert {p.shard_id for p in replanned}.isdisjoint(p.shard_id for p in plans)
    assert set(fs.ls(rpath, detail=False)) == {open_fs(carried)[1], *untouched}


def test_planning_a_new_run_needs_no_results_folder(tmp_path: Path) -> None:
    manifest = str(tmp_path / "manifest.parquet")
    _write_manifest(manifest, [10])
    assert [p.size for p in plan_shards(manifest, str(tmp_path / "results"), "fp")] == [10]
    assert not (tmp_path / "results").exists()
