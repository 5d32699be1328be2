"""End to end with every server real and on loopback at once, checked from the outside.

``prefect server``, ``mlflow server``, moto's S3 server and a ``dask scheduler`` with two ``dask worker``
processes. Images live in S3; ``iqaflow score`` runs as a user runs it (a subprocess) with the curation
example's gate file (kept on S3, plus a copy rule), writes results, gate decisions, routed copies and
the HTML report to S3 and records the run in MLflow. Then S3 (boto3), MLflow (its client over HTTP)
and Prefect (its REST API) are asked what happened.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from iqaflow.schemas.results import Col

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
BUCKET = "it-intake"  # unique per test module: the moto server is shared by the session


@pytest.fixture(scope="module")
def servers(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    from conftest import DaskProcesses
    from servers import MlflowServer, PrefectServer

    root = tmp_path_factory.mktemp("servers")
    prefect = PrefectServer(root / "prefect").launch()
    mlflow = MlflowServer(root / "mlflow").launch()
    dask = None
    try:
        dask = DaskProcesses(2)  # after s3_server: the workers inherit its endpoint and credentials
        prefect.wait_healthy()
        mlflow.wait_healthy()
        yield {"prefect": prefect, "mlflow": mlflow, "dask": dask, "s3": s3_server}
    finally:
        prefect.terminate()
        mlflow.terminate()
        if dask is not None:
            dask.close()
        prefect.close()
        mlflow.close()


def _gate_file() -> bytes:
    """examples/curation.yaml with a copy of rejected images to S3; its collection gates warn instead of fail,
    so the run completes whatever these synthetic images score and routing is applied."""
    spec = yaml.safe_load((REPO / "examples" / "curation.yaml").read_text())
    spec["collection"]["on_fail"] = "warn"
    for gate in spec["collection"]["gates"]:
        gate.pop("on_fail", None)
    spec["routing"].append({"action": "copy", "when": ["reject"], "to": f"s3://{BUCKET}/review/rejected"})
    return yaml.safe_dump(spec, sort_keys=False).encode()


def _objects(s3, prefix: str) -> dict[str, bytes]:  # noqa: ANN001 - boto3 client
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for o in page.get("Contents", [])]
    return {k: s3.get_object(Bucket=BUCKET, Key=k)["Body"].read() for k in keys}


def test_everything_against_real_servers(servers: dict, tmp_path: Path) -> None:
    import boto3
    from mlflow import MlflowClient

    from iqaflow.evaluation.synth import make_collection

    s3 = boto3.client("s3", endpoint_url=servers["s3"])
    s3.create_bucket(Bucket=BUCKET)
    src = make_collection(tmp_path / "photos", n_bases=2, size=96, seed=5)  # 28 images + 3 broken files
    uploaded = {}
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.suffix != ".csv":
            key = f"photos/{p.relative_to(src).as_posix()}"
            s3.upload_file(str(p), BUCKET, key)
            uploaded[key] = p.read_bytes()
    s3.put_object(Bucket=BUCKET, Key="config/gates.yaml", Body=_gate_file())

    prefect, mlflow = servers["prefect"], servers["mlflow"]
    env = {**os.environ, **prefect.client_env(tmp_path / "client-home"), "COLUMNS": "200",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    res = subprocess.run(
        [sys.executable, "-m", "iqaflow", "score", f"s3://{BUCKET}/photos", "--out", f"s3://{BUCKET}/qa",
         "--run-id", "it1", "--dask-address", servers["dask"].address, "--shard-size", "8",
         "--gates", f"s3://{BUCKET}/config/gates.yaml", "--apply", "--tracking-uri", mlflow.url],
        capture_output=True, text=True, env=env, timeout=500, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]

    # S3: results, decisions, report, manifests and routed copies, nothing half-written.
    run = "qa/runs/it1/"
    objects = _objects(s3, run)
    parts = [k for k in objects if k.startswith(run + "results/part-")]
    assert len(parts) == 4  # 31 images in shards of 8
    rows = [r for k in parts for r in pq.read_table(io.BytesIO(objects[k])).to_pylist()]
    assert sorted(r[Col.URI] for r in rows) == sorted(f"s3://{BUCKET}/{k}" for k in uploaded)
    assert all(r[Col.GATE_STATUS] in ("pass", "flag", "reject") for r in rows)
    rejected = {r[Col.URI] for r in rows if r[Col.GATE_STATUS] == "reject"}
    assert len(rejected) >= 3  # at least the broken files (unreadable)
    for key in ("summary.json", "config.json", "manifest.parquet", "gates/report.json", "gates/validation.json",
                "manifests/accepted.parquet", "manifests/rejected.txt", "report.html"):
        assert run + key in objects, key
    assert not [k for k in objects if ".tmp-" in k]
    html = objects[run + "report.html"].decode()
    assert 'class="thumb"' in html and "data:image/jpeg;base64," in html and "iqaflow run" in html
    copies = _objects(s3, "review/rejected/")
    assert {f"review/rejected/{u.split('/photos/', 1)[1]}" for u in rejected} == set(copies)
    for key, data in copies.items():
        original = uploaded["photos/" + key.removeprefix("review/rejected/")]
        assert hashlib.sha256(data).digest() == hashlib.sha256(original).digest()

    # MLflow, over HTTP: one finished run with the counts and the report as an artifact.
    client = MlflowClient(tracking_uri=mlflow.url)
    exp = client.get_experiment_by_name("iqaflow")
    found = client.search_runs([exp.experiment_id], "tags.`iqaflow.run_id` = 'it1'")
    assert len(found) == 1 and found[0].info.status == "FINISHED"
    metrics = found[0].data.metrics
    assert metrics["images"] == len(uploaded) == 31 and metrics["gate.reject"] == len(rejected)
    artifacts = {a.path for a in client.list_artifacts(found[0].info.run_id, "report")}
    assert artifacts == {"report/report.html"}

    # Prefect, over its REST API: the score flow run and its gate subflow completed.
    for name in ("iqaflow-score", "iqaflow-gate"):
        runs = prefect.post("flow_runs/filter", {"flows": {"name": {"any_": [name]}}})
        assert [r["state"]["type"] for r in runs] == ["COMPLETED"], name
    tasks = prefect.post("task_runs/filter", {"task_runs": {"name": {"like_": "shard-"}}})
    assert len(tasks) == 4 and {t["state"]["type"] for t in tasks} == {"COMPLETED"}
