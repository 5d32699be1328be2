"""Record runs in MLflow: params, metrics and artifacts of scoring, training and evaluation runs.

Everything goes through an explicit ``MlflowClient`` and run id (no global active run), so flows,
threads and tests never share hidden state. What is logged is chosen to be safe to share:

* URIs lose their user info, query and fragment (``s3://KEY:SECRET@bucket/x?token=..`` ->
  ``s3://bucket/x``); config keys that name secrets are never logged; environment variables never.
* Params carry folder-level locations and settings only, never per-image paths or image content.

With a local SQLite store (the default, ``sqlite:///<out>/mlflow.db``) artifacts go beside the
database in ``mlartifacts/``; with a tracking server the server decides.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from iqaflow.config.run import RunConfig
    from iqaflow.tasks.report.summary import RunSummary

log = logging.getLogger(__name__)

_SECRET_KEY = re.compile(r"pass(word)?|secret|token|credential|api[_-]?key|access[_-]?key|auth|private", re.I)
_PARAM_MAX = 500
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /:]")


def redact_uri(uri: str) -> str:
    """``uri`` without user info, query or fragment; plain paths unchanged."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if not (parts.username or parts.password or parts.query or parts.fragment or "@" in parts.netloc):
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", "")) if host else f"{parts.scheme}://{parts.path}"


def safe_value(value: Any) -> str | None:
    """A param value: lists joined, URIs redacted, long values truncated; None stays None."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        text = ",".join(redact_uri(str(v)) for v in value)
    elif isinstance(value, dict):
        text = json.dumps({k: safe_value(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))})
    else:
        text = redact_uri(str(value))
    return text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 3] + "..."


def safe_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Params from a mapping: secret-named keys dropped, values made safe, None values skipped."""
    out = {}
    for key, value in values.items():
        if _SECRET_KEY.search(key):
            continue
        text = safe_value(value)
        if text is not None:
            out[_BAD_KEY_CHARS.sub("_", f"{prefix}{key}")] = text
    return out


def metric_key(name: str) -> str:
    return _BAD_KEY_CHARS.sub("_", name)


def local_artifact_root(tracking_uri: str) -> str | None:
    """``file://`` folder beside a local SQLite database; None for servers and other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlartifacts").as_uri()


def client_for(tracking_uri: str) -> MlflowClient:
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_id(client: MlflowClient, name: str, tracking_uri: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=local_artifact_root(tracking_uri))
    except MlflowException:  # created by a concurrent run in between
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def start_run(
    tracking_uri: str, experiment: str, run_name: str, tags: Mapping[str, str]
) -> tuple[MlflowClient, str]:
    import iqaflow

    client = client_for(tracking_uri)
    exp = experiment_id(client, experiment, tracking_uri)
    all_tags = {"iqaflow.version": getattr(iqaflow, "__version__", "unknown"), **tags}
    run = client.create_run(exp, run_name=run_name, tags={k: safe_value(v) or "" for k, v in all_tags.items()})
    return client, run.info.run_id


def log_values(
    client: MlflowClient, run_id: str, params: Mapping[str, str] | None = None,
    metrics: Mapping[str, float] | None = None, step: int = 0,
) -> None:
    """Batched params and finite metrics (MLflow caps a batch at 100 params / 1000 metrics)."""
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    p = [Param(k, v) for k, v in (params or {}).items()]
    m = [Metric(metric_key(k), float(v), now, step) for k, v in (metrics or {}).items()
         if v is not None and float(v) == float(v) and abs(float(v)) != float("inf")]
    for i in range(0, len(p), 100):
        client.log_batch(run_id, params=p[i : i + 100])
    for i in range(0, len(m), 1000):
        client.log_batch(run_id, metrics=m[i : i + 1000])


# -- scoring runs -------------------------------------------------------------------------------------------
def scoring_params(config: RunConfig) -> dict[str, str]:
    """The run config (secrets dropped, URIs redacted), its fingerprint and each scorer's weight hashes."""
    from iqaflow.models.registry import scorer_info
    from iqaflow.models.weights import WeightsStore

    params = safe_params(config.model_dump(exclude={"models"}), "config.")
    params["config.models"] = safe_value(config.models) or ""
    params["fingerprint"] = config.fingerprint()
    manifest: dict[str, str] | None = None
    for name in config.models:
        info = scorer_info(name)
        hashes = []
        for w in info.weights:
            if w.sha256 is None and manifest is None:
                manifest = WeightsStore.from_env(config.weights).manifest()
            digest = w.sha256 or (manifest or {}).get(w.filename)
            hashes.append(f"{w.filename}:{digest[:16] if digest else 'unknown'}")
        key = f"scorer.{info.name}"
        params[metric_key(key)] = safe_value(
            f"{info.kind} {'higher' if info.higher_is_better else 'lower'}-is-better"
            + (f" weights={';'.join(hashes)}" if hashes else "") + (f" source={name}" if name != info.name else "")
        ) or ""
    return params


def scoring_metrics(summary: RunSummary, decisions: Mapping[str, int] | None = None) -> dict[str, float]:
    m: dict[str, float] = {
        "images": summary.images, "ok": summary.ok, "errors": summary.errors,
        "error_rate": summary.errors / summary.images if summary.images else 0.0,
        "shards": summary.shards, "shards_skipped": summary.shards_skipped, "seconds": summary.seconds,
        "images_per_second": summary.images_per_second, "shard_seconds": summary.shard_seconds,
        "images_per_shard_second": summary.images_per_shard_second,
    }
    m.update({f"errors.{code}": n for code, n in summary.errors_by_code.items()})
    for col, st in summary.scores.items():
        m.update({f"score.{col}.count": st.count, f"score.{col}.mean": st.mean, f"score.{col}.p05": st.p05,
                  f"score.{col}.p50": st.p50, f"score.{col}.p95": st.p95})
    m.update({f"gate.{k}": v for k, v in (decisions or {}).items()})
    return m


def histogram_figure(results_dir: str, columns: list[str], path: Path) -> bool:
    """One histogram per score column (up to 12) into ``path``; False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import pyarrow.dataset as ds

    from iqaflow.tasks.io.storage import open_fs

    fs, root = open_fs(results_dir)
    columns = columns[:12]
    if not columns or not fs.exists(root):
        return False
    table = ds.dataset(root, format="parquet", filesystem=fs).to_table(columns=columns)
    cols = min(4, len(columns))
    rows = (len(columns) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, columns, strict=False):
        values = table[name].drop_null().to_numpy(zero_copy_only=False)
        ax.hist(values, bins=40, color="#4477aa")
        ax.set_title(name, fontsize=9)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def track_run(
    config: RunConfig, summary: RunSummary, decisions: Mapping[str, int] | None = None,
    artifacts: Mapping[str, str] | None = None,
) -> str:
    """Log one scoring run; returns the MLflow run id.

    ``decisions`` are the gate counts (pass/flag/reject); ``artifacts`` maps an artifact folder to a
    file URI (local or remote) to copy there, e.g. ``{"gates": ".../report.json"}``.
    """
    import tempfile

    from iqaflow.tasks.io.storage import open_fs

    uri = config.tracking_uri()
    client, run_id = start_run(uri, config.mlflow_experiment, summary.run_id,
                               {"iqaflow.kind": "score", "iqaflow.run_id": summary.run_id})
    try:
        log_values(client, run_id, scoring_params(config), scoring_metrics(summary, decisions))
        client.log_dict(run_id, json.loads(_redacted_json(config.model_dump())), "config.json")
        record = json.loads(summary.to_json())
        record["results_dir"] = redact_uri(record["results_dir"])
        client.log_dict(run_id, record, "summary.json")
        with tempfile.TemporaryDirectory() as tmp:
            plot = Path(tmp) / "score_histograms.png"
            if histogram_figure(summary.results_dir, list(summary.scores), plot):
                client.log_artifact(run_id, str(plot), "plots")
            for folder, file_uri in (artifacts or {}).items():
                fs, path = open_fs(file_uri)
                local = Path(tmp) / folder / Path(path).name
                local.parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(path, str(local))
                client.log_artifact(run_id, str(local), folder)
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    log.info("MLflow run %s in %s (experiment %s)", run_id, redact_uri(uri), config.mlflow_experiment)
    return run_id


def _redacted_json(values: dict[str, Any]) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, str):
            return redact_uri(v)
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if not _SECRET_KEY.search(str(k))}
        return v

    return json.dumps(clean(values))
