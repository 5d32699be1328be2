"""Where a run's files live. Derived from the config, so a re-run finds its own shards."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from iqaflow.config.run import RunConfig
from iqaflow.tasks.io.storage import join


def default_run_id(config: RunConfig) -> str:
    """Readable and stable: the source's last path part + a hash of source and scorer fingerprint."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", config.source.rstrip("/").rsplit("/", 1)[-1]).strip("-.") or "run"
    digest = hashlib.sha256(f"{config.source}\n{config.fingerprint()}".encode()).hexdigest()[:8]
    return f"{stem[:48]}-{digest}"


@dataclass(frozen=True)
class RunLayout:
    run_id: str
    root: str

    @classmethod
    def for_config(cls, config: RunConfig) -> RunLayout:
        run_id = config.run_id or default_run_id(config)
        return cls(run_id, join(config.out, "runs", run_id))

    @property
    def manifest(self) -> str:
        return join(self.root, "manifest.parquet")

    @property
    def results_dir(self) -> str:
        return join(self.root, "results")

    @property
    def summary(self) -> str:
        return join(self.root, "summary.json")

    @property
    def heatmaps(self) -> str:
        return join(self.root, "heatmaps")

    @property
    def defects(self) -> str:
        return join(self.root, "defects")

    @property
    def config_file(self) -> str:
        return join(self.root, "config.json")
