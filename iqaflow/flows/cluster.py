"""Which local Dask cluster a run starts: CPU worker processes, or one single-threaded worker per GPU.

On CUDA each worker process must own one GPU: two processes on one GPU compete for its memory
and hold two copies of every model, and a worker that sees every GPU uses only ``cuda:0``.
dask-cuda's ``LocalCUDACluster`` (the optional ``gpu`` extra) does this and more (CPU affinity per
GPU, device memory spilling); without it ``PinnedGPUCluster`` gives each worker the same
``CUDA_VISIBLE_DEVICES`` rotation, so its own GPU is its ``cuda:0``. ``choose_cluster`` is the
decision as a pure function; ``cluster_for`` gathers the facts from this machine.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from distributed import LocalCluster

from iqaflow.errors import ConfigError

log = logging.getLogger(__name__)

CPU_WORKERS = 2  # local worker processes when the config does not say
# Dask config for the clusters a run starts: the workers get it (the nanny merges it over the client's
# config; dotted keys, as the merge is shallow) and ``startup`` sets it in this process while the
# scheduler and nannies are made. Dask's defaults suit many short tasks watched on a dashboard; a run's
# tasks are shards of minutes and no dashboard is open.
# - The statistical profiler keeps up to 1000 one-second profiles of the scorers' deep stacks: measured,
#   +4 MB of worker memory per 500 images for the first 17 minutes of a run and 3% of its speed.
# - The event-loop tick (20 ms), the system monitor (500 ms, disk counters included) and the memory
#   monitor (100 ms) woke the scheduler's loop 105 times a second, 4.4% of a core, and each worker's
#   loop 1.7%: CPU the scorers lose when workers fill the cores. With these: 1.0% and 0.3% (2 workers
#   on 2 cores). Memory limits are still enforced, within half a second.
# - Each single-threaded worker is given one shard at a time, not Dask's 1.1 x threads rounded up (2): a
#   shard waiting on a busy worker is one the worker that finishes first cannot take, so the run's end
#   could wait for a whole shard scored by one worker while the others idle.
# Users who want Dask's defaults or the dashboard run their own cluster (dask_address).
CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.system-monitor.disk": False,
    "distributed.worker.memory.monitor-interval": "500ms",
    "distributed.scheduler.worker-saturation": 1.0,
}
_COMMON: dict[str, Any] = {
    "host": "127.0.0.1", "dashboard_address": None, "silence_logs": logging.ERROR, "config": CLUSTER_CONFIG,
}


@dataclass(frozen=True)
class ClusterChoice:
    cluster_class: str  # qualified name, as DaskTaskRunner takes it
    kwargs: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what the user should know (logged as warnings)


def choose_cluster(
    device: str, gpus: Sequence[str], has_dask_cuda: bool, workers: int | None, threads_per_worker: int = 1
) -> ClusterChoice:
    """The local cluster for a run.

    ``device``: the run's device with ``auto`` resolved (cpu or cuda); ``gpus``: the GPU ids this
    machine shows (CUDA_VISIBLE_DEVICES order); ``workers``: the configured worker count, None
    when not set. GPU workers always run one thread: a second would only queue on the same GPU.
    """
    common = dict(_COMMON)
    if device != "cuda":
        return ClusterChoice("distributed.LocalCluster", {
            "n_workers": workers or CPU_WORKERS, "threads_per_worker": threads_per_worker, "processes": True, **common,
        })
    if not gpus:
        raise ConfigError(
            "device 'cuda' was requested but this machine shows no GPU (torch.cuda.device_count() is 0; "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}). Fix: set device to auto or cpu, "
            "run where CUDA is available, or set dask_address to a cluster with GPU workers"
        )
    notes: list[str] = []
    n = len(gpus) if workers is None else min(workers, len(gpus))
    if workers is not None and workers > len(gpus):
        notes.append(f"workers={workers} but {len(gpus)} GPU(s) visible: starting {n}, one per GPU")
    if threads_per_worker != 1:
        notes.append(f"threads_per_worker={threads_per_worker} ignored on CUDA: GPU workers run one thread")
    if has_dask_cuda:
        return ClusterChoice("dask_cuda.LocalCUDACluster", {
            "CUDA_VISIBLE_DEVICES": ",".join(gpus), "n_workers": n, "threads_per_worker": 1, **common,
        }, tuple(notes))
    notes.append("dask-cuda is not installed: pinning one worker per GPU with CUDA_VISIBLE_DEVICES. "
                 "Fix (optional, adds CPU affinity per GPU): pip install 'iqaflow[gpu]'")
    return ClusterChoice("iqaflow.flows.cluster.PinnedGPUCluster", {"devices": list(gpus), "n_workers": n, **common},
                         tuple(notes))


def visible_gpus() -> list[str]:
    """GPU ids as CUDA_VISIBLE_DEVICES names them (or 0..n-1), without creating a CUDA context here."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(n)]
    return [d.strip() for d in env.split(",") if d.strip()][:n]


def run_device(requested: str) -> str:
    """The run's device as the client sees it: auto is cuda when this machine has CUDA."""
    if requested != "auto":
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def has_dask_cuda() -> bool:
    return importlib.util.find_spec("dask_cuda") is not None


def cluster_for(device: str, workers: int | None, threads_per_worker: int) -> ClusterChoice:
    """``choose_cluster`` with this machine's facts; its notes are logged."""
    resolved = run_device(device)
    gpus = visible_gpus() if resolved == "cuda" else []
    choice = choose_cluster(resolved, gpus, has_dask_cuda(), workers, threads_per_worker)
    for note in choice.notes:
        log.warning("%s", note)
    return choice


def rotated(devices: Sequence[str], i: int) -> str:
    """CUDA_VISIBLE_DEVICES for worker ``i``: its GPU first, so it is that worker's ``cuda:0``."""
    return ",".join([*devices[i:], *devices[:i]])


class PinnedGPUCluster(LocalCluster):
    """A LocalCluster with one single-threaded worker process per GPU, each pinned with CUDA_VISIBLE_DEVICES.

    Workers are named by their GPU id, as dask-cuda names them; the env is set by each worker's
    nanny in the child process before anything can create a CUDA context there.
    """

    def __init__(self, devices: Sequence[str], n_workers: int | None = None, **kwargs: Any) -> None:
        from distributed.system import MEMORY_LIMIT

        self.devices = [str(d) for d in devices]
        n = len(self.devices) if n_workers is None else n_workers
        if not 1 <= n <= len(self.devices):
            raise ValueError(f"expected 1 to {len(self.devices)} workers (one per GPU {self.devices}), got {n}")
        kwargs.setdefault("memory_limit", MEMORY_LIMIT // n)  # LocalCluster splits memory only for n_workers > 0
        super().__init__(n_workers=0, threads_per_worker=1, processes=True, **kwargs)
        try:
            self.scale(n)
            self.sync(self._correct_state)
        except Exception:  # as SpecCluster does when its workers fail to start: leave nothing running
            self.close()
            raise

    def new_worker_spec(self) -> dict[str, Any]:
        free = [d for d in self.devices if d not in self.worker_spec]
        if not free:
            raise ValueError(f"cannot start more workers than GPUs {self.devices}")
        spec = copy.deepcopy(self.new_spec)
        options = spec["options"]
        options["env"] = {**options.get("env", {}), "CUDA_VISIBLE_DEVICES": rotated(self.devices,
                                                                                    self.devices.index(free[0]))}
        return {free[0]: spec}
