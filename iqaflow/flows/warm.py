"""A Dask worker plugin for the local clusters a run starts (``startup.local_cluster`` registers it).

A plugin rather than a ``preload`` cluster argument, which would replace the preloads a user
configured for Dask (``distributed.worker.preload``).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from importlib import import_module
from typing import Any

from distributed import WorkerPlugin


class WarmWorker(WorkerPlugin):
    name = "iqaflow-warm-worker"

    def __init__(self, modules: Sequence[str] = ()) -> None:
        # Named by the flow that starts the cluster (its own module), so this plugin does not import
        # the flows that use it.
        self.modules = tuple(modules)

    def setup(self, worker: Any) -> None:
        """Import what the first shard task needs, while the Prefect API server starts.

        The flow module that the pickled task refers to (prefect, torch: ~3 s of CPU) and the
        registry's scorer modules (scipy: ~0.3 s; no weights are loaded). Otherwise the first
        shard of each worker pays for them, after the API server is up.
        """
        for module in self.modules:
            import_module(module)
        from iqaflow.models.registry import all_scorers

        all_scorers()  # imports the built-in scorer modules and plug-ins, as the first scorer lookup would

    def teardown(self, worker: Any) -> None:
        """Let the closing worker process exit without collecting its whole heap.

        Interpreter finalization runs several full garbage collections over every object that the
        imports above created (~500k); measured, 1.6-1.9 s of the nanny's wait for its worker process
        to exit, and 0.3 s with the heap frozen. Only in a worker process of its own (a nanny's),
        which exits after closing.
        """
        if worker.nanny:
            gc.freeze()
