"""The flow against an existing scheduler: real `dask scheduler` + 2 `dask worker` processes."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from iqaflow.config.run import build_config
from iqaflow.schemas.results import Col

pytestmark = pytest.mark.slow


def _expected(collection: Path) -> set[str]:
    import csv

    with open(collection / "labels.csv") as fh:
        return {str(collection / r["path"]) for r in csv.DictReader(fh)}


def test_flow_on_existing_scheduler(prefect_api: None, dask_processes, collection: Path, tmp_path: Path) -> None:
    from iqaflow.flows.score import run_score

    cfg = build_config({"source": str(collection), "out": str(tmp_path), "dask_address": dask_processes.address,
                        "shard_size": 50})
    summary = run_score(cfg)
    uris = pq.read_table(summary.results_dir)[Col.URI].to_pylist()
    assert len(uris) == len(set(uris)) and set(uris) == _expected(collection)


def test_killing_a_worker_mid_run_loses_and_duplicates_nothing(
    prefect_api: None, dask_processes, collection: Path, tmp_path: Path
) -> None:
    from iqaflow.flows.score import run_score

    cfg = build_config({"source": str(collection), "out": str(tmp_path), "dask_address": dask_processes.address,
                        "shard_size": 8, "batch_size": 4})
    results = Path(tmp_path) / "runs"
    killed = threading.Event()

    def kill_after_first_commit() -> None:
        from conftest import wait_until

        wait_until(lambda: any(results.rglob("part-*.parquet")), 120, "first shard", interval=0.05)
        dask_processes.workers[0].kill()
        killed.set()

    killer = threading.Thread(target=kill_after_first_commit, daemon=True)
    killer.start()
    summary = run_score(cfg)
    killer.join(timeout=5)
    assert killed.is_set(), "the run ended before a worker could be killed"
    assert summary.shards == 27
    uris = pq.read_table(summary.results_dir)[Col.URI].to_pylist()
    assert len(uris) == len(set(uris)) and set(uris) == _expected(collection)
