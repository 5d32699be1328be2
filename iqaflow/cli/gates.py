"""CLI commands for gates: ``iqaflow gate`` and ``iqaflow gates suggest``, plus the gate report printer.

Kept beside ``cli.py`` so the scoring commands stay short; ``register`` adds these to the app.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from iqaflow.cli.common import quiet_prefect

console = Console()

GATE_EXAMPLES = """
Examples:

  iqaflow gate ./qa/runs/photos-1a2b3c4d --gates examples/curation.yaml

  iqaflow gate ./qa/runs/photos-1a2b3c4d/results --gates gates.yaml --apply

  iqaflow gate s3://bucket/qa/runs/today --gates gates.yaml --baseline s3://bucket/qa/runs/last-week
"""

SUGGEST_EXAMPLES = """
Example:

  iqaflow gates suggest --labels labels.csv --results ./qa/runs/photos-1a2b3c4d --out gates.yaml

labels.csv has a column naming the image (path relative to the source, uri or image_id) and a
label column (accept/reject, good/bad or 1/0).
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_gate_report(report: dict[str, Any]) -> None:
    """The gate report (as written to gates/report.json): decisions, collection checks, routing."""
    d = report["decisions"]
    console.print(f"[bold]gates {Path(report['gate_file']).name}[/bold] on run {report['run_id']}: "
                  + "  ".join(f"{k}: {v}" for k, v in d["counts"].items())
                  + f"  ({d['rewritten']} of {d['shards']} shards updated)")
    if d["reasons"]:
        console.print("reasons: " + ", ".join(f"{k}={v}" for k, v in d["reasons"].items()))
    for note in d.get("skipped_rules") or []:
        console.print(f"[yellow]skipped optional {note}[/yellow]")
    checks = report["collection"]["checks"]
    if checks:
        table = Table(title="collection gates")
        for col in ("gate", "type", "on fail", "observed", "expected", "result"):
            table.add_column(col)
        for c in checks:
            result = {True: "[green]pass[/green]", False: "[red]FAIL[/red]" if c["severity"] == "fail" else
                      "[yellow]warn[/yellow]", None: "not checked"}[c["success"]]
            table.add_row(c["name"], c["type"], c["severity"], _fmt(c["observed"]), c["expected"],
                          result + (f" ({c['detail']})" if c.get("detail") else ""))
        console.print(table)
    routing = report["routing"]
    if routing["counts"]:
        mode = "applied" if routing["applied"] else "dry run (add --apply to act)"
        blocked = f"; blocked: {routing['blocked']}" if routing["blocked"] else ""
        console.print(f"[bold]routing[/bold] {mode}{blocked}")
        for s in routing["sample"]:
            verb = {"todo": "would " + s["action"] if not routing["applied"] else s["action"], "done": s["action"],
                    "skip": "skip " + s["action"], "refused": "REFUSED " + s["action"],
                    "error": "ERROR " + s["action"]}.get(s["state"], s["state"])
            target = f" -> {s['dest']}" if s["dest"] and s["dest"] != s["uri"] else ""
            what = f"{verb} {s['uri']}{target}" if s["uri"] else f"{verb} {s['dest']}"
            console.print(f"  {what}" + (f"  ({s['note']})" if s["note"] else ""), highlight=False)
        for key, counts in routing["counts"].items():
            console.print(f"  rule {key}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        console.print(f"  full plan: {routing['plan_file']}")
    console.print(f"[bold]validation:[/bold] {report['collection']['validation_file']}")
    console.print(f"[bold]data docs:[/bold] {report['collection']['data_docs']}")


def _print_report_file(run_root: str) -> None:
    from iqaflow.tasks.io.storage import join, open_fs

    fs, path = open_fs(join(run_root, "gates", "report.json"))
    if fs.exists(path):
        with fs.open(path, "rb") as fh:
            print_gate_report(json.loads(fh.read()))


class _HideGateFailedTraceback(logging.Filter):
    """A failed collection gate is a decision the CLI reports in one line, not a crash to trace back."""

    def filter(self, record: logging.LogRecord) -> bool:
        from iqaflow.errors import GateFailed

        return not (record.exc_info and isinstance(record.exc_info[1], GateFailed))


def hide_gate_tracebacks() -> None:
    """On console handlers only: the Prefect API still receives the full log."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not any(
            isinstance(f, _HideGateFailedTraceback) for f in handler.filters
        ):
            handler.addFilter(_HideGateFailedTraceback())


@contextmanager
def gate_report_after(config: Any) -> Iterator[None]:
    """Around ``iqaflow score``: print the gate report when the run had gates, also when a gate failed."""
    from iqaflow.errors import GateFailed
    from iqaflow.tasks.io.layout import RunLayout

    if config.gates:
        import iqaflow.flows.score  # noqa: F401 - Prefect sets up its console logging on import

        hide_gate_tracebacks()
    try:
        yield
    except GateFailed:
        _print_report_file(RunLayout.for_config(config).root)
        raise
    if config.gates:
        _print_report_file(RunLayout.for_config(config).root)


def register(app: typer.Typer) -> None:
    """Add ``gate`` and ``gates suggest`` to ``app``."""

    @app.command(epilog=GATE_EXAMPLES)
    def gate(
        results: Annotated[str, typer.Argument(help="Run folder (OUT/runs/RUN_ID) or its results folder")],
        gates: Annotated[str, typer.Option("--gates", help="Gate file (YAML); see examples/")],
        apply: Annotated[bool, typer.Option("--apply", help="Carry out routing (default: dry run)")] = False,
        baseline: Annotated[str | None, typer.Option(help="Baseline run for drift gates")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs")] = False,
    ) -> None:
        """Decide pass/flag/reject per image, check collection gates (GX data docs), route images."""
        quiet_prefect(verbose)
        from iqaflow.models.gate_binding import prepare
        from iqaflow.tasks.gates.gate import locate_run, results_schema_of

        run = locate_run(results)
        prepare(gates, results_schema_of(run))  # a bad gate file fails here, in one line, before Prefect starts
        from iqaflow.errors import GateFailed
        from iqaflow.flows.gate import gate_flow

        hide_gate_tracebacks()
        try:
            gate_flow(results, gates, baseline, apply)
        except GateFailed:
            _print_report_file(run.root)
            raise
        _print_report_file(run.root)

    gates_app = typer.Typer(help="Work with gate files.", no_args_is_help=True)
    app.add_typer(gates_app, name="gates")

    @gates_app.command("suggest", epilog=SUGGEST_EXAMPLES)
    def suggest(
        labels: Annotated[str, typer.Option(help="CSV of human labels: path (or uri/image_id) and label")],
        results: Annotated[str, typer.Option(help="Scored run folder (OUT/runs/RUN_ID) or its results folder")],
        out: Annotated[Path, typer.Option(help="Gate file to write")] = Path("gates.yaml"),
        target_recall: Annotated[float | None, typer.Option(
            help="Share of the rejects the rule must catch (default 0.8 unless --target-precision)")] = None,
        target_precision: Annotated[float | None, typer.Option(
            help="Share of the rule's rejections that must be labelled reject")] = None,
        min_auc: Annotated[float, typer.Option(help="Leave out scorers with a lower ROC AUC")] = 0.6,
    ) -> None:
        """Propose one rule meeting a target recall or precision of rejects, from accept/reject labels.

        Scores are combined jointly (logistic regression, each scorer in its declared direction) or one
        column is used alone, whichever does better held out; precision and recall are held out by k-fold
        cross-validation."""
        from iqaflow.tasks.gates.gate import locate_run
        from iqaflow.tasks.gates.suggest import suggest as run_suggest

        result = run_suggest(locate_run(results), labels, min_auc, target_recall, target_precision)
        held = f"held out by {result.folds}-fold CV" if result.folds >= 2 else "too few labels for CV"
        table = Table(title=f"suggested gate: target {result.target} ({held})")
        for col in ("rule", "columns", "AUC", "held-out precision", "held-out recall", "fitted P/R", "kept"):
            table.add_column(col)
        for c in result.candidates:
            h, f = c.held_out, c.fitted
            table.add_row(c.label, ", ".join(c.rule.columns), f"{c.auc:.3f}",
                          "n/a" if h is None else f"{h.precision:.2f}", "n/a" if h is None else f"{h.recall:.2f}",
                          f"{f.precision:.2f}/{f.recall:.2f}", "yes" if c.chosen else "")
        console.print(table)
        for note in result.notes:
            console.print(f"  {note}", highlight=False)
        kept = next(c for c in result.candidates if c.chosen)
        console.print(f"[bold]rule:[/bold] {kept.rule.expression()}", highlight=False)
        out.write_text(result.text)
        console.print(f"[bold]gate file:[/bold] {out}")
