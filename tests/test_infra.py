"""infra/: the compose stack, Kubernetes manifests, Dockerfile, SLURM example and Prefect project file.

``docker compose config`` validates the compose file where a Docker daemon and the compose plugin
work; everywhere the structural checks below run (every YAML parses, references resolve).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parent.parent / "infra"
COMPOSE = INFRA / "docker-compose.yml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-[^}]*)?\}")


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_every_yaml_file_parses() -> None:
    files = sorted(INFRA.rglob("*.yml")) + sorted(INFRA.rglob("*.yaml"))
    assert len(files) >= 4
    for f in files:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        assert docs, f


def test_compose_stack_has_every_service_wired() -> None:
    spec = _compose()
    services = spec["services"]
    for name in ("postgres", "prefect-server", "minio", "mlflow", "mlflow-db", "dask-scheduler", "dask-worker",
                 "dask-worker-gpu", "curation"):
        assert name in services, name
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps:
            assert dep in services, f"{name} depends on unknown {dep}"
        for vol in svc.get("volumes") or []:
            source = vol.split(":", 1)[0]
            assert source.startswith((".", "/")) or source in (spec.get("volumes") or {}), f"{name}: {vol}"
        for port in svc.get("ports") or []:
            assert re.fullmatch(r"(\d+:)?\d+(/tcp|/udp)?", str(port)), f"{name}: {port}"
    published = [str(p).split(":")[0] for s in services.values() for p in s.get("ports") or []]
    assert len(published) == len(set(published)), "two services publish the same host port"
    assert {"4200", "5000", "9000", "8786"} <= set(published)
    assert "postgres" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "mlflow-db" in " ".join(services["mlflow"]["command"])


def test_gpu_worker_only_in_gpu_profile_with_a_device_reservation() -> None:
    services = _compose()["services"]
    gpu = services["dask-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert gpu["build"]["args"]["BASE"].startswith("nvidia/cuda:")
    assert [n for n, s in services.items() if s.get("profiles")] == ["dask-worker-gpu"]
    assert services["dask-worker"]["command"][2] == "tcp://dask-scheduler:8786"


def test_compose_variables_all_have_defaults() -> None:
    """``docker compose config`` fails on an unset variable without a default; so would a fresh checkout."""
    for match in _VAR.finditer(COMPOSE.read_text()):
        assert match.group(2), f"${{{match.group(1)}}} has no default"


def _docker_compose_works() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    probe = [[docker, "info"], [docker, "compose", "version"]]
    return all(subprocess.run(c, capture_output=True, timeout=30).returncode == 0 for c in probe)


def test_docker_compose_config_accepts_the_stack() -> None:
    if not _docker_compose_works():
        pytest.skip("no working docker daemon with the compose plugin here; structural checks above ran instead")
    res = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--profile", "gpu", "config", "--quiet"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr


def _manifests() -> list[tuple[str, dict]]:
    out = []
    for f in sorted((INFRA / "k8s").glob("*.yaml")):
        out.extend((f.name, d) for d in yaml.safe_load_all(f.read_text()) if d is not None)
    return out


def test_kubernetes_manifests_are_well_formed() -> None:
    docs = _manifests()
    kinds = {d["kind"] for _, d in docs}
    assert {"DaskCluster", "DaskWorkerGroup", "Deployment", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    for name, d in docs:
        assert d.get("apiVersion") and d.get("kind") and d.get("metadata", {}).get("name"), name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"]), d["metadata"]["name"]
        if d["kind"] not in ("Namespace", "ServiceAccount", "Secret", "ConfigMap", "Role", "RoleBinding"):
            assert "spec" in d, f"{name}: {d['kind']} without spec"
    names = {(d["kind"], d["metadata"]["name"]) for _, d in docs}
    for _, d in docs:
        pods = []
        if d["kind"] == "Deployment":
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
            pods.append(d["spec"]["template"]["spec"])
        if d["kind"] == "DaskCluster":
            assert d["apiVersion"] == "kubernetes.dask.org/v1"
            pods += [d["spec"]["worker"]["spec"], d["spec"]["scheduler"]["spec"]]
            assert d["spec"]["scheduler"]["service"]["ports"][0]["port"] == 8786
        if d["kind"] in ("DaskWorkerGroup", "DaskAutoscaler"):
            assert ("DaskCluster", d["spec"]["cluster"]) in names
            if d["kind"] == "DaskWorkerGroup":
                pods.append(d["spec"]["worker"]["spec"])
                limits = d["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]
                assert limits["nvidia.com/gpu"] == 1
        for pod in pods:
            assert ("ServiceAccount", pod["serviceAccountName"]) in names
            for c in pod["containers"]:
                assert c["name"] and c["image"]
                for ref in c.get("envFrom") or []:
                    kind, ref_name = ("Secret", ref["secretRef"]["name"]) if "secretRef" in ref else \
                        ("ConfigMap", ref["configMapRef"]["name"])
                    assert (kind, ref_name) in names, ref


def test_dockerfile_has_cpu_and_cuda_variants() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:3\.11", text, re.M) and "FROM ${BASE}" in text
    assert "ARG TORCH_INDEX=cpu" in text and "nvidia/cuda" in text
    for copied in re.findall(r"^COPY (\S+)", text, re.M):
        assert (INFRA.parent / copied).exists(), copied


def test_slurm_example_compiles_without_dask_jobqueue() -> None:
    source = (INFRA / "slurm" / "jobqueue_example.py").read_text()
    tree = ast.parse(source)
    compile(tree, "jobqueue_example.py", "exec")
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"SLURMCluster", "run_score", "build_config"} <= imported


def test_prefect_project_file_schedules_a_real_flow() -> None:
    from prefect import Flow

    from iqaflow.flows.deployments import from_file, load_file, resolve_entrypoint

    data = load_file(INFRA / "prefect.yaml")
    assert data["deployments"]
    for spec in data["deployments"]:
        flow = resolve_entrypoint(spec["entrypoint"])
        assert isinstance(flow, Flow) and flow.name == "iqaflow-curate"
        assert spec["schedules"] and all("cron" in s for s in spec["schedules"])
        assert (INFRA.parent / spec["parameters"]["gates"]).is_file()
    pairs = from_file(INFRA / "prefect.yaml")  # builds the Prefect deployments: parameters and crons validate
    nightly = next(dep for dep, spec in pairs if spec["name"] == "curate-nightly")
    assert nightly.schedules[0].schedule.cron == "0 2 * * *"
    assert nightly.entrypoint == "iqaflow.flows.curate.curate_flow"


def test_entrypoints_outside_the_flows_package_are_refused() -> None:
    from iqaflow.errors import ConfigError
    from iqaflow.flows.deployments import resolve_entrypoint

    for bad in ("os.py:system", "iqaflow/flows/curate.py", "iqaflow/tasks/report/build.py:write_report",
                "iqaflow/flows/curate.py:CurationState"):
        with pytest.raises(ConfigError):
            resolve_entrypoint(bad)
