"""The real score flow: ephemeral Prefect API + Dask LocalCluster with 2 worker processes."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from iqaflow.config.run import build_config
from iqaflow.schemas.results import SCHEMA_VERSION, SCHEMA_VERSION_KEY, Col, ErrorCode, Status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(prefect_api: None, collection: Path, tmp_path_factory: pytest.TempPathFactory):
    from iqaflow.flows.score import run_score

    cfg = build_config(
        {"source": str(collection), "out": str(tmp_path_factory.mktemp("out")), "workers": 2, "shard_size": 64,
         "batch_size": 16}
    )
    return cfg, run_score(cfg)


def _labels(collection: Path) -> dict[str, dict[str, str]]:
    with open(collection / "labels.csv") as fh:
        return {str(collection / r["path"]): r for r in csv.DictReader(fh)}


def test_every_image_exactly_once(run, collection: Path) -> None:
    cfg, summary = run
    table = pq.read_table(summary.results_dir)
    uris = table[Col.URI].to_pylist()
    expected = set(_labels(collection))
    assert len(uris) == len(set(uris)) == len(expected) >= 200
    assert set(uris) == expected
    assert summary.shards >= 3 and summary.images == len(expected)
    assert len(set(table[Col.SHARD_ID].to_pylist())) == summary.shards


def test_schema_is_versioned_and_typed(run) -> None:
    _, summary = run
    first = sorted(Path(summary.results_dir).glob("part-*.parquet"))[0]
    schema = pq.read_schema(first)
    assert schema.metadata[SCHEMA_VERSION_KEY].decode() == SCHEMA_VERSION
    for name in (Col.IMAGE_ID, Col.WIDTH, Col.CONTENT_HASH, Col.STATUS, "sharpness", "noise", "exposure"):
        assert name in schema.names


def test_broken_files_are_error_rows(run, collection: Path) -> None:
    _, summary = run
    rows = pq.read_table(summary.results_dir).to_pylist()
    by_name = {Path(r[Col.URI]).name: r for r in rows}
    assert by_name["empty.jpg"][Col.ERROR_CODE] == ErrorCode.EMPTY_FILE.value
    assert by_name["truncated.jpg"][Col.ERROR_CODE] == ErrorCode.TRUNCATED.value
    assert by_name["notes.jpg"][Col.ERROR_CODE] == ErrorCode.NOT_AN_IMAGE.value
    for name in ("empty.jpg", "truncated.jpg", "notes.jpg"):
        assert by_name[name][Col.STATUS] == Status.ERROR.value and by_name[name]["sharpness"] is None
    ok = [r for r in rows if r[Col.STATUS] == Status.OK.value]
    assert len(ok) == len(rows) - 3
    assert all(r["sharpness"] is not None and r[Col.WIDTH] == 192 for r in ok)
    assert summary.errors_by_code == {"EMPTY_FILE": 1, "NOT_AN_IMAGE": 1, "TRUNCATED": 1}


def test_distorted_scores_relative_to_clean(run, collection: Path) -> None:
    _, summary = run
    labels = _labels(collection)
    scores: dict[str, dict[tuple[str, int], dict]] = defaultdict(dict)
    for r in pq.read_table(summary.results_dir).to_pylist():
        lab = labels[r[Col.URI]]
        if lab["base"]:
            scores[lab["base"]][(lab["distortion"], int(lab["level"]))] = r
    assert len(scores) == 15
    for base, s in scores.items():
        clean = s[("clean", 0)]
        blur = [clean["sharpness"]] + [s[("blur", i)]["sharpness"] for i in (1, 2, 3)]
        assert blur == sorted(blur, reverse=True) and blur[0] > blur[-1] * 5, (base, blur)
        noise = [clean["noise"]] + [s[("noise", i)]["noise"] for i in (1, 2, 3)]
        assert noise == sorted(noise), (base, noise)
        assert s[("under", 2)]["brightness"] < s[("under", 1)]["brightness"] < clean["brightness"]
        assert s[("over", 2)]["clipped_highlights"] > clean["clipped_highlights"]
        if clean["exposure"] > 0.3 and 0.3 <= clean["brightness"] <= 0.7:  # well exposed: can only get worse
            assert s[("under", 2)]["exposure"] < clean["exposure"] and s[("over", 2)]["exposure"] < clean["exposure"]


def test_rerun_skips_committed_shards_and_keeps_results(run) -> None:
    from iqaflow.flows.score import run_score

    cfg, first = run
    before = pq.read_table(first.results_dir).sort_by(Col.URI)
    again = run_score(cfg)
    assert again.shards_skipped == again.shards == first.shards
    # worker time is counted for shards scored by a run only: the first scored all, the re-run none
    assert first.images_scored == first.images and 0 < first.shard_seconds < first.seconds * 4
    assert again.images_scored == 0 and again.shard_seconds == 0 and again.images_per_shard_second == 0
    after = pq.read_table(again.results_dir).sort_by(Col.URI)
    assert after.select([Col.URI, "sharpness", "noise"]).equals(before.select([Col.URI, "sharpness", "noise"]))
