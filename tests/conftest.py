"""Shared fixtures. Servers are real and on loopback; nothing here mocks a component."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Isolate Prefect's home (database, settings) and the weights cache from the user's before
# anything imports prefect.
_HOME = Path(tempfile.mkdtemp(prefix="iqaflow-tests-"))
os.environ.setdefault("PREFECT_HOME", str(_HOME / "prefect"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("XDG_CACHE_HOME", str(_HOME / "cache"))
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA (gpu marker); none on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """A temporary Prefect API server (real, on loopback) with its own database for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The labelled demo collection: 15 bases x (clean + 13 distortions) + 3 broken files = 213 files."""
    from iqaflow.evaluation.synth import make_collection

    return make_collection(tmp_path_factory.mktemp("collection"), n_bases=15, size=192, seed=0)


@pytest.fixture
def kodak() -> Path:
    path = SHARED_DATA / "kodak"
    assert path.is_dir(), f"shared data expected beside the checkout at {path}"
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:  # noqa: ANN001
    """Poll ``predicate`` until true or ``timeout`` seconds pass (never a blind sleep)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server as a real process on loopback; s3fs and boto3 reach it over HTTP."""
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            return True
        except Exception:
            return proc.poll() is not None  # a dead process ends the wait; checked below

    try:
        wait_until(up, 60, "moto server")
        assert proc.poll() is None, "moto server exited at start"
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        yield endpoint
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:
        proc.terminate()
        proc.wait(timeout=20)


class DaskProcesses:
    """A real ``dask scheduler`` and ``dask worker`` processes on loopback."""

    def __init__(self, n_workers: int) -> None:
        import subprocess
        import sys

        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        dask = str(Path(sys.executable).parent / "dask")
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"], **quiet
        )
        self.workers = [
            subprocess.Popen([dask, "worker", self.address, "--nthreads", "1", "--nworkers", "1", "--host",
                              "127.0.0.1", "--no-dashboard", "--name", f"w{i}"], **quiet)
            for i in range(n_workers)
        ]
        self.wait_for_workers(n_workers)

    def n_workers(self) -> int:
        from distributed import Client

        try:
            with Client(self.address, timeout=5) as client:
                return len(client.scheduler_info(n_workers=-1)["workers"])
        except Exception:
            return -1

    def wait_for_workers(self, n: int, timeout: float = 90) -> None:
        wait_until(lambda: self.n_workers() >= n, timeout, f"{n} dask workers", interval=0.5)

    def close(self) -> None:
        for p in [*self.workers, self.scheduler]:
            p.terminate()
        for p in [*self.workers, self.scheduler]:
            try:
                p.wait(timeout=20)
            except Exception:
                p.kill()


@pytest.fixture
def dask_processes() -> Iterator[DaskProcesses]:
    procs = DaskProcesses(2)
    yield procs
    procs.close()
