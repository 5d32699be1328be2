"""The scoring flow: discover -> plan shards -> one Prefect task per shard on Dask -> summary."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner

from iqaflow.config.run import RunConfig
from iqaflow.errors import ConfigError, IqaflowError
from iqaflow.flows import progress
from iqaflow.flows.cluster import cluster_for
from iqaflow.flows.gate import gate_flow, gate_spec_task
from iqaflow.flows.startup import local_cluster, share_api_with_workers
from iqaflow.models.gate_binding import directions
from iqaflow.models.registry import is_resolved_name, scorer_info
from iqaflow.schemas.duplicates import DuplicatePolicy
from iqaflow.schemas.gates import load_gate_file
from iqaflow.tasks.collection.run_pass import duplicate_pass
from iqaflow.tasks.io import discover, incremental, plan
from iqaflow.tasks.io.layout import RunLayout
from iqaflow.tasks.io.storage import atomic_write, join, open_fs
from iqaflow.tasks.report import build as html_report
from iqaflow.tasks.report import print_job as print_report
from iqaflow.tasks.report import summary, track
from iqaflow.tasks.score import domain as score_domain
from iqaflow.tasks.score import shard as score

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
report_task = task(html_report.write_report, name="report", **_opts)
track_task = task(track.track_run, name="track", **_opts)
incremental_task = task(incremental.split_incremental, name="incremental", **_opts)


class ShardsFailed(IqaflowError):
    """Some shards failed after their retries; the committed ones are kept for the re-run."""


def task_runner_for(config: RunConfig) -> DaskTaskRunner:
    """An external scheduler, else a local cluster: CPU workers, or one worker per GPU on CUDA."""
    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    choice = cluster_for(config.device, config.workers, config.threads_per_worker)
    return DaskTaskRunner(cluster_class=choice.cluster_class, cluster_kwargs=choice.kwargs)


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
        sniff_extensionless=config.sniff_extensionless,
    )
    fingerprint = config.fingerprint()
    atomic_write(fs, join(layout.root, incremental.FINGERPRINT_FILE), fingerprint.encode())
    carried = None
    if config.incremental:
        carried = incremental_task(layout.manifest, config.incremental, fingerprint, layout.results_dir,
                                   config.shard_size)
        log.info("incremental: %d unchanged images carried over, %d to score", carried.carried, carried.to_score)
        n = carried.to_score
    kept = [carried.carried_path] if carried and carried.carried_path else []
    plans = plan_task(layout.manifest, layout.results_dir, fingerprint, kept)
    log.info("run %s: %d images in %d shards", layout.run_id, n, len(plans))

    gate_spec = gate_spec_task(config.gates, config.outputs(), config.duplicates) if config.gates else None
    settings = score.ScoreSettings(
        tuple(config.models), config.device, config.batch_size, config.prefetch, config.weights, config.allow_download,
        gate_spec, registry_uri=config.registry_uri() if any(is_resolved_name(m) for m in config.models) else None,
        domain=_domain(config, layout), gpu_decode=config.gpu_decode, max_decode_pixels=config.max_decode_pixels,
    )
    futures = [
        score_shard_task.with_options(task_run_name=f"shard-{p.index:05d}-{p.shard_id[:8]}").submit(p, settings)
        for p in plans
    ]
    results, failed = _collect(plans, futures, n)
    if failed:
        raise ShardsFailed(
            f"{len(failed)} of {len(plans)} shards failed; re-run the same command to retry only those. "
            f"First: {failed[0]}"
        )
    skipped = sum(r.skipped for r in results)
    scored = [r for r in results if not r.skipped]
    outputs = [o for m in config.models for o in scorer_info(m).outputs]
    files = [r.path for r in results] + kept
    result = summarise_task(
        files, outputs, layout.run_id, layout.results_dir, skipped, time.perf_counter() - t0,
        images_scored=sum(r.rows for r in scored), shard_seconds=sum(r.seconds for r in scored),
    )
    summary.write_summary(result, layout.summary)
    log.info("run %s: %d images, %d errors, results in %s", layout.run_id, result.images, result.errors,
             layout.results_dir)
    if config.duplicates:  # before the gate pass: its rules, routing and the report read these columns
        previous = incremental.previous_run_root(config.incremental) if config.incremental else None
        # only a scheduler the user named: a local cluster's workers share this machine, where one
        # compiled pass beats shuffling every band's records between processes
        dups = duplicate_task(layout.root, files, _duplicate_policy(config), directions(), previous,
                              config.dask_address or None)
        log.info("duplicates: %d groups, %d images not kept (%d exact), %d size outliers%s", dups.groups,
                 dups.duplicates, dups.exact, dups.size_outliers, " (new images against the earlier index)"
                 if dups.incremental else "")
    report = None
    try:
        if config.gates:  # relative rules, collection gates and routing need the whole run
            report = gate_flow(layout.results_dir, config.gates, config.baseline, config.apply_routing)
    finally:  # a run whose collection gates failed is reported and recorded too
        if config.align != "none" or config.heatmap_below is not None or config.print_inspect:
            _print_report(layout, config.heatmap_below)
        html = _report(layout)
        if config.track:
            _track(config, result, report, html)
    return result


def _duplicate_policy(config: RunConfig) -> DuplicatePolicy:
    """The gate file's ``duplicates:`` section, or the defaults without a gate file."""
    return load_gate_file(config.gates).duplicates if config.gates else DuplicatePolicy()


duplicate_task = task(duplicate_pass, name="duplicates", **_opts)


def _domain(config: RunConfig, layout: RunLayout) -> score_domain.DomainSettings:
    return score_domain.DomainSettings(
        volume_slices=config.volume_slices, volume_reduce=config.volume_reduce, phi_safe=config.phi_safe,
        phi_key_home=config.out, align=config.align, heatmap_below=config.heatmap_below,
        heatmap_dir=layout.heatmaps if config.heatmap_below is not None or config.print_inspect else None,
        print_inspect=config.print_inspect, print_dpi=config.print_dpi,
        defects_dir=layout.defects if config.print_inspect else None,
    )


def _print_report(layout: RunLayout, heatmap_below: float | None) -> None:
    """The print job's page report (pass/fail per page, worst pages with heatmaps); a failure only warns."""
    try:
        path = print_report.write_print_report(layout.results_dir, join(layout.root, print_report.REPORT_NAME),
                                               heatmap_below)
        get_run_logger().info("run %s: print job report in %s", layout.run_id, path)
    except Exception as exc:
        get_run_logger().warning("run %s: no print job report (%s: %s)", layout.run_id, type(exc).__name__, exc)


def _report(layout: RunLayout) -> str | None:
    """Write OUT/runs/RUN_ID/report.html; the results are committed, so a report failure only warns."""
    try:
        return report_task(layout.results_dir, html_report.report_path(layout.root))
    except Exception as exc:
        get_run_logger().warning("run %s: no HTML report (%s: %s). Fix: run `iqaflow report %s` to see why",
                                 layout.run_id, type(exc).__name__, exc, layout.root)
        return None


def _collect(plans: list[plan.ShardPlan], futures: list[Any], images: int) -> tuple[list[score.ShardResult], list[str]]:
    """Wait for every shard in completion order, reporting progress; failures are collected, not raised."""
    by_future = {id(f): p for f, p in zip(futures, plans, strict=True)}
    results: list[score.ShardResult] = []
    failed: list[str] = []
    progress.reporter().start(images, len(plans))
    try:
        for fut in as_completed(futures):
            p = by_future[id(fut)]
            try:
                res = fut.result()
                results.append(res)
                progress.reporter().shard_done(res.rows, res.errors, res.skipped)
            except Exception as exc:
                failed.append(f"shard {p.index} ({p.shard_id}): {type(exc).__name__}: {exc}")
                progress.reporter().shard_done(p.size, p.size, False)
    finally:
        progress.reporter().stop()
    results.sort(key=lambda r: r.index)
    return results, failed


def _track(config: RunConfig, result: summary.RunSummary, report: Any, html: str | None = None) -> None:
    """Record the run in MLflow. The results are committed by now, so a tracking failure only warns."""
    log = get_run_logger()
    decisions = dict(report.decisions.counts) if report is not None else None
    artifacts = {"gates": report.report_file} if report is not None else None
    if html is not None:
        artifacts = {**(artifacts or {}), "report": html}
    try:
        run_id = track_task(config, result, decisions, artifacts)
        log.info("run %s recorded in MLflow run %s", result.run_id, run_id)
    except Exception as exc:
        log.warning("run %s was not recorded in MLflow (%s: %s). Fix: check mlflow_tracking_uri, or set "
                    "track: false", result.run_id, type(exc).__name__, exc)


def run_score(config: RunConfig) -> summary.RunSummary:
    """Run the flow on the configured Dask scheduler, else on a local cluster started for this run.

    The local cluster starts while the Prefect API server starts, not lazily at the first shard as
    DaskTaskRunner would; the runner gets its address (duplicate() keeps an address, not a cluster).
    """
    if config.dask_address:
        share_api_with_workers()
        return score_flow.with_options(task_runner=task_runner_for(config))(config)
    choice = cluster_for(config.device, config.workers, config.threads_per_worker)
    with local_cluster(choice, warm=(__name__,)) as cluster:
        return score_flow.with_options(task_runner=DaskTaskRunner(address=cluster.scheduler_address))(config)
