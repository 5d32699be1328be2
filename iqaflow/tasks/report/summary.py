"""Summarise a run's committed results: counts, error breakdown, score quantiles per column."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds

from iqaflow.schemas.results import Col, Status
from iqaflow.tasks.io.storage import atomic_write, open_fs

QUANTILES = (0.05, 0.5, 0.95)


@dataclass
class ColumnStats:
    count: int
    mean: float | None
    p05: float | None
    p50: float | None
    p95: float | None


@dataclass
class RunSummary:
    run_id: str
    results_dir: str
    images: int
    ok: int
    errors: int
    shards: int
    shards_skipped: int
    seconds: float
    errors_by_code: dict[str, int] = field(default_factory=dict)
    scores: dict[str, ColumnStats] = field(default_factory=dict)
    # Images scored by this run's shards (not skipped or carried over) and the worker time they took:
    # with ``seconds`` they separate the workers' speed from start-up and orchestration.
    images_scored: int = 0
    shard_seconds: float = 0.0

    @property
    def images_per_shard_second(self) -> float:
        """Images per second of one worker busy in a shard (0 when nothing was scored)."""
        return self.images_scored / self.shard_seconds if self.shard_seconds > 0 else 0.0

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> str:
        d = asdict(self)
        d["images_per_second"] = self.images_per_second
        d["images_per_shard_second"] = self.images_per_shard_second
        return json.dumps(d, indent=2)


def summarise(
    files: list[str], outputs: list[str], run_id: str, results_dir: str, shards_skipped: int, seconds: float,
    images_scored: int = 0, shard_seconds: float = 0.0,
) -> RunSummary:
    """``images_scored`` and ``shard_seconds``: images and worker seconds of the shards this run scored."""
    fs, _ = open_fs(results_dir)
    paths = [open_fs(f)[1] for f in files]
    table = ds.dataset(paths, format="parquet", filesystem=fs).to_table(
        columns=[Col.STATUS, Col.ERROR_CODE, *outputs]
    )
    n = table.num_rows
    ok = int(pc.sum(pc.equal(table[Col.STATUS], Status.OK.value)).as_py() or 0)
    codes = table[Col.ERROR_CODE].drop_null().value_counts().to_pylist()
    by_code = {c["values"]: int(c["counts"]) for c in codes}
    scores: dict[str, ColumnStats] = {}
    for name in outputs:
        values = table[name].drop_null().to_numpy(zero_copy_only=False)
        if len(values) == 0:
            scores[name] = ColumnStats(0, None, None, None, None)
            continue
        q = np.quantile(values, QUANTILES)
        scores[name] = ColumnStats(len(values), float(values.mean()), *(float(v) for v in q))
    return RunSummary(
        run_id=run_id, results_dir=results_dir, images=n, ok=ok, errors=n - ok, shards=len(files),
        shards_skipped=shards_skipped, seconds=seconds, errors_by_code=dict(sorted(by_code.items())),
        scores=scores, images_scored=images_scored, shard_seconds=shard_seconds,
    )


def write_summary(summary: RunSummary, path: str) -> None:
    fs, p = open_fs(path)
    atomic_write(fs, p, summary.to_json().encode())
