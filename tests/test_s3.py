"""Score a collection read from S3 (moto server process) and write the results back to S3."""

from __future__ import annotations

import csv
from pathlib import Path

import boto3
import pyarrow.parquet as pq
import pytest

from iqaflow.config.run import build_config
from iqaflow.schemas.results import Col, ErrorCode

pytestmark = pytest.mark.slow


def upload(folder: Path, bucket: str, prefix: str, endpoint: str) -> list[str]:
    s3 = boto3.client("s3", endpoint_url=endpoint)
    s3.create_bucket(Bucket=bucket)
    keys = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            key = f"{prefix}/{p.relative_to(folder).as_posix()}"
            s3.upload_file(str(p), bucket, key)
            keys.append(key)
    return keys


def test_s3_in_s3_out(prefect_api: None, s3_server: str, tmp_path: Path) -> None:
    import s3fs

    from iqaflow.evaluation.synth import make_collection
    from iqaflow.flows.score import run_score

    src = make_collection(tmp_path / "c", n_bases=4, size=128)
    keys = upload(src, "photos", "archive", s3_server)
    with open(src / "labels.csv") as fh:
        expected = {f"s3://photos/archive/{r['path']}" for r in csv.DictReader(fh)}

    cfg = build_config({"source": "s3://photos/archive", "out": "s3://photos/qa", "workers": 2, "shard_size": 20,
                        "run_id": "s3run"})
    summary = run_score(cfg)
    assert summary.results_dir == "s3://photos/qa/runs/s3run/results"

    fs = s3fs.S3FileSystem()
    parts = fs.glob("photos/qa/runs/s3run/results/part-*.parquet")
    assert len(parts) == summary.shards == 3
    table = pq.read_table([f"photos/{p.split('/', 1)[1]}" for p in parts], filesystem=fs)
    uris = table[Col.URI].to_pylist()
    assert len(uris) == len(set(uris)) == len(expected) and set(uris) == expected
    assert "s3://photos/archive/labels.csv" not in uris and len(keys) == len(expected) + 1
    codes = {Path(r[Col.URI]).name: r[Col.ERROR_CODE] for r in table.to_pylist()}
    assert codes["empty.jpg"] == ErrorCode.EMPTY_FILE.value and codes["truncated.jpg"] == ErrorCode.TRUNCATED.value
    assert fs.exists("photos/qa/runs/s3run/summary.json") and fs.exists("photos/qa/runs/s3run/manifest.parquet")
    # No temporary objects: each shard is one PUT.
    assert not [p for p in fs.find("photos/qa") if ".tmp-" in p]
