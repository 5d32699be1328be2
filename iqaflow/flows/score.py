"""The scoring flow: discover -> plan shards -> one Prefect task per shard on Dask -> summary."""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from iqaflow.config import RunConfig
from iqaflow.errors import ConfigError, IqaflowError
from iqaflow.flows.gate import gate_flow, gate_spec_task
from iqaflow.models.registry import is_resolved_name, scorer_info
from iqaflow.tasks import discover, plan, score, summary, track
from iqaflow.tasks.layout import RunLayout
from iqaflow.tasks.storage import atomic_write, open_fs

_opts: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


def _retry_unless_config_error(_task: Any, _run: Any, state: Any) -> bool:
    """A wrong config stays wrong: fail at once instead of retrying."""
    return not isinstance(state.result(raise_on_failure=False), ConfigError)


discover_task = task(
    discover.write_manifest, name="discover", retries=2, retry_delay_seconds=2,
    retry_condition_fn=_retry_unless_config_error, **_opts,
)
plan_task = task(plan.plan_shards, name="plan", **_opts)
# Retries are per shard (style principle 5): a committed shard is skipped on retry.
score_shard_task = task(score.score_shard, name="score-shard", retries=2, retry_delay_seconds=2, **_opts)
summarise_task = task(summary.summarise, name="summarise", **_opts)
track_task = task(track.track_run, name="track", **_opts)


class ShardsFailed(IqaflowError):
    """Some shards failed after their retries; the committed ones are kept for the re-run."""


def task_runner_for(config: RunConfig) -> DaskTaskRunner:
    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": config.workers,
            "threads_per_worker": config.threads_per_worker,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
            "silence_logs": logging.ERROR,
        },
    )


@flow(name="iqaflow-score", log_prints=False)
def score_flow(config: RunConfig) -> summary.RunSummary:
    log = get_run_logger()
    t0 = time.perf_counter()
    layout = RunLayout.for_config(config)
    fs, cfg_path = open_fs(layout.config_file)
    atomic_write(fs, cfg_path, config.model_dump_json(indent=2).encode())

    n = discover_task(
        config.source, layout.manifest, config.shard_size, config.extensions, config.recursive,
        reference_root=config.reference_root, need_references=bool(config.fr_models()),
    )
    plans = plan_task(layout.manifest, layout.results_dir, config.fingerprint())
    log.info("run %s: %d images in %d shards", layout.run_id, n, len(plans))

    gate_spec = gate_spec_task(config.gates, config.outputs()) if config.gates else None
    settings = score.ScoreSettings(
        tuple(config.models), config.device, config.batch_size, config.prefetch, config.weights, config.allow_download,
        gate_spec, registry_uri=config.registry_uri() if any(is_resolved_name(m) for m in config.models) else None,
    )
    futures = [
        score_shard_task.with_options(task_run_name=f"shard-{p.index:05d}-{p.shard_id[:8]}").submit(p, settings)
        for p in plans
    ]
    results: list[score.ShardResult] = []
    failed: list[str] = []
    for p, fut in zip(plans, futures, strict=True):
        try:
            results.append(fut.result())
        except Exception as exc:
            failed.append(f"shard {p.index} ({p.shard_id}): {type(exc).__name__}: {exc}")
    if failed:
        raise ShardsFailed(
            f"{len(failed)} of {len(plans)} shards failed; re-run the same command to retry only those. "
            f"First: {failed[0]}"
        )
    skipped = sum(r.skipped for r in results)
    outputs = [o for m in config.models for o in scorer_info(m).outputs]
    result = summarise_task(
        [r.path for r in results], outputs, layout.run_id, layout.results_dir, skipped, time.perf_counter() - t0
    )
    summary.write_summary(result, layout.summary)
    log.info("run %s: %d images, %d errors, results in %s", layout.run_id, result.images, result.errors,
             layout.results_dir)
    report = None
    try:
        if config.gates:  # relative rules, collection gates and routing need the whole run
            report = gate_flow(layout.results_dir, config.gates, None, config.apply_routing)
    finally:  # a run whose collection gates failed is recorded too
        if config.track:
            _track(config, result, report)
    return result


def _track(config: RunConfig, result: summary.RunSummary, report: Any) -> None:
    """Record the run in MLflow. The results are committed by now, so a tracking failure only warns."""
    log = get_run_logger()
    decisions = dict(report.decisions.counts) if report is not None else None
    artifacts = {"gates": report.report_file} if report is not None else None
    try:
        run_id = track_task(config, result, decisions, artifacts)
        log.info("run %s recorded in MLflow run %s", result.run_id, run_id)
    except Exception as exc:
        log.warning("run %s was not recorded in MLflow (%s: %s). Fix: check mlflow_tracking_uri, or set "
                    "track: false", result.run_id, type(exc).__name__, exc)


def run_score(config: RunConfig) -> summary.RunSummary:
    """Run the flow with the Dask task runner the config asks for."""
    return score_flow.with_options(task_runner=task_runner_for(config))(config)
