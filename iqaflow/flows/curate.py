"""Scheduled, incremental curation of a prefix: score only new or changed images, gate, route, report, track.

The deployment target of ``infra/prefect.yaml`` and ``iqaflow deploy``. Each run is a score flow run
in a fresh folder ``OUT/runs/curate-<UTC time>`` built on the last completed curation run of the same
source through the score flow's ``incremental`` mode: unchanged images (same size, etag/mtime and
reference, same scorers) are carried over, new and changed ones are scored. So every run's results
are the whole curated collection, and its gates, routing (e.g. the accepted manifest), HTML report
and MLflow run describe all of it; the previous run is the drift baseline. The first run scores
everything. State: ``OUT/curation/<key>/state.json`` (:mod:`iqaflow.tasks.io.curation`).

Parameters are plain JSON values so a deployment (YAML or UI) can set them; any other run config
key goes in ``settings`` (models, workers, dask_address, mlflow_tracking_uri, ...).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from iqaflow.config.run import build_config, load_config
from iqaflow.errors import GateFailed
from iqaflow.tasks.io import curation
from iqaflow.tasks.io.layout import RunLayout

_opts: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}
commit_task = task(curation.commit_if_completed, name="commit-curation", **_opts)


@flow(name="iqaflow-curate", log_prints=False)
def curate_flow(
    source: str,
    out: str,
    gates: str | None = None,
    apply_routing: bool | None = None,
    config_file: str | None = None,
    settings: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Curate ``source`` into ``out``: a new run that scores only what changed since the last one.

    ``config_file`` is a run config YAML that ``settings`` and the other parameters overlay;
    ``run_id`` defaults to ``curate-<UTC time>``.
    """
    from iqaflow.flows.score import run_score

    log = get_run_logger()
    values = {**(settings or {}), "source": source, "out": out, "gates": gates, "apply_routing": apply_routing}
    base = load_config(config_file, values)  # validated once: a wrong model or gate file fails before any work
    state = curation.CurationState.for_source(base.out, base.source)
    previous = base.incremental or state.last_run()
    config = build_config(
        {**base.model_dump(), "run_id": run_id or curation.new_run_id(), "incremental": previous,
         "baseline": base.baseline or previous},
        "curation run config",
    )
    layout = RunLayout.for_config(config)
    log.info("curation of %s: run %s, building on %s", base.source, layout.run_id, previous or "nothing (first run)")
    try:
        run_score(config)
    except GateFailed:  # scores are committed, so the next run builds on this one; this run still ends Failed
        commit_task(state, layout.root)
        raise
    counts = commit_task(state, layout.root) or {}
    log.info("curation run %s: %s images, %s scored now, report %s", layout.run_id, counts.get("images"),
             counts.get("scored"), f"{layout.root}/report.html")
    return {"source": base.source, "run_id": layout.run_id, "run_root": layout.root, "previous": previous,
            "report": f"{layout.root}/report.html", **counts}
