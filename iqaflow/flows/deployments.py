"""Deployments from ``infra/prefect.yaml``: served in-process (``iqaflow deploy``) or registered to a work pool.

The YAML is Prefect's own project file (so ``prefect deploy --all`` reads it too); this module reads
the ``deployments`` list with ``yaml.safe_load``, accepts only entrypoints inside ``iqaflow/flows/``
(a YAML file names a flow, it cannot make us import arbitrary code), checks parameter names against
the flow's signature, and builds Prefect ``RunnerDeployment`` objects with their schedules.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import yaml

from iqaflow.errors import ConfigError

DEFAULT_FILE = Path("infra") / "prefect.yaml"
_SCHEDULE_KEYS = {"cron", "interval", "rrule", "timezone", "active", "parameters", "slug", "day_or"}


def load_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"deployment file {str(p)!r} not found. Fix: pass --file with the path of a Prefect "
                          f"project file such as {DEFAULT_FILE}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"deployment file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("deployments"), list) or not data["deployments"]:
        raise ConfigError(f"deployment file {str(p)!r}: expected a mapping with a non-empty 'deployments' list")
    return data


def resolve_entrypoint(entrypoint: str) -> Any:
    """``iqaflow/flows/curate.py:curate_flow`` (or ``iqaflow.flows.curate:curate_flow``) -> the Prefect flow."""
    from prefect import Flow

    module_part, sep, name = entrypoint.partition(":")
    module = module_part.removesuffix(".py").replace("/", ".")
    if not sep or not module.startswith("iqaflow.flows.") or not name.isidentifier():
        raise ConfigError(f"entrypoint {entrypoint!r}: expected 'iqaflow/flows/<module>.py:<flow function>'. "
                          "Fix: point at a flow of the iqaflow package, e.g. iqaflow/flows/curate.py:curate_flow")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"entrypoint {entrypoint!r} does not resolve ({exc}). Fix: check the module and name") \
            from None
    if not isinstance(obj, Flow):
        raise ConfigError(f"entrypoint {entrypoint!r} is a {type(obj).__name__}, expected a Prefect flow")
    return obj


def _schedules(entries: list[Any], where: str) -> list[Any]:
    from prefect.schedules import Cron, Interval, RRule

    out = []
    for i, entry in enumerate(entries or []):
        if not isinstance(entry, dict) or set(entry) - _SCHEDULE_KEYS:
            raise ConfigError(f"{where}.schedules[{i}]: expected a mapping with cron, interval or rrule (and "
                              f"timezone, active, parameters); got {entry!r}")
        opts = {k: entry[k] for k in ("timezone", "active", "parameters", "slug") if k in entry}
        if "cron" in entry:
            out.append(Cron(str(entry["cron"]), day_or=entry.get("day_or", True), **opts))
        elif "interval" in entry:
            out.append(Interval(float(entry["interval"]), **opts))
        elif "rrule" in entry:
            out.append(RRule(str(entry["rrule"]), **opts))
        else:
            raise ConfigError(f"{where}.schedules[{i}]: expected one of cron, interval, rrule")
    return out


def build(spec: dict[str, Any], overrides: dict[str, Any] | None = None, cron: str | None = None,
          where: str = "deployment") -> Any:
    """One ``RunnerDeployment`` from a ``deployments`` entry; ``overrides`` replace its parameters."""
    from prefect.types.entrypoint import EntrypointType

    if not isinstance(spec, dict) or "name" not in spec or "entrypoint" not in spec:
        raise ConfigError(f"{where}: expected a mapping with at least name and entrypoint")
    flow = resolve_entrypoint(str(spec["entrypoint"]))
    params = {**(spec.get("parameters") or {}), **(overrides or {})}
    allowed = set(inspect.signature(flow.fn).parameters)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"{where} {spec['name']!r}: unknown parameter(s) {', '.join(unknown)}; expected some of "
                          f"{', '.join(sorted(allowed))}")
    schedules = _schedules([{"cron": cron}] if cron else spec.get("schedules") or [], where)
    return flow.to_deployment(
        name=str(spec["name"]), schedules=schedules, parameters=params, description=spec.get("description"),
        tags=list(spec.get("tags") or []), concurrency_limit=spec.get("concurrency_limit"),
        entrypoint_type=EntrypointType.MODULE_PATH,  # the installed package, whatever the working directory
    )


def from_file(path: str | Path, names: list[str] | None = None, overrides: dict[str, Any] | None = None,
              cron: str | None = None) -> list[tuple[Any, dict[str, Any]]]:
    """(deployment, its YAML entry) for every deployment in the file, or for the ``names`` asked for."""
    data = load_file(path)
    specs = data["deployments"]
    known = [s.get("name") for s in specs if isinstance(s, dict)]
    missing = sorted(set(names or []) - set(known))
    if missing:
        raise ConfigError(f"no deployment named {', '.join(missing)} in {path}; it has {', '.join(map(str, known))}")
    return [(build(s, overrides, cron, f"{path}: deployments[{i}]"), s) for i, s in enumerate(specs)
            if not names or s.get("name") in names]


def serve(deployments: list[Any], limit: int | None = None) -> None:
    """Run the deployments' schedules and triggered runs from this process until interrupted."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments, limit=limit, print_starting_message=True)


def register(pairs: list[tuple[Any, dict[str, Any]]], work_pool: str | None) -> list[str]:
    """Register with the API for a worker of ``work_pool`` (or each entry's ``work_pool.name``) to run."""
    ids = []
    for deployment, spec in pairs:
        settings = spec.get("work_pool") or {}
        pool = work_pool or settings.get("name")
        if not pool:
            raise ConfigError(f"deployment {spec['name']!r} has no work pool. Fix: pass --work-pool or set "
                              "work_pool.name in the file, or serve it with `iqaflow deploy` without --register")
        # Queue and job variables only mean something to a work pool (serving refuses them).
        deployment.work_queue_name = settings.get("work_queue_name")
        deployment.job_variables = settings.get("job_variables") or {}
        ids.append(str(deployment.apply(work_pool_name=pool)))
    return ids
