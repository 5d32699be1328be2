"""Every scoring run is an MLflow run: the SQLite default beside the results, and a real ``mlflow server``."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from iqaflow.config.run import DEFAULT_MODELS, build_config
from iqaflow.tasks.report.track import redact_uri, scoring_params

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def test_redact_uri_strips_credentials_and_queries() -> None:
    assert redact_uri("s3://AKIAXXX:s3cr3t@bucket/prefix?X-Amz-Signature=abc#x") == "s3://bucket/prefix"
    assert redact_uri("postgresql://user:pw@db.local:5432/mlflow") == "postgresql://db.local:5432/mlflow"
    assert redact_uri("https://token@host/x") == "https://host/x"
    assert redact_uri("sqlite:////tmp/a/mlflow.db") == "sqlite:////tmp/a/mlflow.db"
    assert redact_uri("/data/photos") == "/data/photos"


def test_params_carry_no_credentials(tmp_path: Path) -> None:
    cfg = build_config({
        "source": "s3://AKIAXXX:s3cr3t@bucket/photos?token=t0k3n", "out": str(tmp_path),
        "weights": "s3://AKIAXXX:s3cr3t@bucket/weights", "mlflow_tracking_uri": "http://bob:hunter2@127.0.0.1:1",
    })
    params = scoring_params(cfg)
    text = " ".join(f"{k}={v}" for k, v in params.items())
    for secret in ("AKIAXXX", "s3cr3t", "t0k3n", "hunter2", "bob"):
        assert secret not in text, secret
    assert params["config.source"] == "s3://bucket/photos"
    assert params["config.models"] == ",".join(DEFAULT_MODELS)
    assert params["fingerprint"] == cfg.fingerprint()
    assert params["scorer.noise"].startswith("nr lower-is-better")


def _small_collection(root: Path) -> Path:
    from iqaflow.evaluation.synth import make_collection

    return make_collection(root, n_bases=2, size=64, seed=1)  # 2 x 14 images + 3 broken files


def _check_run(client, summary, experiment: str = "iqaflow") -> str:  # noqa: ANN001
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], f"tags.`iqaflow.run_id` = '{summary.run_id}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    m, p = run.data.metrics, run.data.params
    assert m["images"] == summary.images == 31 and m["errors"] == 3 and m["errors.EMPTY_FILE"] == 1
    assert m["score.sharpness.p50"] == pytest.approx(summary.scores["sharpness"].p50)
    assert m["images_per_second"] > 0
    assert p["config.models"] == ",".join(DEFAULT_MODELS) and len(p["fingerprint"]) == 16
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "summary.json", "plots"} <= files
    assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == ["plots/score_histograms.png"]
    return run.info.run_id


@pytest.mark.slow
def test_scoring_run_logs_to_sqlite_beside_results(prefect_api: None, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from iqaflow.flows.score import run_score

    out = tmp_path / "out"
    cfg = build_config({"source": str(_small_collection(tmp_path / "imgs")), "out": str(out), "workers": 1,
                        "shard_size": 16})
    assert cfg.tracking_uri() == f"sqlite:///{out / 'mlflow.db'}"
    summary = run_score(cfg)
    assert (out / "mlflow.db").is_file() and (out / "mlartifacts").is_dir()
    _check_run(MlflowClient(tracking_uri=cfg.tracking_uri()), summary)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on loopback with its own SQLite store and proxied artifact folder."""
    from conftest import free_port, wait_until

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", (root / "artifacts").as_uri()],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )

    def healthy() -> bool:
        if proc.poll() is not None:
            return True  # exited: stop waiting, reported below
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, 120, "mlflow server", interval=0.5)
        assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.slow
def test_scoring_run_logs_to_a_real_mlflow_server(prefect_api: None, mlflow_server: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from iqaflow.flows.score import run_score

    cfg = build_config({"source": str(_small_collection(tmp_path / "imgs")), "out": str(tmp_path / "out"),
                        "workers": 1, "shard_size": 16, "mlflow_tracking_uri": mlflow_server,
                        "mlflow_experiment": "qa-server"})
    summary = run_score(cfg)
    assert not (tmp_path / "out" / "mlflow.db").exists()  # nothing went to the local default
    client = MlflowClient(tracking_uri=mlflow_server)
    run_id = _check_run(client, summary, "qa-server")
    local = client.download_artifacts(run_id, "summary.json", str(tmp_path / "dl"))
    assert '"images": 31' in Path(local).read_text()
