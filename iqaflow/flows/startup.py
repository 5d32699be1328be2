"""Start a run's Prefect API server and its local Dask cluster at the same time.

Each takes seconds: the ephemeral API server imports Prefect's server and migrates its database,
and each worker process imports prefect, torch and the scorers (``warm``). The workers
read PREFECT_API_URL once, from the environment they inherit when they spawn. So the URL comes
first: a free port is chosen and its URL exported, then the server starts in a thread while the
cluster starts in the calling thread.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import dask
from distributed import Client
from distributed.deploy.cluster import Cluster
from prefect.utilities.importtools import from_qualified_name

from iqaflow.errors import StartupError
from iqaflow.flows.cluster import CLUSTER_CONFIG, ClusterChoice
from iqaflow.flows.warm import WarmWorker

if TYPE_CHECKING:
    from prefect.server.api.server import SubprocessASGIServer

log = logging.getLogger(__name__)

SERVER_START_TIMEOUT = 120  # seconds; generous: a loaded 2-core machine takes a while
_FIX_API = "Fix: set PREFECT_API_URL to a running Prefect server (e.g. `prefect server start`)"


def api_url() -> str | None:
    """The Prefect API this process already uses: configured, or an ephemeral server started here before."""
    from prefect.settings import PREFECT_API_URL

    if url := os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value():
        return str(url)
    server_module = sys.modules.get("prefect.server.api.server")  # not imported: no server was started here
    if server_module is not None and (server := server_module.SubprocessASGIServer()).running:
        return str(server.api_url)
    return None


def share_api_with_workers() -> str:
    """Point Dask worker processes at this process's Prefect API, starting an ephemeral server if none.

    Without it, every worker process of a local cluster starts an ephemeral API server of its
    own (seconds each, competing for one database) and leaves it orphaned if the nanny kills
    the worker. Workers inherit the environment, so exporting the URL before the cluster
    starts is enough. Workers of an external cluster need PREFECT_API_URL set where they run.
    """
    url = api_url() or _start_server(_free_port()).api_url
    os.environ["PREFECT_API_URL"] = url
    return url


@contextmanager
def local_cluster(choice: ClusterChoice, warm: Sequence[str] = ()) -> Iterator[Cluster]:
    """The run's local Dask cluster, started while the Prefect API server starts (when one is needed).

    The cluster is closed on exit; the server, like Prefect's own ephemeral one, lives until this
    process exits, for later runs here. If either start fails, neither is left running. Each worker
    imports the modules named in ``warm`` (the caller's flow module) as it starts.
    """
    cluster_class: type[Cluster] = from_qualified_name(choice.cluster_class)  # as DaskTaskRunner resolves it
    failed = ExitStack()  # what a failed start undoes
    failed.callback(_restore_env, os.environ.get("PREFECT_API_URL"))
    with ExitStack() as stack:
        try:
            url = api_url()
            if url is not None:
                os.environ["PREFECT_API_URL"] = url
                cluster = _start_cluster(stack, cluster_class, choice.kwargs, warm)
            else:
                port = _free_port()
                url = os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
                with ThreadPoolExecutor(1, thread_name_prefix="prefect-api-start") as pool:
                    starting = pool.submit(_start_server, port)
                    try:
                        cluster = _start_cluster(stack, cluster_class, choice.kwargs, warm)
                    finally:  # joined either way, so a failed cluster start still stops the server
                        server = _started(starting)
                        failed.callback(server.stop)
                if server.api_url != url:  # its port was taken meanwhile, so Prefect moved it to another
                    log.warning("Prefect API port %d was taken; restarting the workers for %s", port, server.api_url)
                    os.environ["PREFECT_API_URL"] = server.api_url
                    _restart_workers(cluster)
        except BaseException:
            failed.close()
            raise
        yield cluster


def _started(starting: Future[SubprocessASGIServer]) -> SubprocessASGIServer:
    try:
        return starting.result()
    except Exception as exc:
        raise StartupError(f"the Prefect API server did not start ({_why(exc)}). {_FIX_API}") from exc


def _start_server(port: int) -> SubprocessASGIServer:
    """Start Prefect's ephemeral API server on ``port``; stopped again if it does not come up."""
    from prefect.server.api.server import SubprocessASGIServer

    # The server process inherits this: its telemetry service would otherwise call out to Prefect's
    # servers (a run stays on the machine unless the user opts in).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The port-less instance (one per port) is the one Prefect's clients in this process start and
    # use, so this process's flow runs talk to this server.
    server = SubprocessASGIServer()
    if not server.running:
        server.port = port
    try:
        server.start(timeout=SERVER_START_TIMEOUT)
    except BaseException:
        server.stop()  # start() leaves the process behind when the server is not healthy in time
        raise
    return server


def _start_cluster(stack: ExitStack, cluster_class: type[Cluster], kwargs: dict[str, Any],
                   warm: Sequence[str] = ()) -> Cluster:
    """Start the cluster, to be closed with ``stack``, and warm its workers (``warm``)."""
    name = cluster_class.__name__
    try:
        with dask.config.set(CLUSTER_CONFIG):  # read as the scheduler and the nannies are made, here
            cluster = stack.enter_context(cluster_class(**kwargs))  # a failed start closes what it began
    except Exception as exc:
        raise StartupError(f"the local Dask cluster ({name}) did not start ({_why(exc)}). "
                           "Fix: see the worker errors above, or set dask_address to a running Dask scheduler") from exc
    modules = ", ".join(warm) or "iqaflow"
    try:
        with Client(cluster, set_as_default=False) as client:
            client.register_plugin(WarmWorker(warm))  # returns once every worker ran its setup; new ones run it too
    except Exception as exc:
        raise StartupError(f"the workers of the local Dask cluster ({name}) could not import the flow's modules "
                           f"({_why(exc)}). Fix: run `python -c 'import {modules}'` to see why") from exc
    return cluster


def _why(exc: BaseException) -> str:
    """The error and its root cause: Dask wraps a worker's error in "Nanny failed to start."."""
    why = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    while cause is not None and cause.__cause__ is not None:
        cause = cause.__cause__
    return f"{why}; cause: {type(cause).__name__}: {cause}" if cause is not None else why


def _restart_workers(cluster: Cluster) -> None:
    with Client(cluster, set_as_default=False) as client:
        client.restart()  # new worker processes, spawned with the environment as it is now


def _free_port() -> int:
    """A loopback port free now, from Prefect's own range for its ephemeral server (8000-8999).

    Not the kernel's ephemeral range (port 0): the cluster starting meanwhile draws its sockets
    from that. If the port is taken before the server binds it, Prefect moves the server.
    """
    for port in random.sample(range(8000, 9000), 20):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise StartupError(f"no free port in 8000-8999 for the Prefect API server. {_FIX_API}")


def _restore_env(value: str | None) -> None:
    if value is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = value
