"""Scheduled incremental curation: the delta logic, then the deployment of infra/prefect.yaml served by
``iqaflow deploy`` against a real ``prefect server`` process and triggered through the API, twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from iqaflow.schemas.results import Col

REPO = Path(__file__).resolve().parent.parent
GATES = """version: 1
name: curate-test
image_rules:
  - name: readable
    require: error_code is null
    outcome: reject
    reason: unreadable
routing:
  - action: manifest
    when: [pass, flag]
    to: "{run}/manifests"
    name: accepted
"""


def test_state_builds_on_the_last_completed_run(tmp_path: Path) -> None:
    from iqaflow.tasks.io.curation import CurationState, commit_if_completed, new_run_id

    state = CurationState.for_source(str(tmp_path / "out"), "s3://b/photos/")
    assert state.root == CurationState.for_source(str(tmp_path / "out"), "s3://b/photos").root  # one per prefix
    assert state.last_run() is None
    done, broken = tmp_path / "out" / "runs" / "a", tmp_path / "out" / "runs" / "b"
    (done / "results").mkdir(parents=True)
    (broken / "results").mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"images": 5, "errors": 1}))
    carried = pa.table({Col.URI: ["x", "y", "z"]})
    pq.write_table(carried, done / "results" / "part-carried-0123.parquet")
    assert commit_if_completed(state, str(broken)) is None and state.last_run() is None  # scoring never finished
    assert commit_if_completed(state, str(done)) == {"images": 5, "scored": 2, "errors": 1}
    assert state.last_run() == str(done)
    assert new_run_id().startswith("curate-20") and len(new_run_id()) == len("curate-20250101T020000Z")


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    from servers import PrefectServer

    server = PrefectServer(tmp_path_factory.mktemp("prefect-server")).start()
    yield server
    server.close()


def _flow_run(server, run_id: str) -> dict:  # noqa: ANN001
    return server.post("flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})[0]


def _trigger(server, deployment_id: str, timeout: float = 300) -> dict:  # noqa: ANN001
    """Create a run of the deployment over the REST API and wait for a final state."""
    from conftest import wait_until

    run = server.post(f"deployments/{deployment_id}/create_flow_run", {})
    final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
    wait_until(lambda: _flow_run(server, run["id"])["state"]["type"] in final, timeout, "curation flow run",
               interval=1)
    return _flow_run(server, run["id"])


@pytest.mark.slow
def test_served_deployment_curates_incrementally(prefect_server, tmp_path: Path) -> None:
    import numpy as np
    from conftest import wait_until
    from PIL import Image

    from iqaflow.evaluation.synth import make_collection

    src = make_collection(tmp_path / "photos", n_bases=1, size=64, seed=3)  # 14 images + 3 broken files
    images = sorted(p for p in src.rglob("*") if p.suffix in (".png", ".jpg"))
    gates = tmp_path / "gates.yaml"
    gates.write_text(GATES)
    out = tmp_path / "qa"
    # MLflow tracking of curation runs is checked against a real server in test_integration; off here for time.
    settings = json.dumps({"workers": 1, "shard_size": 8, "batch_size": 8, "models": ["sharpness", "noise"],
                           "track": False})
    env = {**os.environ, **prefect_server.client_env(tmp_path / "serve-home"), "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "COLUMNS": "200"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "iqaflow", "deploy", "--file", str(REPO / "infra" / "prefect.yaml"), "--name",
         "curate-nightly", "--param", f"source={src}", "--param", f"out={out}", "--param", f"gates={gates}",
         "--param", f"settings={settings}"],
        cwd=tmp_path, env=env, stdout=open(tmp_path / "serve.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )
    try:
        deployments: list[dict] = []

        def registered() -> bool:
            nonlocal deployments
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            deployments = prefect_server.post("deployments/filter", {"deployments": {"name": {"any_": [
                "curate-nightly"]}}})
            return bool(deployments)

        wait_until(registered, 120, "served deployment", interval=1)
        dep = deployments[0]
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["0 2 * * *"]
        # The server's scheduler turns the cron into future runs.
        wait_until(lambda: bool(prefect_server.post("flow_runs/filter", {
            "deployments": {"id": {"any_": [dep["id"]]}}, "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        })), 60, "scheduled runs", interval=1)

        first = _trigger(prefect_server, dep["id"])
        assert first["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-4000:]
        time.sleep(1.1)  # run ids have one-second resolution
        (src / "day3").mkdir()
        noise = (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)
        Image.fromarray(noise).save(src / "day3" / "new.png")
        changed = next(p for p in images if p.suffix == ".png")
        changed.write_bytes(next(p for p in images[::-1] if p.suffix == ".png").read_bytes())  # other content
        second = _trigger(prefect_server, dep["id"])
        assert second["state"]["type"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-4000:]
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, 15)  # the served process and the flow runs it started
            serve.wait(timeout=30)

    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2
    r1, r2 = (pq.read_table(r / "results") for r in runs)
    assert r1.num_rows == len(images) == 17 and r2.num_rows == 18  # every run holds the whole collection
    fresh = [p for p in (runs[1] / "results").glob("part-*.parquet") if not p.name.startswith("part-carried-")]
    scored_now = [u for p in fresh for u in pq.read_table(p)[Col.URI].to_pylist()]
    assert sorted(scored_now) == sorted([str(changed), str(src / "day3" / "new.png")])
    for r in runs:
        assert (r / "report.html").stat().st_size > 10_000
        assert (r / "manifests" / "accepted.txt").is_file()  # routing applied (apply_routing: true in the file)
    config2 = json.loads((runs[1] / "config.json").read_text())
    assert config2["incremental"] == config2["baseline"] == str(runs[0])
    html = (runs[1] / "report.html").read_text()
    assert "day3" in html and "Baseline run" in html
    state = json.loads(next((out / "curation").glob("*/state.json")).read_text())
    assert state["last_run"] == str(runs[1])
    assert [(h["images"], h["scored"]) for h in state["history"]] == [(17, 17), (18, 2)]


@pytest.mark.slow
def test_deploy_registers_for_a_work_pool(prefect_server, tmp_path: Path) -> None:
    """Another deployment of the file than the served one, so the two tests do not depend on their order."""
    prefect_server.post("work_pools/", {"name": "iqaflow", "type": "process"})
    env = {**os.environ, **prefect_server.client_env(tmp_path / "home"), "COLUMNS": "200"}
    res = subprocess.run(
        [sys.executable, "-m", "iqaflow", "deploy", "--file", str(REPO / "infra" / "prefect.yaml"), "--register",
         "--name", "print-audit-hourly", "--param", "out=s3://elsewhere/qa", "--cron", "30 3 * * 1"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    found = prefect_server.post("deployments/filter", {"deployments": {"name": {"any_": ["print-audit-hourly"]}}})
    assert len(found) == 1
    dep = found[0]
    assert dep["work_pool_name"] == "iqaflow" and dep["work_queue_name"] == "print"
    assert dep["parameters"]["out"] == "s3://elsewhere/qa" and dep["parameters"]["source"] == "s3://print/scans/"
    assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["30 3 * * 1"]
    assert dep["entrypoint"] == "iqaflow.flows.curate.curate_flow"
