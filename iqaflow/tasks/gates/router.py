"""Plan and (with ``apply``) carry out a gate file's routing rules over a gated run.

Rules run in file order; each rule is planned just before it is applied, so a later rule sees
what an earlier one did (a dry run plans every rule against the untouched state). The full plan
with each step's final state is written to ``gates/routing.jsonl``.
"""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from iqaflow.schemas.gates import GateFile, RouteRule
from iqaflow.schemas.results import Col
from iqaflow.tasks.gates.gate import RunPaths, list_shards, read_columns
from iqaflow.tasks.gates.route import Item, RouteAction, RouteContext, Step, get_action, source_root
from iqaflow.tasks.io.storage import atomic_write, join, open_fs

SAMPLE = 20


@dataclass
class RoutingReport:
    applied: bool
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # "2:move" -> {state: n}
    sample: list[Step] = field(default_factory=list)  # the first steps of each rule, for people
    plan_file: str = ""
    blocked: str = ""  # why nothing was applied although asked


def load_items(run: RunPaths) -> list[Item]:
    table, _, _ = read_columns(list_shards(run.results_dir),
                               [Col.URI, Col.IMAGE_ID, Col.CONTENT_HASH, Col.GATE_STATUS, Col.GATE_REASONS])
    cols = table.to_pydict()
    return [Item(u, i, h, s or "pass", tuple(r or ())) for u, i, h, s, r in zip(
        cols[Col.URI], cols[Col.IMAGE_ID], cols[Col.CONTENT_HASH], cols[Col.GATE_STATUS], cols[Col.GATE_REASONS],
        strict=True)]


def configured_source(run: RunPaths) -> str | None:
    """The run's source as a URI prefix (from config.json), or None for manifests and missing configs."""
    fs, path = open_fs(run.config_file)
    try:
        with fs.open(path, "rb") as fh:
            source = json.loads(fh.read()).get("source")
    except FileNotFoundError:
        return None
    if not source or source.lower().endswith((".csv", ".parquet")):
        return None
    from iqaflow.tasks.io.storage import full_uri

    sfs, spath = open_fs(source)
    return full_uri(sfs, spath.rstrip("/"))


def route(run: RunPaths, spec: GateFile, apply: bool = False, blocked: str = "", threads: int = 8) -> RoutingReport:
    """Plan every routing rule; execute the planned steps only when ``apply`` and not ``blocked``."""
    report = RoutingReport(applied=apply and not blocked, blocked=blocked if apply else "")
    if not spec.routing:
        return report
    items = load_items(run)
    ctx = RouteContext(run.root, source_root([i.uri for i in items], configured_source(run)))
    all_steps: list[Step] = []
    for index, rule in enumerate(spec.routing):
        action = get_action(rule.action)
        chosen = [i for i in items if rule.selects(i.status, i.reasons)]
        steps = action.plan(index, rule, chosen, ctx)
        if report.applied:
            by_uri = {i.uri: i for i in chosen}
            todo = [s for s in steps if s.state == "todo"]
            with ThreadPoolExecutor(max_workers=threads) as pool:
                list(pool.map(_safe_apply, [action] * len(todo), todo, [rule] * len(todo), [by_uri] * len(todo)))
        key = f"{index}:{rule.action}"
        report.counts[key] = dict(Counter(s.state for s in steps))
        report.sample.extend(steps[:SAMPLE])
        all_steps.extend(steps)
    fs, path = open_fs(join(run.gates_dir, "routing.jsonl"))
    atomic_write(fs, path, "".join(json.dumps(asdict(s)) + "\n" for s in all_steps).encode())
    report.plan_file = join(run.gates_dir, "routing.jsonl")
    return report


def _safe_apply(action: RouteAction, step: Step, rule: RouteRule, items: dict[str, Item]) -> Step:
    """One failed step is recorded on the step; it never stops the others."""
    try:
        return action.apply(step, rule, items)
    except Exception as exc:
        step.state, step.note = "error", f"{type(exc).__name__}: {exc}"
        return step
