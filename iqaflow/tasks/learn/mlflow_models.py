"""Resolve ``mlflow:<model uri>`` scorer names: fetch a registered model's files, build its scorer class.

Accepted model URIs: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/NAME/latest`` and
``runs:/RUN_ID/PATH``. The files (``iqaflow_model.json`` + a state dict, as ``iqaflow train`` logs
them) are copied into the local cache once per process; the state dict's sha256 from the metadata
is checked before ``torch.load(weights_only=True)``, so nothing pickled is executed. The registry
is the run config's ``mlflow_registry_uri`` (default: its tracking URI), else
``$MLFLOW_REGISTRY_URI`` / ``$MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iqaflow.errors import UnknownScorerError, WeightsError
from iqaflow.models.base import Scorer
from iqaflow.models.deep.trained import META_FILE, column_name, load_trained_class
from iqaflow.models.weights import CACHE_DIR

PREFIX = "mlflow:"
_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+|latest)|@(?P<alias>[A-Za-z0-9_-]+))$")
_RUNS = re.compile(r"^runs:/(?P<run>[0-9a-fA-F]{8,64})/(?P<path>[^?#]+)$")
_FORMS = (
    "mlflow:models:/NAME/VERSION, mlflow:models:/NAME@ALIAS, mlflow:models:/NAME/latest or mlflow:runs:/RUN_ID/PATH"
)


@dataclass(frozen=True)
class ModelRef:
    uri: str  # the MLflow model URI, without the "mlflow:" prefix
    column: str


def parse(name: str) -> ModelRef:
    """Check the form of a scorer name like ``mlflow:models:/iqa/3`` (no network)."""
    uri = name.removeprefix(PREFIX)
    if m := _MODELS.match(uri):
        suffix = f"v{m['version']}" if m["version"] and m["version"] != "latest" else (m["alias"] or "latest")
        return ModelRef(uri, column_name(f"{m['name']}_{suffix}"))
    if m := _RUNS.match(uri):
        return ModelRef(uri, column_name(f"run_{m['run'][:8]}"))
    raise UnknownScorerError(f"scorer {name!r} is not a model reference; expected {_FORMS}")


def registry_uri(configured: str | None) -> str:
    uri = configured or os.environ.get("MLFLOW_REGISTRY_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise UnknownScorerError(
            "an mlflow: model was requested but no MLflow registry is configured. Fix: set mlflow_tracking_uri "
            "(or mlflow_registry_uri) in the run config, or $MLFLOW_TRACKING_URI, to where `iqaflow train` "
            "registered the model"
        )
    return uri


def _download_uri(ref: ModelRef, uri: str) -> tuple[str, str]:
    """(artifact URI of the model's files, a label naming the exact version) for ``ref``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if ref.uri.startswith("runs:/"):
        return ref.uri, ref.uri
    m = _MODELS.match(ref.uri)
    assert m is not None  # parse() checked the form
    name = m["name"]
    try:
        if m["alias"]:
            version = client.get_model_version_by_alias(name, m["alias"]).version
        elif m["version"] == "latest":
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise MlflowException(f"registered model {name!r} has no versions")
            version = str(max(int(v.version) for v in versions))
        else:
            version = m["version"]
        return client.get_model_version_download_uri(name, version), f"models:/{name}/{version}"
    except MlflowException as exc:
        try:
            known: list[str] | str = sorted(rm.name for rm in client.search_registered_models(max_results=50))
        except MlflowException:
            known = "unknown (the registry did not answer)"
        raise UnknownScorerError(
            f"model {ref.uri!r} not found in the MLflow registry at {_redacted(uri)}: {exc.message}. Registered "
            f"models there: {known or 'none'}. Fix: train and register it with `iqaflow train --name NAME`, or "
            "point mlflow_tracking_uri / mlflow_registry_uri at the registry that holds it"
        ) from None


def fetch(ref: ModelRef, uri: str) -> tuple[Path, str]:
    """The local folder holding the model's files (cached per registry and version) and its version label."""
    import mlflow

    # Two small files: a progress bar per worker process is noise in the CLI and the Dask logs (setdefault:
    # an explicit user setting wins).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    source, label = _download_uri(ref, uri)
    key = hashlib.sha256(f"{uri}\n{label}\n{source}".encode()).hexdigest()[:16]
    target = CACHE_DIR / "mlflow" / key
    if (target / META_FILE).is_file() and not label.endswith("/latest"):
        return target, label
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp), tracking_uri=uri))
        if not (local / META_FILE).is_file():
            raise WeightsError(
                f"{label}: the model's files ({sorted(p.name for p in local.iterdir())}) have no {META_FILE}. "
                "Fix: register models logged by `iqaflow train`"
            )
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(local, target)
        except OSError:  # another process on this machine won the race; its copy is identical
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target, label


def resolve(name: str, configured_uri: str | None) -> type[Scorer]:
    """The registry hook: ``mlflow:<model uri>`` -> a scorer class whose ``setup`` loads the checked weights."""
    ref = parse(name)
    uri = registry_uri(configured_uri)
    folder, label = fetch(ref, uri)
    return load_trained_class(folder, ref.column, label)


def _redacted(uri: str) -> str:
    from iqaflow.tasks.report.track import redact_uri

    return redact_uri(uri)
