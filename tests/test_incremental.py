"""Incremental runs: unchanged images are carried over, new and changed ones are scored."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from iqaflow.config.run import build_config
from iqaflow.errors import ConfigError
from iqaflow.evaluation.synth import make_collection
from iqaflow.schemas.results import Col

pytestmark = pytest.mark.slow


def test_incremental_scores_only_new_and_changed(prefect_api: None, tmp_path: Path) -> None:
    from iqaflow.flows.score import run_score

    src = make_collection(tmp_path / "src", n_bases=2, size=96)  # 2 x 14 images + 3 broken
    out = tmp_path / "out"
    base = {"source": str(src), "out": str(out), "workers": 1, "shard_size": 10, "models": ["sharpness", "noise"]}
    first = run_score(build_config({**base, "run_id": "day1"}))
    assert first.images == 31

    changed = src / "astronaut" / "astronaut-000_clean.png"
    shutil.copy(src / "astronaut" / "astronaut-000_blur3.png", changed)  # new content, new size
    os.utime(changed, (1e9, 1e9))
    shutil.copy(src / "astronaut" / "astronaut-000_blur1.png", src / "astronaut" / "new.png")

    second = run_score(build_config({**base, "run_id": "day2", "incremental": str(out / "runs" / "day1")}))
    assert second.images == 32  # complete dataset: carried + newly scored
    parts = sorted((out / "runs" / "day2" / "results").glob("part-*.parquet"))
    carried = [p for p in parts if p.name.startswith("part-carried-")]
    assert len(carried) == 1 and pq.read_table(carried[0]).num_rows == 30
    scored = pq.read_table([p for p in parts if p not in carried])
    assert sorted(Path(u).name for u in scored[Col.URI].to_pylist()) == ["astronaut-000_clean.png", "new.png"]

    table = pq.read_table(out / "runs" / "day2" / "results").to_pylist()
    by_name = {Path(r[Col.URI]).name: r for r in table}
    assert len(by_name) == len(table) == 32
    rescored, blurred = by_name["astronaut-000_clean.png"], by_name["astronaut-000_blur3.png"]
    assert rescored["sharpness"] == pytest.approx(blurred["sharpness"])

    # A run after an incremental run compares against its full listing: everything is carried.
    from iqaflow.tasks.io.incremental import split_incremental

    day2 = out / "runs" / "day2"
    (tmp_path / "day3").mkdir()
    shutil.copy(day2 / "listing.parquet", tmp_path / "day3" / "manifest.parquet")
    fingerprint = (day2 / "fingerprint").read_text()
    split = split_incremental(str(tmp_path / "day3" / "manifest.parquet"), str(day2), fingerprint,
                              str(tmp_path / "day3"), 10)
    assert (split.carried, split.to_score) == (32, 0)

    # Another scorer set: nothing is carried over. Same run folder: refused.
    shutil.copy(out / "runs" / "day1" / "manifest.parquet", tmp_path / "manifest.parquet")  # 31 images
    split = split_incremental(str(tmp_path / "manifest.parquet"), str(day2), "other-fingerprint", str(tmp_path), 10)
    assert split.carried == 0 and split.to_score == 31 and split.carried_path is None
    with pytest.raises(ConfigError, match="own --run-id"):
        split_incremental(str(day2 / "manifest.parquet"), str(day2 / "results"), "fp", str(tmp_path), 10)


def test_incremental_requires_an_earlier_run(prefect_api: None, tmp_path: Path) -> None:
    from iqaflow.tasks.io.incremental import split_incremental

    with pytest.raises(ConfigError, match="not an iqaflow run"):
        split_incremental(str(tmp_path / "m.parquet"), str(tmp_path / "nothing"), "fp", str(tmp_path), 10)
