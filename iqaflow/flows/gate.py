"""The gate flow: decide every image, check collection gates (GX + drift), route, report.

Usable on its own over an existing results folder (``iqaflow gate``) and called by the score flow
as a subflow when the run config names a gate file. A failed ``on_fail: fail`` collection gate
raises :class:`~iqaflow.errors.GateFailed`, so the flow run ends Failed and the CLI exits 2; the
report is written first, and routing is planned but not applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from iqaflow.errors import GateFailed
from iqaflow.models.gate_binding import prepare
from iqaflow.schemas.gates import GateFile
from iqaflow.schemas.results import results_schema
from iqaflow.tasks.gates import gate, router
from iqaflow.tasks.io.storage import join

_opts: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


@dataclass
class GateReport:
    run_id: str
    gate_file: str
    gates_dir: str
    decisions: gate.DecisionSummary
    collection: gate.CollectionReport
    routing: router.RoutingReport
    report_file: str

    @property
    def failed(self) -> list[gate.GateCheck]:
        return self.collection.failed


def _bind(run: gate.RunPaths, gates: str) -> GateFile:
    return prepare(gates, gate.results_schema_of(run))


def _spec_for_outputs(gates: str, outputs: list[str], collection: bool = False) -> GateFile:
    """The gate file bound for the shard task; with ``collection`` its rules on the collection pass's
    columns are deferred to the final pass."""
    return prepare(gates, results_schema(outputs), collection=collection)


bind_task = task(_bind, name="gate-bind", **_opts)
gate_spec_task = task(_spec_for_outputs, name="gate-bind", **_opts)
decide_task = task(gate.apply_decisions, name="gate-decide", **_opts)
collection_task = task(gate.validate_collection, name="gate-collection", **_opts)
route_task = task(router.route, name="route", **_opts)
report_task = task(gate.write_report, name="gate-report", **_opts)


@flow(name="iqaflow-gate", log_prints=False)
def gate_flow(results: str, gates: str, baseline: str | None = None, apply: bool = False) -> GateReport:
    """Gate the run at ``results`` with the gate file ``gates``; route for real only with ``apply``."""
    log = get_run_logger()
    run = gate.locate_run(results)
    spec = bind_task(run, gates)
    for note in spec.skipped:
        log.warning("gates %s: optional %s; skipped", spec.name, note)
    decisions = decide_task(run, spec)
    log.info("gates %s on run %s: %s (%d of %d shards rewritten)", spec.name, run.run_id,
             ", ".join(f"{k}={v}" for k, v in decisions.counts.items()), decisions.rewritten, decisions.shards)
    collection = collection_task(run, spec, baseline)
    for check in collection.checks:
        if check.success is False:
            log.log(40 if check.severity == "fail" else 30, "collection gate %s failed: observed %s, expected %s",
                    check.name, check.observed_text(), check.expected)
    blocked = "collection gates failed: " + ", ".join(c.name for c in collection.failed) if collection.failed else ""
    routing = route_task(run, spec, apply, blocked)
    report = GateReport(run.run_id, gates, run.gates_dir, decisions, collection, routing,
                        join(run.gates_dir, "report.json"))
    report_task(report.report_file, report)
    if collection.failed:
        first = collection.failed[0]
        raise GateFailed(
            f"{len(collection.failed)} collection gate(s) failed on run {run.run_id}: {first.name} observed "
            f"{first.observed_text()} but expected {first.expected}. Details: {report.report_file}, data docs "
            f"{collection.data_docs}. Fix: inspect the flagged images, or relax the gate in {gates}"
        )
    return report
