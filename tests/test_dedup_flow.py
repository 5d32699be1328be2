"""The duplicate pass inside real runs: fingerprints in the shards, groups in the results, incremental runs.

A labelled variant set (tests/dupkit.py) of six Kodak photos goes through `run_score` with its real
Prefect flow and Dask workers. Then new variants are added and an incremental run checks only them
against the first run's hash index; its groups must equal those of a fresh run over everything.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SHARED_DATA
from dupkit import NEAR, build_set, pair_metrics

from iqaflow.config.run import build_config
from iqaflow.schemas.results import Col

pytestmark = pytest.mark.slow
ORIGINALS = sorted((SHARED_DATA / "kodak").glob("*.png"))[:6]


def _run(source: Path, out: Path, run_id: str, incremental: str | None = None) -> dict[str, dict]:
    from iqaflow.flows.score import run_score

    cfg = build_config({"source": str(source), "out": str(out), "models": ["sharpness"], "workers": 1,
                        "shard_size": 40, "run_id": run_id, "incremental": incremental, "track": False})
    summary = run_score(cfg)
    return {Path(r[Col.URI]).name: r for r in pq.read_table(summary.results_dir).to_pylist()}


def _group_of(rows: dict[str, dict]) -> dict[str, str]:
    """Each file's group: its kept image's name (itself when it is kept or alone)."""
    by_id = {r[Col.IMAGE_ID]: name for name, r in rows.items()}
    return {name: by_id.get(r[Col.DUPLICATE_OF], name) for name, r in rows.items()}


@pytest.fixture(scope="module")
def variant_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("dups")
    items = build_set(ORIGINALS, root / "set", seed=0, lookalike_every=0)
    return root, items


def test_runs_group_variants_and_incremental_runs_agree(prefect_api: None, variant_set: tuple[Path, list]) -> None:
    root, items = variant_set
    first_half = {Path(it.path).name for it in items if it.source in {p.stem for p in ORIGINALS[:4]}}
    src = root / "src"
    src.mkdir()
    for it in items:
        if Path(it.path).name in first_half:
            shutil.copy(it.path, src / Path(it.path).name)
    out = root / "out"
    first = _run(src, out, "first")
    assert all(r[Col.PIXEL_HASH] and r[Col.PHASH] is not None and r[Col.DHASH] is not None for r in first.values())

    for it in items:  # the other two originals and their variants arrive later
        shutil.copy(it.path, src / Path(it.path).name)
    later = _run(src, out, "later", incremental=str(out / "runs" / "first"))
    fresh = _run(src, root / "fresh", "fresh")
    assert _group_of(later) == _group_of(fresh)
    assert {k: r[Col.DUP_DISTANCE] for k, r in later.items()} == {k: r[Col.DUP_DISTANCE] for k, r in fresh.items()}
    assert (out / "runs" / "later" / "dedup" / "index.parquet").is_file()

    # Grouping as the run wrote it, against the labels: every exact copy found, near variants mostly.
    names = [Path(it.path).name for it in items]
    group = _group_of(fresh)
    same = np.array([[group[a] == group[b] for b in names] for a in names])
    metrics = pair_metrics(items, same)
    assert metrics["recall"]["copy"] == 1.0 and metrics["precision"] >= 0.99, metrics
    assert np.mean([metrics["recall"][t] for t in NEAR]) >= 0.9, metrics
    # The kept image of each group is the best by the default policy: highest resolution here (no iqaflow_nr).
    for name, r in fresh.items():
        if r[Col.IS_DUPLICATE]:
            kept = fresh[group[name]]
            assert kept[Col.WIDTH] * kept[Col.HEIGHT] >= r[Col.WIDTH] * r[Col.HEIGHT]
