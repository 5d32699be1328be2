"""State of scheduled curation of one source: which earlier run the next incremental run builds on.

``OUT/curation/<key>/state.json`` records the last curation run whose scoring completed (a run whose
collection gates then failed counts: its scores are committed). The next run passes that run to the
score flow's ``incremental`` mode (unchanged images are carried over, new and changed ones scored)
and uses it as the drift baseline. A run that did not complete leaves the state alone, so the next
run builds on the last good one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from iqaflow.tasks.io.storage import atomic_write, join, open_fs


@dataclass(frozen=True)
class CurationState:
    source: str
    root: str

    @classmethod
    def for_source(cls, out: str, source: str) -> CurationState:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", source.rstrip("/").rsplit("/", 1)[-1]).strip("-.") or "source"
        digest = hashlib.sha256(source.rstrip("/").encode()).hexdigest()[:8]
        return cls(source, join(out, "curation", f"{stem[:48]}-{digest}"))

    @property
    def state_file(self) -> str:
        return join(self.root, "state.json")

    def read(self) -> dict[str, Any]:
        fs, path = open_fs(self.state_file)
        if not fs.exists(path):
            return {}
        with fs.open(path, "rb") as fh:
            return json.loads(fh.read())

    def last_run(self) -> str | None:
        """Folder of the last curation run whose scoring completed, if it still exists."""
        last = self.read().get("last_run")
        if not last:
            return None
        fs, path = open_fs(join(last, "summary.json"))
        return last if fs.exists(path) else None

    def commit(self, run_root: str, images: int, scored: int) -> None:
        """Record ``run_root`` as the run the next curation builds on."""
        history = (self.read().get("history") or [])[-49:]
        record = {"run": run_root, "images": images, "scored": scored,
                  "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        state = {"source": self.source, "last_run": run_root, "history": [*history, record]}
        fs, path = open_fs(self.state_file)
        atomic_write(fs, path, json.dumps(state, indent=2).encode())


def new_run_id(prefix: str = "curate", now: datetime | None = None) -> str:
    """``curate-20250101T020000Z``: sortable, one per second."""
    return f"{prefix}-{(now or datetime.now(timezone.utc)).strftime('%Y%m%dT%H%M%SZ')}"


def completed(run_root: str) -> dict[str, Any] | None:
    """The run's summary.json when its scoring completed, else None."""
    fs, path = open_fs(join(run_root, "summary.json"))
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read())


def carried_rows(results_dir: str) -> int:
    """Rows the incremental mode carried over from the earlier run (``part-carried-*.parquet``)."""
    import pyarrow.parquet as pq

    fs, path = open_fs(results_dir)
    total = 0
    for f in fs.glob(join(path, "part-carried-*.parquet")):
        with fs.open(f, "rb") as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    return total


def commit_if_completed(state: CurationState, run_root: str) -> dict[str, Any] | None:
    """After a curation run: make it the base of the next one if its scoring completed."""
    summary = completed(run_root)
    if summary is None:
        return None
    images = int(summary.get("images", 0))
    scored = images - carried_rows(join(run_root, "results"))
    state.commit(run_root, images, scored)
    return {"images": images, "scored": scored, "errors": int(summary.get("errors", 0))}
