"""One Dask worker per GPU: the cluster choice (pure, on CPU), the pinned fallback cluster, the flow on CUDA."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from iqaflow.config.run import build_config
from iqaflow.errors import ConfigError
from iqaflow.flows import cluster
from iqaflow.flows.cluster import CLUSTER_CONFIG, PinnedGPUCluster, choose_cluster, rotated, visible_gpus
from iqaflow.schemas.results import Col

QUIET = {"host": "127.0.0.1", "dashboard_address": None, "silence_logs": logging.ERROR, "config": CLUSTER_CONFIG}


def test_cpu_runs_keep_local_cluster() -> None:
    c = choose_cluster("cpu", [], has_dask_cuda=True, workers=None, threads_per_worker=2)
    assert c.cluster_class == "distributed.LocalCluster" and not c.notes
    assert c.kwargs == {"n_workers": 2, "threads_per_worker": 2, "processes": True, **QUIET}
    assert choose_cluster("cpu", ["0"], True, 5).kwargs["n_workers"] == 5  # cpu asked: GPUs are not used


def test_cuda_with_dask_cuda_is_one_worker_per_gpu() -> None:
    c = choose_cluster("cuda", ["0", "1", "2"], has_dask_cuda=True, workers=None, threads_per_worker=4)
    assert c.cluster_class == "dask_cuda.LocalCUDACluster"
    assert c.kwargs == {"CUDA_VISIBLE_DEVICES": "0,1,2", "n_workers": 3, "threads_per_worker": 1, **QUIET}
    assert any("threads_per_worker=4 ignored" in n for n in c.notes)


def test_cuda_without_dask_cuda_pins_workers_itself() -> None:
    c = choose_cluster("cuda", ["3", "5"], has_dask_cuda=False, workers=None)
    assert c.cluster_class == "iqaflow.flows.cluster.PinnedGPUCluster"
    assert c.kwargs == {"devices": ["3", "5"], "n_workers": 2, **QUIET}
    assert any("pip install 'iqaflow[gpu]'" in n for n in c.notes)


def test_worker_count_on_cuda_is_capped_at_the_gpu_count() -> None:
    more = choose_cluster("cuda", ["0", "1"], True, workers=8)
    assert more.kwargs["n_workers"] == 2 and any("workers=8 but 2 GPU(s)" in n for n in more.notes)
    assert choose_cluster("cuda", ["0", "1", "2", "3"], True, workers=2).kwargs["n_workers"] == 2


def test_cuda_without_a_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no GPU"):
        choose_cluster("cuda", [], has_dask_cuda=True, workers=None)


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert visible_gpus() == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus() == ["0", "1"]
    assert rotated(["3", "5", "7"], 1) == "5,7,3"


def test_task_runner_for_picks_the_pinned_cluster_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from iqaflow.flows.score import task_runner_for

    base = {"source": "x", "models": ["sharpness"]}
    assert task_runner_for(build_config({**base, "dask_address": "tcp://127.0.0.1:1"})).address == "tcp://127.0.0.1:1"
    assert task_runner_for(build_config({**base, "device": "cpu"})).cluster_class == "distributed.LocalCluster"
    monkeypatch.setattr(cluster, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(cluster, "has_dask_cuda", lambda: False)  # as without the gpu extra
    runner = task_runner_for(build_config({**base, "device": "cuda"}))
    assert runner.resolved_cluster_class is PinnedGPUCluster  # the qualified name resolves
    assert runner.cluster_kwargs["devices"] == ["0", "1"] and runner.cluster_kwargs["n_workers"] == 2


@pytest.mark.slow
def test_pinned_cluster_gives_each_worker_its_own_gpu_first() -> None:
    """Real worker processes; CUDA_VISIBLE_DEVICES is only read, so this runs without GPUs."""
    import os

    from distributed import Client

    with PinnedGPUCluster(["0", "1"], **QUIET) as c, Client(c) as client:
        assert sorted(c.workers) == ["0", "1"]
        seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
        names = {w["id"]: addr for addr, w in client.scheduler_info(n_workers=-1)["workers"].items()}
        assert {n: seen[names[n]] for n in ("0", "1")} == {"0": "0,1", "1": "1,0"}
        assert {w["nthreads"] for w in client.scheduler_info(n_workers=-1)["workers"].values()} == {1}


@pytest.mark.slow
def test_workers_of_a_local_cluster_run_without_the_statistical_profiler() -> None:
    """Its per-second profiles of deep scorer stacks grow worker memory through a run (CLUSTER_CONFIG)."""
    from distributed import Client, LocalCluster

    choice = choose_cluster("cpu", [], False, 1)
    with LocalCluster(**choice.kwargs) as c, Client(c) as client:
        profiling = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
        assert list(profiling.values()) == [False]


@pytest.mark.gpu
@pytest.mark.slow
def test_flow_on_cuda_matches_cpu_scores(prefect_api: None, tmp_path: Path) -> None:
    """The real flow with device cuda: a worker per GPU, kang on the GPU through the tensor path."""
    from jpegkit import make_jpegs

    from iqaflow.flows.score import run_score
    from iqaflow.models.deep.zoo import Kang
    from iqaflow.models.registry import create_scorer
    from iqaflow.models.weights import WeightsStore, configure_store
    from iqaflow.tasks.score.shard import score_members

    files = make_jpegs(tmp_path / "images")
    store = WeightsStore(str(tmp_path / "weights"))
    Kang.make_test_weights(store, seed=0)
    cfg = build_config({"source": str(tmp_path / "images"), "out": str(tmp_path / "out"), "models": ["kang"],
                        "device": "cuda", "weights": store.root, "shard_size": 5, "batch_size": 4, "track": False})
    summary = run_score(cfg)
    got = pq.read_table(summary.results_dir).sort_by(Col.URI)
    configure_store(store.root)
    ref = score_members(sorted(str(p) for p in files), [None] * len(files), [create_scorer("kang", "cpu")], "ref",
                        gpu_decode=False)
    for col in (Col.URI, Col.STATUS, Col.ERROR_CODE, Col.WIDTH, Col.HEIGHT, Col.MODE):
        assert got[col].to_pylist() == ref[col].to_pylist(), col
    a, b = np.array(ref["kang"].to_pylist(), float), np.array(got["kang"].to_pylist(), float)
    ok = ~np.isnan(a)
    assert np.array_equal(ok, ~np.isnan(b))
    np.testing.assert_allclose(b[ok], a[ok], rtol=0, atol=2e-2 * np.abs(a[ok]).max())  # nvJPEG + fp16 autocast
