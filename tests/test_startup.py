"""A run's own start-up: the Prefect API server and the local Dask cluster start together, and stop.

Run in a child process with no Prefect API configured, as the CLI runs on a laptop: this process's
session test server (``prefect_api``) would otherwise be found and shared instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

_CHILD = r"""
import json, os, sys
import psutil
from distributed import Client
from iqaflow.config.run import build_config
from iqaflow.errors import StartupError
from iqaflow.flows import startup
from iqaflow.flows.cluster import cluster_for
from iqaflow.flows.score import run_score


def leftovers():  # worker processes (spawned by a nanny) and API servers (uvicorn) still running
    return sorted(" ".join(p.cmdline()[1:4]) for p in psutil.Process().children(recursive=True)
                  if any(k in " ".join(p.cmdline()) for k in ("spawn_main", "uvicorn")))


def warmed():  # the flow's modules imported at start-up (warm.WarmWorker), before any task
    return "iqaflow.flows.score" in sys.modules


def worker_api_url():  # the URL Prefect in the worker process loaded on import (it is not read again)
    from prefect.settings import PREFECT_API_URL
    return str(PREFECT_API_URL.value())


def intervals(server):  # ms between wake-ups of its periodic callbacks (cluster.CLUSTER_CONFIG)
    return {k: pc.callback_time for k, pc in server.periodic_callbacks.items()
            if k in ("tick", "monitor", "memory_monitor", "profile")}


out = {}
cfg = build_config(json.loads(sys.argv[1]))
# A worker that cannot start: the cluster's start fails, and the server started meanwhile is stopped.
choice = cluster_for("cpu", 1, 1)
broken = type(choice)(choice.cluster_class, {**choice.kwargs, "preload": ["iqaflow.no_such_module"]})
try:
    with startup.local_cluster(broken):
        pass
except StartupError as exc:
    out["failed"] = str(exc)
out["after_failure"] = {"env": os.environ.get("PREFECT_API_URL"), "leftovers": leftovers()}

# The chosen port is taken before the server binds it: Prefect moves the server, the workers restart.
import socket
taken = socket.socket()
taken.bind(("127.0.0.1", 0))  # bound, not listening: the server's bind fails and Prefect moves it
free_port, startup._free_port = startup._free_port, lambda: taken.getsockname()[1]
with startup.local_cluster(choice, warm=["iqaflow.flows.score"]) as cluster, Client(cluster) as client:
    out["moved"] = {"taken": taken.getsockname()[1], "url": os.environ["PREFECT_API_URL"],
                    "workers": sorted(set(client.run(os.environ.get, "PREFECT_API_URL").values())),
                    "warmed": list(client.run(warmed).values()),  # the restarted workers too
                    "saturation": cluster.scheduler.WORKER_SATURATION,
                    "intervals": {"scheduler": intervals(cluster.scheduler),
                                  "nannies": [intervals(n) for n in cluster.workers.values()],
                                  "workers": list(client.run(lambda dask_worker: intervals(dask_worker)).values())}}
from prefect.server.api.server import SubprocessASGIServer
SubprocessASGIServer().stop()  # as at exit, so that the run below starts its own
del os.environ["PREFECT_API_URL"]
startup._free_port = free_port

real = startup._start_cluster
def spy(*args):  # what the workers see, as soon as the cluster is up
    cluster = real(*args)
    with Client(cluster) as client:
        out["worker_urls"] = sorted(set(client.run(worker_api_url).values()))
        out["worker_env"] = sorted(set(client.run(os.environ.get, "PREFECT_API_URL").values()))
        out["warmed"] = list(client.run(warmed).values())
    return cluster
startup._start_cluster = spy
summary = run_score(cfg)
out.update(images=summary.images, ok=summary.ok, url=os.environ["PREFECT_API_URL"],
           analytics=os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED"),
           leftovers=[c for c in leftovers() if "uvicorn" not in c])
print(json.dumps(out))
"""


def test_run_starts_api_and_cluster_together_and_leaves_no_worker(tmp_path: Path) -> None:
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (64, 48), (40 * i, 90, 200)).save(images / f"{i}.jpg")
    cfg = {"source": str(images), "out": str(tmp_path / "out"), "models": ["sharpness"], "workers": 1,
           "shard_size": 2, "track": False}
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_LOGGING_LEVEL="ERROR", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True,
                         env=env, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])

    assert "did not start" in got["failed"] and "Fix: see the worker errors above" in got["failed"]
    # The worker's ImportError reaches the nanny through a queue that it polls every 50 ms, and is lost
    # when the worker's exit is noticed first (seen once, in a fresh clone's full run): then only the
    # worker's own log, which the message points to, names it.
    assert "iqaflow.no_such_module" in got["failed"] or "No module named 'iqaflow.no_such_module'" in res.stderr
    assert got["after_failure"] == {"env": None, "leftovers": []}  # no server, no worker, URL not exported

    moved = got["moved"]
    assert f":{moved['taken']}/" not in moved["url"] and moved["workers"] == [moved["url"]]
    assert moved["warmed"] == [True]
    # Dask's defaults would be 20 ms ticks, 500 ms system monitor, 100 ms memory monitor, 10 ms profiler
    every = {"tick": 500, "monitor": 2000, "memory_monitor": 500}  # and no "profile" (10 ms)
    assert moved["intervals"] == {"scheduler": {"tick": 500, "monitor": 2000}, "nannies": [every],
                                  "workers": [every]}
    assert moved["saturation"] == 1.0  # one shard at a time per worker thread; Dask's default 1.1 gives two

    assert got["url"].startswith("http://127.0.0.1:") and got["url"].endswith("/api")
    assert got["worker_env"] == [got["url"]]  # exported before the workers spawned...
    assert got["worker_urls"] == [got["url"]]  # ...so Prefect in each worker uses this process's server
    assert got["warmed"] == [True]
    assert (got["images"], got["ok"]) == (4, 4)
    assert got["analytics"] == "false"  # the server it started (env inherited) calls nowhere off the machine
    assert got["leftovers"] == []  # the run closed its cluster; its API server lives until the process exits
